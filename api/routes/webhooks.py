"""Dead-lettered webhook deliveries: list them, send one again."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from api.deps import KEY_REQUIRED, Scope
from api.errors import ApiError
from api.queue import DeliveryStore
from batcher.queue.jobs import iso_from_ms

router = APIRouter(prefix="/api/v1/webhooks/failed", tags=["webhooks"], dependencies=KEY_REQUIRED)


async def get_deliveries(request: Request) -> DeliveryStore:
    return request.app.state.deliveries


Deliveries = Annotated[DeliveryStore, Depends(get_deliveries)]


def _public(d: dict[str, str]) -> dict:
    return {"delivery_id": d["delivery_id"], "job_id": d["job_id"], "url": d.get("url"),
            "attempts": int(d.get("attempts") or 0), "last_status": int(d["last_status"]) if d.get("last_status")
            else None, "last_error": d.get("last_error") or None, "ended_at": iso_from_ms(d.get("ended_at")),
            "dead_at": iso_from_ms(d["dead_ms"]), "tenant": d.get("tenant") or None}


@router.get("")
async def failed_deliveries(deliveries: Deliveries, scope: Scope, cursor: Annotated[int, Query(
                                ge=0, le=100_000, description="Where the page starts: 0, or the previous page's "
                                "`next_cursor`.")] = 0,
                            limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    """Dead-lettered deliveries, the most recent first: those that used WEBHOOK_MAX_ATTEMPTS or got a
    final answer (a 4xx other than 408 and 429, a refused address, a tenant gone). The caller's
    tenant's only (an admin: every tenant's, or the one named by `?tenant=`)."""
    page = await deliveries.dead(cursor, limit, scope)
    return {"deliveries": [_public(d) for d in page], "next_cursor": cursor + limit if len(page) == limit else None}


@router.post("/{delivery_id}/retry", status_code=202, responses={404: {}})
async def retry_delivery(delivery_id: str, deliveries: Deliveries, scope: Scope) -> dict:
    """Send a dead-lettered delivery again, with its attempts reset (same `X-Clipq-Delivery`), signed
    with its tenant's secret of now. Another tenant's answers 404, as an unknown one."""
    if not await deliveries.requeue(delivery_id, scope):
        raise ApiError(404, "delivery_not_found", f"no dead-lettered delivery {delivery_id!r}", "delivery_id")
    return {"status": "retrying", "delivery_id": delivery_id}
