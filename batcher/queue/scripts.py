"""Load the Lua scripts of the queue protocol and bind them to a Redis client.

The ``.lua`` files beside this module are the source of truth for every state change of a
job, so that a status and its counters always move together. ``lua/prelude.lua`` (Redis
time, the final failure of a job) is prepended to each. Calls are built in ``calls.py``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from . import owner

NAMES = ("enqueue", "claim", "ack", "promote", "reap", "retry", "sample", "expire_images", "tombstone", "ask",
         "started", "deliveries")


@cache
def source(name: str) -> str:
    lua = resources.files("batcher.queue").joinpath("lua")
    return lua.joinpath("prelude.lua").read_text() + "\n" + lua.joinpath(f"{name}.lua").read_text()


@dataclass(frozen=True)
class ScriptCall:
    """One call of a script: its name, and its KEYS and ARGV in the order the script reads them."""

    script: str
    keys: list[str]
    args: list[Any]


class Scripts:
    """Registered scripts for one client (sync or asyncio): ``scripts.run(calls.ack(...))``.

    On a Redis Cluster a script runs only on the node that owns its slot, following no
    redirection (``owner.py``): a resharding must not split it across two nodes."""

    def __init__(self, client) -> None:
        self._client = client
        self._cluster = owner.is_cluster(client)
        self._async = inspect.iscoroutinefunction(getattr(client, "execute_command", None))
        self._registered = {name: client.register_script(source(name)) for name in NAMES}

    def run(self, call: ScriptCall, client=None):
        """Run ``call`` (on ``client``, a pipeline say, if given); a coroutine for an asyncio client.
        In a pipeline on a cluster, only a script whose every key is declared is safe: Redis
        checks those before it runs, and follows ASK only when they have all moved (retry is no
        longer one: it builds its tenant's keys, so ``JobQueue.retry_each`` pins each call)."""
        if client is None and self._cluster:
            return self._pinned(call)
        return self._registered[call.script](keys=call.keys, args=call.args, client=client)

    def _pinned(self, call: ScriptCall):
        if self._async:
            async def run():
                return (await owner.run_async(self._client, source(call.script), call.keys, call.args))[0]
            return run()
        return owner.run(self._client, source(call.script), call.keys, call.args)[0]
