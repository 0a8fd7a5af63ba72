"""Failures grouped by error, retry of one group, retry of every failed job."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api import monitor
from api.deps import KEY_REQUIRED, Queue, Scope
from api.errors import ApiError
from api.failures import SAMPLES, Group
from batcher.queue.jobs import iso_from_ms

router = APIRouter(prefix="/api/v1/queue/failed", tags=["jobs"], dependencies=KEY_REQUIRED)
WindowS = Annotated[int, Query(ge=60, le=30 * 24 * 3600, description="Look back this many seconds.")]
MaxJobs = Annotated[int, Query(ge=1, le=10_000, description="Group at most this many recent failures.")]


def _public(g: Group) -> dict:
    return {"group_id": g.id, "error": g.error, "example": g.example, "count": g.count,
            "first_seen": iso_from_ms(g.first_seen_ms), "last_seen": iso_from_ms(g.last_seen_ms),
            "sample_job_ids": g.job_ids[:SAMPLES]}


@router.get("/groups")
async def failure_groups(queue: Queue, caller: Scope, window_s: WindowS = 24 * 3600,
                         max_jobs: MaxJobs = 1000) -> dict:
    """Recent failures grouped by their error message, with ids, numbers and quoted values
    stripped. Only the newest ``max_jobs`` failures of the last ``window_s`` seconds count."""
    groups, window = await monitor.failure_groups(queue, window_s, max_jobs, caller)
    return {"window": window, "groups": [_public(g) for g in groups]}


@router.post("/groups/{group_id}/retry", status_code=202, responses={404: {}})
async def retry_group(group_id: str, queue: Queue, caller: Scope, window_s: WindowS = 24 * 3600,
                      max_jobs: MaxJobs = 1000) -> dict:
    """Retry every job of one group (as grouped with the same window)."""
    groups, _ = await monitor.failure_groups(queue, window_s, max_jobs, caller)
    group = next((g for g in groups if g.id == group_id), None)
    if group is None:
        raise ApiError(404, "group_not_found", f"no failure group {group_id!r} in this window", "group_id")
    return {"group_id": group_id, **await monitor.retry_many(queue, group.job_ids)}


@router.post("/retry", status_code=202)
async def retry_all(queue: Queue, caller: Scope, limit: MaxJobs = 10_000) -> dict:
    """Retry the newest ``limit`` failed jobs (all of them, when fewer); ``remaining`` says how
    many failed jobs are left, those whose image expired included."""
    counts = await monitor.retry_many(queue, await queue.failed_ids(limit, caller))
    return {**counts, "remaining": await queue.failed_count(caller)}
