"""Search by words or by photo, and read or delete a product: answered by the workers."""
from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from api.deps import KEY_REQUIRED, Queue, Settings
from api.errors import ApiError
from api.filters import MAX_KEYS, check_filter
from api.reasons import short_reason
from api.routes.uploads import read_upload
from api.validation import check_product_id, one_image_source, parse_object
from batcher.queue.messages import QueryReply, QueryRequest

router = APIRouter(tags=["search"], dependencies=KEY_REQUIRED)


class TextSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=1000)
    limit: int = Field(10, ge=1, le=100)
    filter: dict[str, Any] = Field(  # checked by api.filters: a 422 that says what is wrong
        default_factory=dict, description="Exact matches on metadata keys, plus product_id: at most "
        f"{MAX_KEYS} keys; values are strings, 64-bit integers or booleans (no floats).")


class SearchResult(BaseModel):
    product_id: str
    score: float
    name: str | None
    description: str | None
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    results: list[SearchResult]
    took_ms: float


async def ask_workers(queue, settings, request: QueryRequest) -> QueryReply:
    if not await queue.live_workers():
        raise ApiError(503, "no_worker", "no worker is running to answer queries", headers={"Retry-After": "5"})
    reply = await queue.ask(request, settings.search_timeout)
    if reply is None:
        raise ApiError(504, "search_timeout", f"no worker answered within {settings.search_timeout:g}s")
    if not reply.ok:
        raise ApiError(*worker_refusal(reply))
    return reply


def worker_refusal(reply: QueryReply) -> tuple[int, str, str]:
    """A worker's error reply as (status, code, message), with a short public message."""
    status, code, message = int(reply.status or 500), reply.code or "error", reply.message
    if code == "image_url_unavailable":  # our own words (batcher.fetch), whatever the status
        return status, code, str(message)
    if status >= 500:
        return status, code, "a worker failed to answer this query (the details are in its logs)"
    return status, code, short_reason(message) if code == "invalid_image" else str(message or code)


def found(reply: QueryReply) -> dict:
    return {"results": [asdict(r) for r in reply.results or []], "took_ms": reply.took_ms}


@router.post("/api/v1/search", response_model=SearchResponse, responses={422: {}, 503: {}, 504: {}})
async def search_text(body: TextSearch, queue: Queue, settings: Settings) -> dict:
    check_filter(body.filter)
    return found(await ask_workers(queue, settings, QueryRequest("text", **body.model_dump())))


@router.post("/api/v1/search/image", response_model=SearchResponse,
             responses={413: {}, 415: {}, 422: {}, 503: {}, 504: {}})
async def search_image(queue: Queue, settings: Settings, image_file: Annotated[UploadFile | None, File()] = None,
                       image_url: Annotated[str | None, Form()] = None,
                       limit: Annotated[int, Form(ge=1, le=100)] = 10,
                       filter: Annotated[str | None, Form()] = None) -> dict:
    url = one_image_source(image_file is not None, image_url)
    conditions = check_filter(parse_object(filter, "filter", settings.max_metadata_bytes))
    if url:  # the worker's query lane fetches it, under the same rules as indexing
        request = QueryRequest("image", image_url=url, limit=limit, filter=conditions)
    else:
        image, _ = await read_upload(image_file, settings.max_upload_bytes, settings.max_image_pixels)
        request = QueryRequest("image", image=image, limit=limit, filter=conditions)
    return found(await ask_workers(queue, settings, request))


@router.get("/api/v1/products/{product_id}", responses={404: {}, 503: {}, 504: {}})
async def get_product(product_id: str, queue: Queue, settings: Settings) -> dict:
    reply = await ask_workers(queue, settings, QueryRequest("get", product_id=check_product_id(product_id)))
    return reply.product


@router.delete("/api/v1/products/{product_id}", responses={404: {}, 503: {}, 504: {}})
async def delete_product(product_id: str, queue: Queue, settings: Settings) -> dict:
    await ask_workers(queue, settings, QueryRequest("delete", product_id=check_product_id(product_id)))
    return {"deleted": True, "product_id": product_id}
