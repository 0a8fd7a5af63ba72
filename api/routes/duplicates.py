"""Pairs of near-duplicate photos (batcher/duplicates/): answered by the workers."""
from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import KEY_REQUIRED, CallerOf, Queue, Settings
from api.errors import ApiError
from api.routes.search import ask_workers
from api.security import tenant_of
from batcher.queue.messages import QueryRequest

router = APIRouter(tags=["search"], dependencies=KEY_REQUIRED)
MAX_LIMIT = 100


class Photo(BaseModel):
    product_id: str
    photo_index: int


class Pair(Photo):
    duplicate_of: Photo
    distance: int


class DuplicatesPage(BaseModel):
    pairs: list[Pair]
    next_cursor: str | None


def check_cursor(cursor: str) -> str:
    """A cursor is the ``next_cursor`` of a page before (a point id, a UUID), or empty."""
    if cursor:
        try:
            return str(uuid.UUID(cursor))
        except ValueError:
            raise ApiError(422, "invalid_field", "cursor must be the next_cursor of an earlier page, "
                           "or empty for the first page", "cursor") from None
    return ""


@router.get("/api/v1/duplicates", response_model=DuplicatesPage, responses={422: {}, 503: {}, 504: {}})
async def list_duplicates(queue: Queue, settings: Settings, caller: CallerOf,
                          cursor: Annotated[str, Query(max_length=64)] = "",
                          limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20) -> dict:
    """Pairs of photos of different products that are the same picture (resized, re-encoded,
    lightly cropped or rotated): each photo stored with near duplicates, with the photos stored
    before it that it matches, while both are still stored. ``limit`` counts photos, so a page
    holds about as many pairs or more; follow ``next_cursor`` until it is null. Only the caller's
    tenant's photos, paired only with each other."""
    request = QueryRequest("duplicates", cursor=check_cursor(cursor), limit=limit, tenant=tenant_of(caller))
    return (await ask_workers(queue, settings, request)).page
