"""The API's side of the queue protocol (redis.asyncio): enqueue, read, retry, ask workers."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import redis.asyncio as aioredis

from api.reasons import short_reason
from batcher.queue import calls
from batcher.queue.config import DAY
from batcher.queue.jobs import STATUSES, TERMINAL, JobSpec, new_job_id, public_status
from batcher.queue.keys import Keys
from batcher.queue.messages import QueryReply, QueryRequest
from batcher.queue.scripts import Scripts


REPLY_GRACE_S = 0.5  # past a search's time-out, for the BLPOP's own answer to come back


class QueueFull(Exception):
    def __init__(self, depth: int) -> None:
        super().__init__(f"queue holds {depth} jobs")
        self.depth = depth


class OverBudget(Exception):
    """The image does not fit in the byte budget (MAX_QUEUE_BYTES), even without failed images."""

    def __init__(self, held: int, size: int, max_bytes: int) -> None:
        super().__init__(f"the queue holds {held} image bytes; {size} more would pass {max_bytes}")
        self.held, self.size, self.max_bytes = held, size, max_bytes


class LaneFull(Exception):
    """The query lane already holds its bound of requests: the API answers 503."""

    def __init__(self, pending: int) -> None:
        super().__init__(f"query lane holds {pending} requests")
        self.pending = pending


class JobQueue:
    def __init__(self, client: aioredis.Redis, blocking: aioredis.Redis, namespace: str,
                 max_depth: int, max_bytes: int = calls.UNBOUNDED, failed_image_ttl: int = DAY,
                 max_pending_queries: int = 1000) -> None:
        self.redis = client          # short socket timeout: fail fast when Redis is down
        self.blocking = blocking     # for waits on worker replies
        self.keys = Keys(namespace)
        self.scripts = Scripts(client)
        self.max_depth = max_depth
        self.max_bytes = max_bytes
        self.failed_image_ttl = failed_image_ttl
        self.max_pending_queries = max_pending_queries

    async def enqueue(self, spec: JobSpec, image: bytes) -> tuple[str, int]:
        """(job id, version): the version makes this upload its product's newest."""
        job_id = new_job_id()
        ok, value, *version = await self.scripts.run(calls.enqueue(
            self.keys, job_id, spec, image, self.max_depth, self.max_bytes, self.failed_image_ttl))
        if ok == 0:
            raise QueueFull(int(value))
        if ok == -1:
            raise OverBudget(int(value), len(image), self.max_bytes)
        return job_id, int(version[0])

    async def tombstone(self, product_id: str) -> tuple[int, bool]:
        """Version a delete of ``product_id``: (its version, whether an upload was pending)."""
        version, pending = await self.scripts.run(calls.tombstone(self.keys, product_id))
        return int(version), bool(pending)

    async def status(self, job_id: str) -> dict[str, Any] | None:
        h = await self.redis.hgetall(self.keys.job(job_id))
        if not h:
            return None
        return _public(h)

    async def settled(self, job_ids: list[str]) -> set[str]:
        """The ids among ``job_ids`` whose job is over, or gone (unknown, expired): one pipeline."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self.keys.job(job_id), "status")
        return {job_id for job_id, status in zip(job_ids, await pipe.execute())
                if status is None or status.decode() in TERMINAL}

    async def depth(self) -> int:
        return int(await self.redis.llen(self.keys.queue))

    async def stats(self) -> dict[str, Any]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.keys.queue)
        pipe.zcard(self.keys.delayed)
        pipe.hgetall(self.keys.stats)
        pipe.get(self.keys.image_bytes)
        pending, delayed, counters, image_bytes = await pipe.execute()
        counts = {k.decode(): int(v) for k, v in counters.items()}
        jobs = {s: max(0, counts.get(s, 0)) for s in STATUSES}
        jobs["total"] = counts.get("total", 0)
        # the completed jobs that skipped the model (their image's vector was already stored)
        skipped = {k: max(0, counts.get(k, 0)) for k in ("unchanged", "reused")}
        return {"queue_name": self.keys.queue, "pending_in_queue": pending, "delayed_retries": delayed,
                "image_bytes": int(image_bytes or 0), "jobs": jobs, "completed_without_model": skipped}

    async def retry(self, job_id: str) -> tuple[int, str]:
        code, status = await self.scripts.run(calls.retry(self.keys, job_id))
        return int(code), status.decode() if isinstance(status, bytes) else status

    async def failed(self, limit: int) -> list[dict[str, Any]]:
        """The most recently failed jobs, newest first (their records may have expired since)."""
        ids = await self.redis.zrevrange(self.keys.failed, 0, limit - 1)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.keys.job(job_id.decode()))
        records = await pipe.execute()
        return [_public(h) for h in records if h]

    async def live_workers(self) -> int:
        """Workers alive whose query lane answers (their heartbeat says so)."""
        members = await self.redis.smembers(self.keys.workers)
        if not members:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for m in members:
            pipe.get(self.keys.heartbeat(m.decode()))
        return sum(1 for doc in await pipe.execute() if doc is not None and _lane_alive(doc))

    async def ask(self, request: QueryRequest, timeout_s: float) -> QueryReply | None:
        """Put a query on the workers' lane and wait for its answer; None on time-out.
        ``LaneFull`` when the lane already holds ``max_pending_queries`` requests."""
        call = calls.ask(self.keys, request.to_json(), self.max_pending_queries, int(timeout_s * 1000))
        queued, pending = await self.scripts.run(call)
        if not queued:
            raise LaneFull(int(pending))
        try:  # the whole wait, for a free connection too, within timeout_s (and a round trip)
            reply = await asyncio.wait_for(self.blocking.blpop([self.keys.reply(request.id)], timeout=timeout_s),
                                           timeout_s + REPLY_GRACE_S)
        except asyncio.TimeoutError:
            return None
        if reply is None:
            return None
        return QueryReply.from_json(reply[1])


def _lane_alive(heartbeat: bytes) -> bool:
    """A heartbeat document that does not say its query lane is down counts as able to answer."""
    try:
        return json.loads(heartbeat).get("query_lane_alive") is not False
    except (ValueError, AttributeError):
        return True


def _public(h: dict[bytes, bytes]) -> dict[str, Any]:
    status = public_status({k.decode(): v.decode() for k, v in h.items()})
    return status | {"error_message": short_reason(status["error_message"])}


async def ping(client: aioredis.Redis, timeout_s: float) -> bool:
    try:
        return bool(await asyncio.wait_for(client.ping(), timeout_s))
    except Exception:
        return False
