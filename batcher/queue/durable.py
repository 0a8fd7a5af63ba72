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

A MOVED or ASK while a slot migrates could send the script elsewhere than its WAIT; that WAIT
then counts no write of ours and may answer k too early. Only a resharding can do that, not a
failover (the client's topology refresh follows the new master for both).

k = 0 (the default) sends no WAIT: today's single script call, unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.exceptions import RedisClusterException

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


class NoRoute(redis.ConnectionError):
    """No node serves the script's slot in the client's map (its master died; the replica is not
    yet known to serve): a Redis error like any other (the API answers 503). The map is
    refreshed on the way, so a later call finds the new master."""


def _node_of(client, call: ScriptCall):
    """On a cluster, the node that owns the script's slot: the WAIT must go to it (None on a
    single Redis)."""
    if not hasattr(client, "get_node_from_key") or not call.keys:
        return None
    try:
        return client.get_node_from_key(call.keys[0])
    except RedisClusterException as exc:  # SlotNotCoveredError
        raise NoRoute(f"no node serves {call.keys[0]!r} ({exc}); cluster map refreshed") from exc


def _wait_target(node) -> dict:
    return {} if node is None else {"target_nodes": node}


def _pipeline(client, call: ScriptCall):
    """``[EVAL script]`` in a non-transactional pipeline. EVAL, not EVALSHA: a cluster pipeline
    does not load a script a node lacks (a promoted replica, say), so it would fail NOSCRIPT;
    the server caches the compiled script all the same, and the text is a few KB."""
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("EVAL", source(call.script), len(call.keys), *call.keys, *call.args)  # sync cluster: no .eval
    return pipe


def _checked(replies: list, d: Durability):
    reply, confirmed = replies
    if int(confirmed) < d.replicas:
        raise NotReplicated(int(confirmed), d.replicas, d.timeout_ms, reply)
    return reply


# Errors after which a cluster client's map of who serves which slot may be stale (a master
# died): a pipeline pinned to a node does not refresh it, so these refresh it by hand.
STALE_MAP = (redis.ConnectionError, redis.TimeoutError, RedisClusterException)


def _is_cluster(client) -> bool:
    return hasattr(client, "nodes_manager")


def run_durable(client, scripts: Scripts, call: ScriptCall, d: Durability):
    """Run ``call`` on a synchronous client, then WAIT on its connection; ``NotReplicated``
    (carrying the script's reply) when too few replicas confirm it."""
    if not d.on:
        return scripts.run(call)
    try:
        pipe = _pipeline(client, call)
        pipe.execute_command("WAIT", d.replicas, d.timeout_ms, **_wait_target(_node_of(client, call)))
        return _checked(pipe.execute(), d)
    except STALE_MAP:
        if _is_cluster(client):
            try:
                client.nodes_manager.initialize()
            except Exception:  # mid-failover a refresh may fail too: the next call tries again
                pass
        raise


async def run_durable_async(client, scripts: Scripts, call: ScriptCall, d: Durability):
    """``run_durable`` for a redis.asyncio client (single or cluster)."""
    if not d.on:
        return await scripts.run(call)
    try:
        if _is_cluster(client):
            await client.initialize()  # a no-op once done: the asyncio client maps the slots lazily
        pipe = _pipeline(client, call)
        pipe.execute_command("WAIT", d.replicas, d.timeout_ms, **_wait_target(_node_of(client, call)))
        return _checked(await pipe.execute(), d)
    except STALE_MAP:
        if _is_cluster(client):
            try:
                await client.nodes_manager.initialize()
            except Exception:  # mid-failover a refresh may fail too: the next call tries again
                pass
        raise
