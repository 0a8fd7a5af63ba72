"""Make ``scripts/`` importable from tests (``local_redis``)."""
from local_redis import LocalRedis, free_port  # noqa: F401  (conftest puts scripts/ on sys.path)
