"""The API's one Redis gateway (redis.asyncio): it makes the clients and owns them; enqueue,
read, retry, ask workers, and every read of the dashboard and the probes. Nothing else in api/
touches a Redis client (tests/test_layout.py)."""
from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException

from api.reasons import short_reason
from api.settings import ApiSettings
from api.tenants import Caller
from batcher.queue import calls, history
from batcher.queue.config import DAY
from batcher.queue.connect import async_client
from batcher.queue.durable import Durability, NotReplicated, run_durable_async
from batcher.queue.jobs import DEFAULT_TENANT, STATUSES, TERMINAL, JobSpec, new_job_id, public_status
from batcher.queue.keys import Keys, job_shard, product_key, product_shard, shard_keys
from batcher.queue.lane import REPLY_GRACE_S, Lane
from batcher.queue.messages import QueryReply, QueryRequest
from batcher.queue.owner import is_cluster
from batcher.queue.scripts import Scripts

Unavailable = redis.RedisError  # what a call raises when Redis fails: the API answers 503
ClusterUnavailable = RedisClusterException  # the cluster client's own (no node serves a slot): 503 too
EVERY = Caller(None, admin=True)  # the reads' default: every tenant's jobs
SCOPED_SCAN = 10_000  # a tenant's failed lists look among the newest this many failures of all
# NotReplicated: an upload's WAIT (REDIS_WAIT_REPLICAS) fell short: the API answers 503 too


class QueueFull(Exception):
    def __init__(self, depth: int) -> None:
        super().__init__(f"queue holds {depth} jobs")
        self.depth = depth


class OverBudget(Exception):
    """The image does not fit in the byte budget (MAX_QUEUE_BYTES), even without failed images."""

    def __init__(self, held: int, size: int, max_bytes: int) -> None:
        super().__init__(f"the queue holds {held} image bytes; {size} more would pass {max_bytes}")
        self.held, self.size, self.max_bytes = held, size, max_bytes


class TenantQuotaFull(Exception):
    """The tenant's own quota (``calls.Quota``) is reached: 429 ``tenant_queue_full`` (pending
    jobs) or ``tenant_queue_bytes_full`` (image bytes), naming the tenant and the quota."""

    def __init__(self, tenant: str, code: str, held: int, limit: int) -> None:
        what = "jobs queued" if code == "tenant_queue_full" else "bytes of images"
        super().__init__(f"tenant {tenant!r} has {held} {what} in this shard, at its quota of {limit}")
        self.tenant, self.code, self.held, self.limit = tenant, code, held, limit


class LaneFull(Exception):
    """The query lane already holds its bound of requests: the API answers 503."""

    def __init__(self, pending: int) -> None:
        super().__init__(f"query lane holds {pending} requests")
        self.pending = pending


class Connections:
    """The API's Redis clients, made from its settings and closed together, with the probe and
    the pub/sub subscription, which need no queue.

    Short calls share ``REDIS_MAX_CONNECTIONS``. A search holds a connection of its own while
    it waits for its answer (BLPOP): up to ``MAX_PENDING_QUERIES`` of them, the lane's own bound
    on searches not yet taken by a worker; one beyond them (the lane full of searches the workers
    are answering) waits for a free connection, within its ``SEARCH_TIMEOUT`` (then 504). The
    listener blocks for as long as no job finishes: a client with no read time-out.

    A pooled connection opened before a Redis restart fails once: retry such a call once,
    at once (every write the API makes is idempotent: enqueue, retry, query)."""

    def __init__(self, fast: aioredis.Redis, blocking: aioredis.Redis, listener: aioredis.Redis) -> None:
        self.fast = fast          # short socket timeout: fail fast when Redis is down
        self.blocking = blocking  # for waits on worker replies
        self.listener = listener  # for the announcements of finished jobs

    @classmethod
    def open(cls, settings: ApiSettings) -> "Connections":
        t = settings.redis_timeout
        options = {"socket_connect_timeout": t,
                   "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))}
        fast = _bounded_client(settings, settings.redis_max_connections, t, socket_timeout=t, **options)
        blocking = _bounded_client(settings, settings.max_pending_queries, None,  # JobQueue.ask bounds each wait
                                   socket_timeout=settings.search_timeout + t, **options)
        return cls(fast, blocking, async_client(settings.redis_url, settings.redis_cluster, socket_connect_timeout=t))

    async def aclose(self) -> None:
        for client in (self.fast, self.blocking, self.listener):
            await client.aclose()

    async def ping(self, timeout_s: float) -> bool:
        try:
            return bool(await asyncio.wait_for(self.fast.ping(), timeout_s))
        except Exception:
            return False

    @property
    def can_subscribe(self) -> bool:
        return hasattr(self.listener, "pubsub")  # redis-py's asyncio cluster client has none

    async def announcements(self, channel: str) -> AsyncIterator[list[str]]:
        """The ids whose outcome a worker has just recorded, announced on ``channel``
        (``Keys.finished``): ``[]`` once subscribed, then one list per announcement. Raises
        when Redis fails."""
        # not ``async with``: on cancel, its clean-up would talk to Redis; ``aclose`` closes
        # the listener's client, and with it this connection
        pubsub = self.listener.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            yield []
            async for message in pubsub.listen():
                data = message["data"]
                yield (data.decode() if isinstance(data, bytes) else data).split()
        except asyncio.CancelledError:
            raise
        except Exception:
            await pubsub.aclose()
            raise


CLUSTER_POOL = 100  # redis-py's default pool per cluster node


def _bounded_client(settings: ApiSettings, size: int, wait_s: float | None, **options) -> aioredis.Redis:
    """Up to ``size`` connections; a call beyond them waits for a free one, at most ``wait_s``
    (None: as long as the caller's own time-out lets it).
    redis-py's default pool (100) fails such a call at once ("Too many connections", a 503):
    1,000 status long-polls re-reading together did that, and so did 101 waiting searches."""
    if settings.redis_cluster:
        # The cluster client's pool per node cannot queue: a call beyond it fails at once
        # (MaxConnectionsError, a 503), at redis-py's default of 100 too: 150 waiting searches
        # got 50 503s. So at least MAX_PENDING_QUERIES, for short calls too (each search the lane
        # admits makes its own: under load 150 searches' asks overflowed 100), never below that
        # default (REDIS_MAX_CONNECTIONS cannot make them wait here).
        return async_client(settings.redis_url, True,
                            max_connections=max(size, settings.max_pending_queries, CLUSTER_POOL), **options)
    pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, max_connections=size, timeout=wait_s, **options)
    client = aioredis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # aclose() closes the pool too, as from_url's clients do
    return client


class ShardReads:
    """What the API reads from every shard (QUEUE_SHARDS), added up: one shard is today's queue.
    A non-transactional pipeline may span shards: the cluster client splits it by node."""

    def __init__(self, connections: Connections, namespace: str, shards: int = 1) -> None:
        self.connections = connections
        self.redis = connections.fast
        self.keys = Keys(namespace)  # the shared keys (query lane, ``finished``): shard 0's with one shard
        self.shards = shard_keys(namespace, shards)

    def shard_of_job(self, job_id: str) -> Keys:
        return self.shards[job_shard(job_id, len(self.shards))]

    async def now_ms(self) -> int:
        """Redis time, in ms: the clock every score and deadline of the queue is written in."""
        sec, usec = await self.redis.time()
        return int(sec) * 1000 + int(usec) // 1000

    async def depths(self) -> list[int]:
        """The pending jobs of each shard (every tenant's), shard 0 first."""
        pipe = self.redis.pipeline(transaction=False)
        for k in self.shards:
            pipe.lrange(k.ring, 0, -1)
        lists = [k.pending_lists(ring) for k, ring in zip(self.shards, await pipe.execute())]
        pipe = self.redis.pipeline(transaction=False)
        for key in (key for keys in lists for key in keys):
            pipe.llen(key)
        counts = iter(await pipe.execute())
        return [sum(int(next(counts)) for _ in keys) for keys in lists]

    async def depth(self) -> int:
        return sum(await self.depths())

    async def tenant_depth(self, tenant: str) -> int:
        """The pending jobs of one tenant, every shard's."""
        pipe = self.redis.pipeline(transaction=False)
        for k in self.shards:
            pipe.llen(k.pending(tenant))
        return sum(int(n) for n in await pipe.execute())

    async def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """The queue's figures; with ``tenant``, that tenant's alone: its pending list, its counters
        and image bytes (``Keys.tenant_stats``, ``tenant_bytes``), and as delayed retries its
        queued jobs that are not pending."""
        pending = await (self.depth() if tenant is None else self.tenant_depth(tenant))
        pipe = self.redis.pipeline(transaction=False)
        for k in self.shards:
            pipe.zcard(k.delayed)
            pipe.hgetall(k.stats if tenant is None else k.tenant_stats(tenant))
            pipe.get(k.image_bytes if tenant is None else k.tenant_bytes(tenant))
        replies = await pipe.execute()
        counts: dict[str, int] = {}
        for counters in replies[1::3]:
            for name, value in counters.items():
                counts[name.decode()] = counts.get(name.decode(), 0) + int(value)
        jobs = {s: max(0, counts.get(s, 0)) for s in STATUSES}
        jobs["total"] = counts.get("total", 0)
        # the completed jobs that skipped the model (their image's vector was already stored)
        skipped = {k: max(0, counts.get(k, 0)) for k in ("unchanged", "reused")}
        delayed = sum(replies[0::3]) if tenant is None else max(0, jobs["queued"] - pending)
        out = {"queue_name": self.shards[0].queue, "pending_in_queue": pending,
               "delayed_retries": delayed, "image_bytes": sum(int(b or 0) for b in replies[2::3]),
               "jobs": jobs, "completed_without_model": skipped}
        out |= {} if tenant is None else {"tenant": tenant}
        return out if len(self.shards) == 1 else out | {"shards": len(self.shards)}

    async def tenant_stats(self, tenant: str) -> dict[str, Any]:
        """One tenant's figures, for its own stats document (``stats(tenant)``)."""
        return await self.stats(tenant)

    async def history(self) -> list[bytes]:
        """The queue's samples (``batcher.queue.history``), newest first: the shards' added up."""
        pipe = self.redis.pipeline(transaction=False)
        for k in self.shards:
            pipe.lrange(k.history, 0, history.MAX_SAMPLES - 1)
        return history.merge(await pipe.execute())

    async def _failed_scored(self, since_ms: float | str, limit: int, caller: Caller = EVERY
                             ) -> list[tuple[str, int]]:
        """(job id, failure time in ms) of the newest ``limit`` failures since ``since_ms`` of
        every shard, newest first."""
        pipe = self.redis.pipeline(transaction=False)
        for k in self.shards:
            pipe.zrevrangebyscore(k.failed, "+inf", since_ms, start=0, num=limit, withscores=True)
        found = [(m.decode(), int(score)) for part in await pipe.execute() for m, score in part]
        found = sorted(found, key=lambda f: f[1], reverse=True)
        if caller.tenant is None:
            return found[:limit]
        # a tenant's: the newest SCOPED_SCAN failures of all, whose records name the tenant
        tenants = await self._fields([job_id for job_id, _ in found[:SCOPED_SCAN]], "tenant")
        return [f for f, (t,) in zip(found, tenants) if t is not None and caller.sees(t)][:limit]

    async def _fields(self, job_ids: list[str], *names: str) -> list[tuple[str | None, ...]]:
        """Fields of each job's record, in one pipeline: all None where the record expired."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self.shard_of_job(job_id).job(job_id), ["job_id", *names])
        return [(None,) * len(names) if found is None else tuple("" if v is None else v.decode() for v in rest)
                for found, *rest in await pipe.execute()]

    async def failed_ids(self, limit: int, caller: Caller = EVERY) -> list[str]:
        """The ids of the most recently failed jobs (of the caller's tenant), newest first."""
        return [job_id for job_id, _ in await self._failed_scored("-inf", limit, caller)]

    async def failed_count(self, caller: Caller = EVERY) -> int:
        if caller.tenant is not None:
            return len(await self._failed_scored("-inf", SCOPED_SCAN, caller))
        pipe = self.redis.pipeline(transaction=False)
        for k in self.shards:
            pipe.zcard(k.failed)
        return sum(int(n) for n in await pipe.execute())

    async def failed(self, limit: int, caller: Caller = EVERY) -> list[dict[str, Any]]:
        """The most recently failed jobs, newest first (their records may have expired since)."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in await self.failed_ids(limit, caller):
            pipe.hgetall(self.shard_of_job(job_id).job(job_id))
        records = await pipe.execute()
        return [_public(h) for h in records if h and _of(h, caller)]

    async def failures_since(self, since_ms: int, limit: int, caller: Caller = EVERY
                             ) -> list[tuple[str, int, str | None]]:
        """(job id, failure time in ms, error or None when its record expired) of the newest
        ``limit`` failures since ``since_ms`` (of the caller's tenant), newest first."""
        found = await self._failed_scored(since_ms, limit, caller)
        errors = await self._fields([job_id for job_id, _ in found], "error_message")
        return [(job_id, score, e) for (job_id, score), (e,) in zip(found, errors)]

    async def heartbeats(self) -> list[tuple[str, bytes | None, int]]:
        """(worker id, its status document or None, the document's TTL in ms) of every worker
        registered (in any shard: each worker beats in all), by id."""
        pipe = self.redis.pipeline(transaction=False)
        for k in self.shards:
            pipe.smembers(k.workers)
        where = {}
        for k, members in zip(self.shards, await pipe.execute()):
            for m in members:
                where.setdefault(m.decode(), k)
        ids = sorted(where)
        for worker_id in ids:
            pipe.get(where[worker_id].heartbeat(worker_id))
            pipe.pttl(where[worker_id].heartbeat(worker_id))
        replies = await pipe.execute()
        return list(zip(ids, replies[::2], replies[1::2]))

    async def live_workers(self) -> int:
        """Workers alive whose query lane answers (their heartbeat says so)."""
        return sum(1 for _, doc, _ in await self.heartbeats() if doc is not None and _lane_alive(doc))


class JobQueue(ShardReads):
    def __init__(self, connections: Connections, namespace: str, max_depth: int,
                 max_bytes: int = calls.UNBOUNDED, failed_image_ttl: int = DAY,
                 max_pending_queries: int = 1000, shards: int = 1, durability: Durability = Durability()) -> None:
        super().__init__(connections, namespace, shards)
        self.durability = durability  # REDIS_WAIT_REPLICAS: the WAIT after each enqueue
        self.blocking = connections.blocking
        self.lane = Lane(self.keys)
        self.scripts = Scripts(self.redis)
        self.max_depth = max_depth
        self.max_bytes = max_bytes
        self.failed_image_ttl = failed_image_ttl
        self.max_pending_queries = max_pending_queries

    @property
    def shard_budget(self) -> tuple[int, int]:
        """(depth, bytes) each shard may hold: MAX_QUEUE_DEPTH and MAX_QUEUE_BYTES split evenly."""
        n = len(self.shards)
        return max(1, self.max_depth // n), self.max_bytes if self.max_bytes >= calls.UNBOUNDED else self.max_bytes // n

    async def enqueue(self, spec: JobSpec, image: bytes, quota: calls.Quota | None = None) -> tuple[str, int]:
        """(job id, version): the version makes this upload its product's newest. ``quota``: the
        tenant's own (``spec.tenant``), split evenly over the shards like the queue's."""
        shard = product_shard(product_key(spec.tenant, spec.product_id), len(self.shards))
        job_id = new_job_id(shard if len(self.shards) > 1 else None)
        max_depth, max_bytes = self.shard_budget
        quota = (quota or calls.Quota()).per_shard(len(self.shards))
        call = calls.enqueue(self.shards[shard], job_id, spec, image, max_depth, max_bytes, self.failed_image_ttl,
                             quota)
        try:
            ok, value, *version = await run_durable_async(self.redis, self.scripts, call, self.durability)
        except NotReplicated as exc:
            exc.job_id = job_id  # queued on the master, perhaps lost by a failover
            raise
        if ok == 0:
            raise QueueFull(int(value))
        if ok == -1:
            raise OverBudget(int(value), len(image), max_bytes)
        if ok in (-2, -3):
            code, limit = ("tenant_queue_full", quota.max_depth) if ok == -2 else ("tenant_queue_bytes_full",
                                                                                  quota.max_bytes)
            raise TenantQuotaFull(spec.tenant, code, int(value), limit)
        return job_id, int(version[0])

    async def tombstone(self, product_id: str, tenant: str = DEFAULT_TENANT) -> tuple[int, bool]:
        """Version a delete of the tenant's ``product_id``: (its version, whether an upload was pending)."""
        key = product_key(tenant, product_id)
        keys = self.shards[product_shard(key, len(self.shards))]
        version, pending = await self.scripts.run(calls.tombstone(keys, key))
        return int(version), bool(pending)

    async def status(self, job_id: str, caller: Caller = EVERY) -> dict[str, Any] | None:
        """None for an unknown job, and for another tenant's: nothing tells them apart."""
        h = await self.redis.hgetall(self.shard_of_job(job_id).job(job_id))
        if not h or not _of(h, caller):
            return None
        return _public(h)

    async def visible(self, job_id: str, caller: Caller) -> bool:
        """Whether the job exists and belongs to the caller's tenant."""
        (tenant,) = (await self._fields([job_id], "tenant"))[0]
        return tenant is not None and caller.sees(tenant)

    async def settled(self, job_ids: list[str]) -> set[str]:
        """The ids among ``job_ids`` whose job is over, or gone (unknown, expired): one pipeline."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self.shard_of_job(job_id).job(job_id), "status")
        return {job_id for job_id, status in zip(job_ids, await pipe.execute())
                if status is None or status.decode() in TERMINAL}

    async def retry(self, job_id: str) -> tuple[int, str]:
        code, status = await self.scripts.run(calls.retry(self.shard_of_job(job_id), job_id))
        return int(code), status.decode() if isinstance(status, bytes) else status

    async def retry_each(self, job_ids: list[str]) -> list[int]:
        """``retry``'s code of each job, in one pipeline; ids whose record expired (code 0)
        leave the failed set. On a cluster one call each, pinned to its slot's owner: retry.lua
        builds its tenant's keys itself (undeclared), and a pipeline would follow an ASK to a
        node where they read as missing (``batcher/queue/owner.py``)."""
        if is_cluster(self.redis):
            codes = [(await self.retry(job_id))[0] for job_id in job_ids]
        else:
            pipe = self.redis.pipeline(transaction=False)
            for job_id in job_ids:
                await self.scripts.run(calls.retry(self.shard_of_job(job_id), job_id), client=pipe)
            codes = [int(code) for code, _ in await pipe.execute()]
        for job_id, code in zip(job_ids, codes):
            if code == 0:
                await self.redis.zrem(self.shard_of_job(job_id).failed, job_id)
        return codes

    async def ask(self, request: QueryRequest, timeout_s: float) -> QueryReply | None:
        """Put a query on the workers' lane and wait for its answer; None on time-out.
        ``LaneFull`` when the lane already holds ``max_pending_queries`` requests."""
        queued, pending = self.lane.queued(await self.scripts.run(
            self.lane.ask(request, self.max_pending_queries, timeout_s)))
        if not queued:
            raise LaneFull(pending)
        try:  # the whole wait, for a free connection too, within timeout_s (and a round trip)
            return self.lane.reply_of(await asyncio.wait_for(
                self.lane.wait_reply(self.blocking, request, timeout_s), timeout_s + REPLY_GRACE_S))
        except asyncio.TimeoutError:
            return None


class DeliveryStore(ShardReads):
    """Webhook deliveries (api/webhooks.py) of every shard: leased, snapshotted, settled, listed.
    A delivery's id is ``<job id>.<ms the job ended>``: it names its job's shard."""

    def __init__(self, connections: Connections, namespace: str, shards: int = 1) -> None:
        super().__init__(connections, namespace, shards)
        self.scripts = Scripts(self.redis)
        self._first = 0  # the shard the next lease starts from: each in turn, so none starves

    def shard_of(self, delivery_id: str) -> Keys:
        return self.shard_of_job(delivery_id.rpartition(".")[0])

    async def lease(self, limit: int, lease_ms: int) -> list[str]:
        """Up to ``limit`` due deliveries, leased for ``lease_ms`` (shard by shard)."""
        leased: list[str] = []
        self._first = (self._first + 1) % len(self.shards)
        for k in self.shards[self._first:] + self.shards[:self._first]:
            if len(leased) >= limit:
                break
            reply = await self.scripts.run(calls.lease_deliveries(k, lease_ms, limit - len(leased)))
            leased += [m.decode() for m in reply[1:]]
        return leased

    async def prepare(self, delivery_id: str) -> dict[str, str] | None:
        """The delivery's record; at its first attempt, its url and body (the job's status document,
        as ``GET /api/v1/queue/status/{job_id}`` serves it) are copied from the job's record into
        it, so that retries outlive the job's record. None when the job's record expired first."""
        k = self.shard_of(delivery_id)
        record = {f.decode(): v.decode() for f, v in (await self.redis.hgetall(k.delivery(delivery_id))).items()}
        if "body" in record:
            return record
        job_id, _, ended_ms = delivery_id.rpartition(".")
        h = await self.redis.hgetall(k.job(job_id))
        if not h or b"callback_url" not in h:
            return None
        record = {"job_id": job_id, "ended_at": ended_ms, "url": h[b"callback_url"].decode(),
                  "tenant": (h.get(b"tenant") or b"").decode() or DEFAULT_TENANT,
                  "body": json.dumps(_public(h), separators=(",", ":")), "attempts": "0"}
        await self.redis.hset(k.delivery(delivery_id), mapping=record)
        return record

    async def settle(self, delivery_id: str, outcome: str, delay_ms: int = 0,
                     fields: dict[str, str | int] | None = None) -> tuple[int, bool]:
        """(Redis time in ms, whether it was still leased) after recording ``outcome``."""
        now_ms, done = await self.scripts.run(
            calls.settle_delivery(self.shard_of(delivery_id), delivery_id, outcome, delay_ms, fields))
        return int(now_ms), bool(done)

    async def requeue(self, delivery_id: str, caller: Caller = EVERY) -> bool:
        """Send a dead delivery again (its attempts reset); False when it is not dead, or not the
        caller's tenant's."""
        k = self.shard_of(delivery_id)
        found = await self.redis.hmget(k.delivery(delivery_id), ["tenant", "url"])
        if not _sees(caller, {name: v.decode() for name, v in zip(("tenant", "url"), found) if v is not None}):
            return False
        _, done = await self.scripts.run(calls.requeue_delivery(self.shard_of(delivery_id), delivery_id))
        return bool(done)

    async def dead(self, offset: int, limit: int, caller: Caller = EVERY) -> list[dict[str, str]]:
        """Dead-lettered deliveries (of the caller's tenant: among the newest SCOPED_SCAN of all),
        the newest first, from ``offset``: their records and ``dead_ms``."""
        scan = offset + limit if caller.tenant is None else SCOPED_SCAN
        pipe = self.redis.pipeline(transaction=False)
        for k in self.shards:
            pipe.zrevrange(k.deliveries_dead, 0, scan - 1, withscores=True)
        found = sorted(((m.decode(), int(t)) for part in await pipe.execute() for m, t in part),
                       key=lambda f: f[1], reverse=True)[:scan]
        for delivery_id, _ in found:
            pipe.hgetall(self.shard_of(delivery_id).delivery(delivery_id))
        records = [{f.decode(): v.decode() for f, v in h.items()}
                   | {"delivery_id": d, "job_id": d.rpartition(".")[0], "dead_ms": str(t)}
                   for (d, t), h in zip(found, await pipe.execute())]
        return [r for r in records if _sees(caller, r)][offset:offset + limit]


def _sees(caller: Caller, delivery: dict[str, str]) -> bool:
    """Whether a delivery's record is the caller's tenant's: its ``tenant``; without one, the
    default's if it has a url (snapshotted before deliveries had tenants), else an admin's only
    (the job's record expired before the first attempt: whose it was is not known)."""
    if caller.tenant is None:
        return True
    owner = delivery.get("tenant") or (DEFAULT_TENANT if delivery.get("url") else None)
    return owner is not None and caller.sees(owner)


def _lane_alive(heartbeat: bytes) -> bool:
    """A heartbeat document that does not say its query lane is down counts as able to answer."""
    try:
        return json.loads(heartbeat).get("query_lane_alive") is not False
    except (ValueError, AttributeError):
        return True


def _of(h: dict[bytes, bytes], caller: Caller) -> bool:
    """Whether a job's record belongs to the caller's tenant (a record without one: the default's)."""
    return caller.sees((h.get(b"tenant") or b"").decode())


def _public(h: dict[bytes, bytes]) -> dict[str, Any]:
    status = public_status({k.decode(): v.decode() for k, v in h.items()})
    return status | {"error_message": short_reason(status["error_message"])}
