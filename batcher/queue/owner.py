"""On a Redis Cluster, a queue script runs on the node that owns its slot, and nowhere else.

While a slot migrates (a resharding), its keys are split between the source and the target.
Redis checks a script's *declared* keys before running it: split, it answers TRYAGAIN; all
gone to the target, ASK. It cannot check the keys a script builds itself from the ids it reads
(the job and image keys in ack, claim, started, reap and the byte budget's drop loop):

- on the source, such a key already moved stops the script with "Attempted to access a non
  local key", keeping every write made before. So each script reads every key it will touch
  before its first write (``here`` in lua/prelude.lua): stopped there, it has written nothing;
- on the target, after ASKING, a key not yet moved reads as missing: a claimed job would look
  gone and leave the processing list. So a script is never sent after an ASK.

A script therefore goes out as one EVAL in a non-transactional pipeline that follows no
redirection (EVAL, not EVALSHA: a cluster pipeline does not load a script a node lacks, a
promoted replica say; the server caches the compiled script all the same). ASK, TRYAGAIN and
the non-local-key error come back as ``SlotMoving``, a ConnectionError: the API answers 503
with Retry-After, a worker retries with backoff. MOVED (the slot has moved on) refreshes the
client's map and the script goes once more, to the slot's new owner. An optional ``WAIT``
rides in the same pipeline, pinned to the same node, so it counts the script's writes
(``durable.py``). A single Redis has no slots: the pipeline is simply executed.
"""
from __future__ import annotations

import redis
from redis.exceptions import RedisClusterException

WAIT = tuple[int, int]  # (replicas, timeout_ms)


class SlotMoving(redis.ConnectionError):
    """The script's slot is being migrated (ASK, TRYAGAIN, a key already moved): retry shortly."""


class NoRoute(redis.ConnectionError):
    """No node serves the script's slot in the client's map (its master died; the replica is not
    yet known to serve): a Redis error like any other (the API answers 503). The map is
    refreshed on the way, so a later call finds the new master."""


class _Moved(Exception):
    """MOVED: the migration is over; refresh the map and send the script again."""


# Errors after which a cluster client's map of who serves which slot may be stale (a master
# died): a pipeline pinned to a node does not refresh it, so these refresh it by hand.
STALE_MAP = (redis.ConnectionError, redis.TimeoutError, RedisClusterException)
NON_LOCAL = "non local key"  # Redis's words for a script's key that has moved (no error class)


def is_cluster(client) -> bool:
    return hasattr(client, "nodes_manager")


def _classified(exc: Exception) -> Exception:
    if isinstance(exc, redis.exceptions.MovedError):  # a subclass of AskError: test it first
        return _Moved(str(exc))
    if isinstance(exc, (redis.exceptions.AskError, redis.exceptions.TryAgainError)) or (
            isinstance(exc, redis.ResponseError) and NON_LOCAL in str(exc)):
        return SlotMoving(f"the slot is moving between nodes ({type(exc).__name__}: {exc})")
    return exc


def _pipeline(client, text: str, keys: list, args: list, wait: WAIT | None):
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("EVAL", text, len(keys), *keys, *args)  # the sync cluster client has no .eval
    if wait:
        pipe.execute_command("WAIT", *wait, **_target(client, keys))
    return pipe


def _target(client, keys: list) -> dict:
    """The WAIT (keyless, so unroutable by itself) goes to the node that owns the script's slot."""
    if not is_cluster(client) or not keys:
        return {}
    try:
        return {"target_nodes": client.get_node_from_key(keys[0])}
    except RedisClusterException as exc:  # SlotNotCoveredError
        raise NoRoute(f"no node serves {keys[0]!r} ({exc})") from exc


def _execute(pipe, cluster: bool) -> list:
    if not cluster:
        return pipe.execute()
    try:
        # the queued commands live on the pipeline's execution strategy (redis-py 6+)
        return pipe.send_cluster_commands(pipe._execution_strategy.command_queue, allow_redirections=False)
    except redis.RedisError as exc:
        raise _classified(exc) from exc
    finally:
        pipe.reset()


async def _execute_async(pipe, cluster: bool) -> list:
    if not cluster:
        return await pipe.execute()
    try:
        return await pipe.execute(allow_redirections=False)
    except redis.RedisError as exc:
        raise _classified(exc) from exc


def run(client, text: str, keys: list, args: list, wait: WAIT | None = None) -> list:
    """Run one script (its source ``text``) on a synchronous client, then ``WAIT`` if asked, on
    the node that owns its slot; the replies, ``[script's, wait's]``."""
    cluster = is_cluster(client)
    for last in (False, True):
        try:
            return _execute(_pipeline(client, text, keys, args, wait), cluster)
        except _Moved as exc:
            _refresh(client)
            if last:
                raise SlotMoving(f"the slot moved twice in a row ({exc})") from None
        except STALE_MAP:
            if cluster:
                _refresh(client)
            raise
    raise AssertionError("unreachable")


async def run_async(client, text: str, keys: list, args: list, wait: WAIT | None = None) -> list:
    """``run`` for a redis.asyncio client (single or cluster)."""
    cluster = is_cluster(client)
    for last in (False, True):
        try:
            if cluster:
                await client.initialize()  # a no-op once done: the asyncio client maps the slots lazily
            return await _execute_async(_pipeline(client, text, keys, args, wait), cluster)
        except _Moved as exc:
            await _refresh_async(client)
            if last:
                raise SlotMoving(f"the slot moved twice in a row ({exc})") from None
        except STALE_MAP:
            if cluster:
                await _refresh_async(client)
            raise
    raise AssertionError("unreachable")


def _refresh(client) -> None:
    try:
        client.nodes_manager.initialize()
    except Exception:  # mid-failover a refresh may fail too: the next call tries again
        pass


async def _refresh_async(client) -> None:
    try:
        await client.nodes_manager.initialize()
    except Exception:  # mid-failover a refresh may fail too: the next call tries again
        pass
