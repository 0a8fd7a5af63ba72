"""REDIS_WAIT_REPLICAS=k: a script's write counts as done only once k replicas confirm it.

Redis replicates asynchronously: a master that answers a write and dies before its replica
got it loses that write when the replica takes over. ``WAIT k timeout`` blocks until k
replicas have acknowledged every write made so far *on the same connection*, or the time-out
passes, and answers how many did. So the script and its WAIT go out together in one
non-transactional pipeline, which redis-py sends on one connection:

- a single Redis: ``[EVAL script, WAIT k t]`` on one pooled connection;
- a Redis Cluster: the cluster pipeline groups its commands by node and sends each node's
  group on one connection; the WAIT (keyless, so unroutable by itself) is pinned to the node
  that owns the script's first key (``target_nodes=get_node_from_key(key)``), which is the
  node the script runs on. Every script of the queue touches one slot.

The script and its WAIT go out through ``owner.py``, which on a cluster sends both to the node
that owns the script's slot and follows no redirection (a script followed elsewhere would run
elsewhere than its WAIT, which would then count no write of ours).

k = 0 (the default) sends no WAIT: today's single script call, unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import owner
from .scripts import ScriptCall, Scripts, source


@dataclass(frozen=True)
class Durability:
    """How many replicas must confirm a write (REDIS_WAIT_REPLICAS) within how long
    (REDIS_WAIT_TIMEOUT_MS); ``replicas=0``: no WAIT at all."""

    replicas: int = 0
    timeout_ms: int = 500

    @property
    def on(self) -> bool:
        return self.replicas > 0


class NotReplicated(Exception):
    """The write ran on the master, but fewer than the wanted replicas confirmed it in time:
    it may or may not survive a failover of that master."""

    def __init__(self, confirmed: int, wanted: int, timeout_ms: int, reply=None) -> None:
        super().__init__(f"{confirmed} of {wanted} replicas confirmed the write within {timeout_ms} ms")
        self.confirmed, self.wanted, self.timeout_ms, self.reply = confirmed, wanted, timeout_ms, reply


def _checked(replies: list, d: Durability):
    reply, confirmed = replies
    if int(confirmed) < d.replicas:
        raise NotReplicated(int(confirmed), d.replicas, d.timeout_ms, reply)
    return reply


def run_durable(client, scripts: Scripts, call: ScriptCall, d: Durability):
    """Run ``call`` on a synchronous client, then WAIT on its connection; ``NotReplicated``
    (carrying the script's reply) when too few replicas confirm it."""
    if not d.on:
        return scripts.run(call)
    wait = (d.replicas, d.timeout_ms)
    return _checked(owner.run(client, source(call.script), call.keys, call.args, wait), d)


async def run_durable_async(client, scripts: Scripts, call: ScriptCall, d: Durability):
    """``run_durable`` for a redis.asyncio client (single or cluster)."""
    if not d.on:
        return await scripts.run(call)
    wait = (d.replicas, d.timeout_ms)
    return _checked(await owner.run_async(client, source(call.script), call.keys, call.args, wait), d)
