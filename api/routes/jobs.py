"""Job status, queue stats and manual retry."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api import monitor
from api.deps import KEY_REQUIRED, Queue, Waiter
from api.errors import ApiError, error_body, refusals
from api.queue import ClusterUnavailable, Unavailable

router = APIRouter(prefix="/api/v1/queue", tags=["jobs"])
MAX_WAIT_S = 30


@router.get("/status/{job_id}", responses={404: {}, 422: {}})
async def job_status(job_id: str, queue: Queue, waiter: Waiter,
                     wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description=(
                         "Seconds to wait for the job to be completed, failed or superseded before answering "
                         f"(at most {MAX_WAIT_S}); the answer comes as soon as it is."))] = 0) -> dict:
    if wait > 0:
        status = await waiter.wait(job_id, lambda: queue.status(job_id), wait)
    else:
        status = await queue.status(job_id)
    if status is None:
        raise ApiError(404, "job_not_found", f"no job {job_id!r} (unknown, or expired)", "job_id")
    return status


@router.get("/stats", responses={503: {}})
async def queue_stats(queue: Queue):
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    try:
        stats = await queue.stats()
    except (Unavailable, ClusterUnavailable) as exc:
        refusals.note(exc, "GET /api/v1/queue/stats")
        body = {"available": False, "timestamp": now,
                **error_body("redis_unavailable", "the job store (Redis) is unavailable")}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    return {"available": True, **stats, "timestamp": now}


@router.get("/history")
async def queue_history(queue: Queue, minutes: Annotated[int, Query(ge=1, le=20)] = 15) -> dict:
    """Samples of the queue (pending, delayed, processing, completed, failed, completions per
    second) taken every few seconds by the workers' heartbeats; kept 20 minutes at most."""
    return await monitor.recent_history(queue, minutes)


@router.get("/failed", dependencies=KEY_REQUIRED)
async def failed_jobs(queue: Queue, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    """The most recently failed jobs, newest first, with their errors: what to inspect and retry."""
    return {"jobs": await queue.failed(limit)}


@router.post("/retry/{job_id}", status_code=202, dependencies=KEY_REQUIRED, responses={404: {}, 409: {}})
async def retry_job(job_id: str, queue: Queue) -> dict:
    code, status = await queue.retry(job_id)
    if code == 0:
        raise ApiError(404, "job_not_found", f"no job {job_id!r} (unknown, or expired)", "job_id")
    if code == -1:
        raise ApiError(409, "job_not_failed", f"only failed jobs can be retried; this one is {status}", "job_id")
    if code == -3:
        raise ApiError(409, "superseded", "a newer upload or a delete of this product came after this job; "
                       "upload the product again", "job_id")
    if code == -2:
        raise ApiError(409, "image_expired", "the job's image is no longer kept; upload the product again",
                       "job_id")
    return {"status": "retrying", "job_id": job_id, "message": "Job re-queued for processing"}
