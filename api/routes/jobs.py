"""Job status, queue stats and manual retry."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from api import monitor
from api.deps import CallerOf, Queue, Reader, Scope, Waiter
from api.errors import ApiError, error_body, refusals
from api.queue import ClusterUnavailable, Unavailable
from api.security import sees_totals

router = APIRouter(prefix="/api/v1/queue", tags=["jobs"])
MAX_WAIT_S = 30


@router.get("/status/{job_id}", responses={404: {}, 422: {}})
async def job_status(job_id: str, queue: Queue, waiter: Waiter, caller: Reader,
                     wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description=(
                         "Seconds to wait for the job to be completed, failed or superseded before answering "
                         f"(at most {MAX_WAIT_S}); the answer comes as soon as it is."))] = 0) -> dict:
    if wait > 0:
        status = await waiter.wait(job_id, lambda: queue.status(job_id, caller), wait)
    else:
        status = await queue.status(job_id, caller)
    if status is None:  # another tenant's job too: nothing tells it from an unknown one
        raise _not_found(job_id)
    return status


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, "job_not_found", f"no job {job_id!r} (unknown, or expired)", "job_id")


@router.get("/stats", responses={503: {}})
async def queue_stats(queue: Queue, caller: Reader, request: Request):
    """The whole queue's counters for an admin (and where the default tenant is the only one);
    a tenant's own counters for a tenant (``tenant`` names it)."""
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    try:
        stats = await queue.stats() if sees_totals(request, caller) else await queue.tenant_stats(caller.tenant)
    except (Unavailable, ClusterUnavailable) as exc:
        refusals.note(exc, "GET /api/v1/queue/stats")
        body = {"available": False, "timestamp": now,
                **error_body("redis_unavailable", "the job store (Redis) is unavailable")}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    return {"available": True, "tenant": caller.tenant, **stats, "timestamp": now}


@router.get("/history")
async def queue_history(queue: Queue, caller: Reader, request: Request,
                        minutes: Annotated[int, Query(ge=1, le=20)] = 15) -> dict:
    """Samples of the whole queue (pending, delayed, processing, completed, failed, completions
    per second) taken every few seconds by the workers' heartbeats; kept 20 minutes at most. Those
    who see the whole queue's counters see them (an admin, or everyone where the default tenant
    is the only one); a tenant gets no samples: they would show the other tenants' traffic."""
    history = await monitor.recent_history(queue, minutes)
    return history if sees_totals(request, caller) else history | {"samples": [], "tenant": caller.tenant}


@router.get("/failed")
async def failed_jobs(queue: Queue, caller: Scope, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    """The most recently failed jobs (of the caller's tenant), newest first, with their errors:
    what to inspect and retry."""
    return {"jobs": await queue.failed(limit, caller)}


@router.post("/retry/{job_id}", status_code=202, responses={404: {}, 409: {}})
async def retry_job(job_id: str, queue: Queue, caller: CallerOf) -> dict:
    if not await queue.visible(job_id, caller):
        raise _not_found(job_id)
    code, status = await queue.retry(job_id)
    if code == 0:
        raise _not_found(job_id)
    if code == -1:
        raise ApiError(409, "job_not_failed", f"only failed jobs can be retried; this one is {status}", "job_id")
    if code == -3:
        raise ApiError(409, "superseded", "a newer upload or a delete of this product came after this job; "
                       "upload the product again", "job_id")
    if code == -2:
        raise ApiError(409, "image_expired", "the job's image is no longer kept; upload the product again",
                       "job_id")
    return {"status": "retrying", "job_id": job_id, "message": "Job re-queued for processing"}
