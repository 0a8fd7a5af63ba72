"""Reads for the dashboard and for operators: live workers, the queue's recent history,
failures in a bounded window, and retrying many failed jobs at once."""
from __future__ import annotations

import json
from typing import Any

from api.failures import Group, group_failures
from api.tenants import Caller
from api.queue import JobQueue
from batcher.queue import history
from batcher.queue.jobs import iso_from_ms

RETRY_CHUNK = 500


async def workers(queue: JobQueue) -> list[dict[str, Any]]:
    """One entry per worker whose heartbeat is alive, with the status it published."""
    out = []
    for worker_id, raw, pttl in await queue.heartbeats():
        if raw is None or pttl < 0:
            continue  # no heartbeat: dead, waiting for the reaper
        info = json.loads(raw)
        ttl_ms = float(info.get("heartbeat_ttl_s", 0)) * 1000
        age = max(0.0, (ttl_ms - pttl) / 1000) if ttl_ms else None
        out.append({"worker_id": worker_id, **info, "heartbeat_age_s": age})
    return out


async def recent_history(queue: JobQueue, minutes: int) -> dict[str, Any]:
    now = await queue.now_ms()
    raw = await queue.history()
    return {"minutes": minutes, "sample_every_s": history.SAMPLE_GAP_MS / 1000, "now": iso_from_ms(now),
            "samples": [s | {"t": iso_from_ms(s["t"])} for s in history.series(raw, now - minutes * 60_000)]}


async def failure_groups(queue: JobQueue, window_s: int, max_jobs: int, caller: Caller
                         ) -> tuple[list[Group], dict]:
    """Group the most recent ``max_jobs`` failures (of the caller's tenant) of the last ``window_s`` seconds."""
    since = await queue.now_ms() - window_s * 1000
    found = await queue.failures_since(since, max_jobs, caller)
    failures = [(job_id, at, "(job record expired)" if e is None else e) for job_id, at, e in found]
    window = {"seconds": window_s, "since": iso_from_ms(since), "max_jobs": max_jobs,
              "scanned": len(found), "truncated": len(found) == max_jobs}
    return group_failures(failures), window


async def retry_many(queue: JobQueue, job_ids: list[str]) -> dict[str, int]:
    """Retry each job as ``POST /retry/{id}`` would; ids whose record expired leave the failed set."""
    outcome = {"retried": 0, "not_failed": 0, "image_expired": 0, "superseded": 0, "expired": 0}
    names = {1: "retried", -1: "not_failed", -2: "image_expired", -3: "superseded", 0: "expired"}
    for start in range(0, len(job_ids), RETRY_CHUNK):
        for code in await queue.retry_each(job_ids[start:start + RETRY_CHUNK]):
            outcome[names[code]] += 1
    return outcome
