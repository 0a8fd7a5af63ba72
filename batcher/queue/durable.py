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

While a slot migrates (a resharding), the script may be answered ASK (its keys have moved on)
or TRYAGAIN (its keys are split between the two nodes), and once it has moved, MOVED. Followed
by the client, the script would run elsewhere than its WAIT, which would then count no write of
ours and could answer k too early. So the cluster pipeline follows no redirection here: the
error comes back as ``SlotMoving`` (a ConnectionError: the API answers 503 with Retry-After, the
worker retries with backoff), the slot map is refreshed, and the next call goes to the slot's
new node. A failover needs none of this: the client's topology refresh follows the new master
for the script and its WAIT alike.

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


class SlotMoving(redis.ConnectionError):
    """The script's slot is being migrated (ASK, TRYAGAIN) or has moved (MOVED): retry shortly."""


REDIRECTS = (redis.exceptions.AskError, redis.exceptions.TryAgainError)  # MovedError is an AskError


def _execute(pipe, cluster: bool) -> list:
    """A single Redis: ``execute()``. A cluster: the same, following no MOVED or ASK, so that the
    script and its WAIT stay on one connection of one node."""
    if not cluster:
        return pipe.execute()
    try:
        # the queued commands live on the pipeline's execution strategy (redis-py 6+)
        return pipe.send_cluster_commands(pipe._execution_strategy.command_queue, allow_redirections=False)
    except REDIRECTS as exc:
        raise SlotMoving(f"the slot is moving between nodes ({type(exc).__name__}: {exc}); "
                         "cluster map refreshed") from exc
    finally:
        pipe.reset()


async def _execute_async(pipe, cluster: bool) -> list:
    if not cluster:
        return await pipe.execute()
    try:
        return await pipe.execute(allow_redirections=False)
    except REDIRECTS as exc:
        raise SlotMoving(f"the slot is moving between nodes ({type(exc).__name__}: {exc}); "
                         "cluster map refreshed") from exc


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
        return _checked(_execute(pipe, _is_cluster(client)), d)
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
        return _checked(await _execute_async(pipe, _is_cluster(client)), d)
    except STALE_MAP:
        if _is_cluster(client):
            try:
                await client.nodes_manager.initialize()
            except Exception:  # mid-failover a refresh may fail too: the next call tries again
                pass
        raise
