"""Load the Lua scripts of the queue protocol and bind them to a Redis client.

The ``.lua`` files beside this module are the source of truth for every state change of a
job, so that a status and its counters always move together.
"""
from __future__ import annotations

from functools import cache
from importlib import resources

NAMES = ("enqueue", "claim", "ack", "promote", "reap", "retry", "sample")


@cache
def source(name: str) -> str:
    return resources.files("batcher.queue").joinpath("lua", f"{name}.lua").read_text()


class Scripts:
    """Registered scripts for one client (sync or asyncio): ``scripts.ack(keys=..., args=...)``."""

    def __init__(self, client) -> None:
        for name in NAMES:
            setattr(self, name, client.register_script(source(name)))
