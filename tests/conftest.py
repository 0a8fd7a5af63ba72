"""Fixtures: a real Redis server, a tiny real open_clip model, the API and workers.

Each test gets its own key namespace (hash tag), so tests never see each other's keys and
nothing needs flushing. REDIS_URL, when set, picks an existing server instead.
"""
from __future__ import annotations

import csv
import os
import shutil
import sys
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
# The tests' own images, in the repository (provenance and licences: tests/data/README.md).
CORPUS = ROOT / "tests" / "data" / "corpus"
# A bigger corpus that may lie beside a checkout; when present, its files add extra cases.
EXTRA_CORPUS = Path(os.environ.get("CLIPQ_EXTRA_CORPUS", ROOT.parent / "shared" / "corpus"))

from scripts.lib.procs import free_port  # noqa: E402  (the repository root is on sys.path: pyproject.toml)
from scripts.lib.redis_server import LocalRedis  # noqa: E402


def _manifest(folder: Path) -> list[dict]:
    with open(folder / "manifest.tsv") as f:
        return [row | {"path": folder / row["file"]} for row in csv.DictReader(f, delimiter="\t")]


def corpus_rows(extra: bool = False) -> list[dict]:
    """The manifest's rows (``file``, ``expect``, ``note`` and the absolute ``path``).

    With ``extra``, rows of ``EXTRA_CORPUS`` whose file the repository's corpus lacks follow.
    """
    rows = _manifest(CORPUS)
    if extra and (EXTRA_CORPUS / "manifest.tsv").is_file():
        known = {r["file"] for r in rows}
        rows += [r for r in _manifest(EXTRA_CORPUS) if r["file"] not in known]
    return rows


def corpus_files(expect: str) -> list[Path]:
    return [r["path"] for r in corpus_rows() if r["expect"] == expect]


def require_tool(name: str, how: str) -> str:
    """The path of a system tool a test needs. Where it is missing the test is skipped with
    ``how`` to get it, except under CLIPQ_REQUIRE_TOOLS=1 (``.ci/run``, which installs every
    tool): there a missing tool fails the test, so no test is silently skipped in CI."""
    beside = Path(sys.executable).parent / name  # a tool a PyPI package put into the venv
    found = str(beside) if beside.exists() else shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed: {how}"
    if os.environ.get("CLIPQ_REQUIRE_TOOLS") == "1":
        pytest.fail(message + " (CLIPQ_REQUIRE_TOOLS=1: CI must install it)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = LocalRedis(tmp_path_factory.mktemp("redis"), aof=False).start()
    yield server.url
    server.stop()


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def r(redis_url) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def encoder():
    from models.clip import load_encoder

    return load_encoder("clipq-tiny", "none", "cpu", seed=0)


@pytest.fixture
def settings_kw(redis_url, namespace, tmp_path) -> dict:
    return {"redis_url": redis_url, "queue_namespace": namespace}


@pytest.fixture
def api_settings(settings_kw):
    from api.settings import ApiSettings

    return ApiSettings(**settings_kw, allow_anonymous=True)


@pytest.fixture
def make_client(settings_kw):
    """Build an API TestClient with extra settings; closed at the end of the test."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from api.settings import ApiSettings

    clients = []

    def make(**overrides):
        client = TestClient(create_app(ApiSettings(**settings_kw | {"allow_anonymous": True} | overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@contextmanager
def served(app):
    """Serve ``app`` with uvicorn in a thread on a free port; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def serve_api(settings_kw):
    """Serve the API over real HTTP for the test's duration; ``serve(**settings)`` -> base URL."""
    from api.main import create_app
    from api.settings import ApiSettings

    with ExitStack() as stack:
        yield lambda **overrides: stack.enter_context(
            served(create_app(ApiSettings(**settings_kw | {"allow_anonymous": True} | overrides))))


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def worker_settings(settings_kw, tmp_path):
    from batcher.settings import WorkerSettings

    def make(**overrides):
        base = dict(settings_kw, clip_model="clipq-tiny", clip_pretrained="none", clip_device="cpu",
                    qdrant_path=str(tmp_path / "qdrant"), worker_metrics_port=0, worker_batch_size=16,
                    worker_max_wait_ms=20, worker_poll_interval=0.2, worker_decode_threads=2,
                    retry_backoff_base_ms=50, retry_backoff_max_ms=200, worker_id="w-" + uuid.uuid4().hex[:6])
        return WorkerSettings(**base | overrides)

    return make


@pytest.fixture
def start_worker(worker_settings, encoder):
    """Start a WorkerApp (real Redis, real embedded Qdrant, tiny real model)."""
    from batcher.app import WorkerApp

    def start(encoder_override=None, **overrides):
        s = worker_settings(**overrides)
        return WorkerApp.start(s, registry=CollectorRegistry(), encoder=encoder_override or encoder)

    return start


@pytest.fixture
def run_burst(start_worker):
    """Run a worker in burst mode until the queue is drained; returns (app, totals)."""

    def run(**overrides):
        app = start_worker(**overrides)
        totals = app.run(burst=True)
        return app, totals

    return run


@pytest.fixture
def serve_worker(start_worker):
    """Run a serving worker in a thread for the test's duration."""
    started = []

    def serve(**overrides):
        """Start it and wait until its first heartbeat is written on every shard (QUEUE_SHARDS):
        then the API counts it."""
        from batcher.queue.connect import sync_client
        from batcher.queue.keys import shard_keys

        app = start_worker(**overrides)
        t = threading.Thread(target=app.run, daemon=True)
        t.start()
        started.append((app, t))
        s = app.settings
        beats = [k.heartbeat(s.worker_id) for k in shard_keys(s.queue_namespace, s.queue_shards)]
        client = sync_client(s.redis_url, s.redis_cluster)
        try:
            deadline = time.monotonic() + 30
            while sum(client.exists(b) for b in beats) < len(beats):  # one key a call: a cluster's slots differ
                assert t.is_alive() and time.monotonic() < deadline, "the worker wrote no heartbeat"
                time.sleep(0.02)
        finally:
            client.close()
        return app

    yield serve
    for app, t in started:
        app.stop.set()
        t.join(30)


def upload(client, path: Path | None, product_id: str, data: bytes | None = None, **fields):
    data = path.read_bytes() if data is None else data
    files = {"image_file": (path.name if path else "x.jpg", data, "application/octet-stream")}
    form = {"product_id": product_id, "name": fields.pop("name", f"Product {product_id}"), **fields}
    return client.post("/api/v1/index-product-with-image", data=form, files=files)


class CountingEncoder:
    """The real encoder, counting forward passes and their sizes; optionally failing big batches."""

    def __init__(self, inner, oom_above: int | None = None) -> None:
        self.inner = inner
        self.image_batches: list[int] = []
        self.oom_above = oom_above

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_images(self, images):
        from models.clip import OutOfMemory

        if self.oom_above is not None and len(images) > self.oom_above:
            raise OutOfMemory(f"injected OOM for a batch of {len(images)}")
        self.image_batches.append(len(images))
        return self.inner.embed_images(images)


def count_calls(obj, method: str) -> list:
    """Wrap ``obj.method`` to record the first positional argument of every call."""
    calls = []
    original = getattr(obj, method)

    def wrapper(*args, **kwargs):
        calls.append(args[0] if args else None)
        return original(*args, **kwargs)

    setattr(obj, method, wrapper)
    return calls


def job_ids_by_status(client, job_ids) -> dict[str, str]:
    return {j: client.get(f"/api/v1/queue/status/{j}").json()["status"] for j in job_ids}


def stored_points(settings, product_ids) -> dict[str, tuple[dict, np.ndarray]]:
    """Products' stored payloads and vectors, read from the worker's store once it has closed it
    (an embedded folder has one owner at a time)."""
    from batcher.store import open_store, point_id

    store = open_store(settings.store, None)
    try:
        records = store.shard.retrieve([point_id(p) for p in product_ids], True, [""])  # the CLIP vector alone
        return {r.payload["product_id"]: (r.payload, np.asarray(r.vector, np.float32)) for r in records}
    finally:
        store.close()


def stored_count(settings) -> int:
    from batcher.store import open_store

    store = open_store(settings.store, None)
    try:
        return store.count()
    finally:
        store.close()


def open_engine(engine: str, path: Path, dim: int, embedder: str = ""):
    """A store of either engine in ``path``: Qdrant Edge, or the server store's code path on
    qdrant-client's in-process mode (no Qdrant server can run here)."""
    from batcher.store import StoreConfig, open_store

    if engine == "edge":
        return open_store(StoreConfig(path=str(path)), dim, "test-model", embedder)
    from qdrant_client import QdrantClient

    from batcher.store.server import ServerStore

    return ServerStore.open(StoreConfig(url="in-process"), dim, embedder, client=QdrantClient(path=str(path)))
