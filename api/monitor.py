"""Reads for the dashboard and for operators: live workers, the queue's recent history,
failures in a bounded window, and retrying many failed jobs at once."""
from __future__ import annotations

import json
from typing import Any

from api.failures import Group, group_failures
from api.queue import JobQueue
from batcher.queue import calls, history
from batcher.queue.jobs import iso_from_ms

RETRY_CHUNK = 500


async def redis_ms(queue: JobQueue) -> int:
    sec, usec = await queue.redis.time()
    return int(sec) * 1000 + int(usec) // 1000


async def workers(queue: JobQueue) -> list[dict[str, Any]]:
    """One entry per worker whose heartbeat is alive, with the status it published."""
    ids = sorted(m.decode() for m in await queue.redis.smembers(queue.keys.workers))
    pipe = queue.redis.pipeline(transaction=False)
    for worker_id in ids:
        pipe.get(queue.keys.heartbeat(worker_id))
        pipe.pttl(queue.keys.heartbeat(worker_id))
    replies = await pipe.execute()
    out = []
    for worker_id, raw, pttl in zip(ids, replies[::2], replies[1::2]):
        if raw is None or pttl < 0:
            continue  # no heartbeat: dead, waiting for the reaper
        info = json.loads(raw)
        ttl_ms = float(info.get("heartbeat_ttl_s", 0)) * 1000
        age = max(0.0, (ttl_ms - pttl) / 1000) if ttl_ms else None
        out.append({"worker_id": worker_id, **info, "heartbeat_age_s": age})
    return out


async def recent_history(queue: JobQueue, minutes: int) -> dict[str, Any]:
    now = await redis_ms(queue)
    raw = await queue.redis.lrange(queue.keys.history, 0, history.MAX_SAMPLES - 1)
    return {"minutes": minutes, "sample_every_s": history.SAMPLE_GAP_MS / 1000, "now": iso_from_ms(now),
            "samples": [s | {"t": iso_from_ms(s["t"])} for s in history.series(raw, now - minutes * 60_000)]}


async def failure_groups(queue: JobQueue, window_s: int, max_jobs: int) -> tuple[list[Group], dict]:
    """Group the most recent ``max_jobs`` failures of the last ``window_s`` seconds."""
    since = await redis_ms(queue) - window_s * 1000
    found = await queue.redis.zrevrangebyscore(queue.keys.failed, "+inf", since, start=0, num=max_jobs,
                                               withscores=True)
    pipe = queue.redis.pipeline(transaction=False)
    for job_id, _ in found:
        pipe.hget(queue.keys.job(job_id.decode()), "error_message")
    errors = await pipe.execute()
    failures = [(job_id.decode(), int(score), (e.decode() if e is not None else "(job record expired)"))
                for (job_id, score), e in zip(found, errors)]
    window = {"seconds": window_s, "since": iso_from_ms(since), "max_jobs": max_jobs,
              "scanned": len(found), "truncated": len(found) == max_jobs}
    return group_failures(failures), window


async def retry_many(queue: JobQueue, job_ids: list[str]) -> dict[str, int]:
    """Retry each job as ``POST /retry/{id}`` would; ids whose record expired leave the failed set."""
    k = queue.keys
    outcome = {"retried": 0, "not_failed": 0, "image_expired": 0, "superseded": 0, "expired": 0}
    names = {1: "retried", -1: "not_failed", -2: "image_expired", -3: "superseded", 0: "expired"}
    for start in range(0, len(job_ids), RETRY_CHUNK):
        chunk = job_ids[start:start + RETRY_CHUNK]
        pipe = queue.redis.pipeline(transaction=False)
        for job_id in chunk:
            await queue.scripts.run(calls.retry(k, job_id), client=pipe)
        codes = [int(code) for code, _ in await pipe.execute()]
        gone = [j for j, c in zip(chunk, codes) if c == 0]
        if gone:
            await queue.redis.zrem(k.failed, *gone)
        for code in codes:
            outcome[names[code]] += 1
    return outcome


async def failed_ids(queue: JobQueue, limit: int) -> list[str]:
    return [m.decode() for m in await queue.redis.zrevrange(queue.keys.failed, 0, limit - 1)]
