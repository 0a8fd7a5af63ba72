"""Liveness, readiness and Prometheus metrics: always open, no key."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {}})
async def readyz(request: Request):
    if await request.app.state.queue.connections.ping(request.app.state.settings.redis_timeout):
        return {"status": "ready", "redis": True}
    return JSONResponse({"status": "unavailable", "redis": False,
                         "error": {"code": "redis_unavailable", "message": "Redis does not answer",
                                   "field": None}}, status_code=503)


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    try:
        depths = await request.app.state.queue.depths()
    except Exception:
        depths = None
    return Response(request.app.state.metrics.exposition(depths), media_type=CONTENT_TYPE_LATEST)
