"""Search by words or by photo, and read or delete a product: answered by the workers."""
from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.deps import KEY_REQUIRED, CallerOf, Queue, Settings
from api.errors import ApiError
from api.filters import MAX_KEYS, check_filter
from api.queue import LaneFull
from api.reasons import short_reason
from api.routes.uploads import read_upload
from api.security import tenant_of
from api.validation import check_product_id, one_image_source, parse_object
from batcher.queue.messages import MODES, QueryReply, QueryRequest

router = APIRouter(tags=["search"], dependencies=KEY_REQUIRED)


# words search both ways by default: CLIP's meaning plus exact words (a SKU, a brand), for
# about the cost of the CLIP pass alone (api/README.md#search-, scripts/bench_hybrid.py)
DEFAULT_MODE = "hybrid"


class TextSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, min_length=1, max_length=1000, description="Words to search by.")
    like: str | None = Field(None, min_length=1, max_length=256, description="Instead of text: a stored "
                             "product_id; finds the products whose photos look like its photos, leaving it out.")
    mode: Literal[MODES] | None = Field(None, description="Of a search by text: `vector` (CLIP), `keyword` "
                                        f"(BM25 over name, description, metadata) or `hybrid` (both, fused); "
                                        f"default {DEFAULT_MODE}.")
    limit: int = Field(10, ge=1, le=100, description="Products returned (each once, at its best photo).")
    filter: dict[str, Any] = Field(  # checked by api.filters: a 422 that says what is wrong
        default_factory=dict, description="Exact matches on metadata keys, plus product_id: at most "
        f"{MAX_KEYS} keys; values are strings, 64-bit integers or booleans (no floats).")

    @model_validator(mode="after")
    def _one_query(self) -> "TextSearch":
        if (self.text is None) == (self.like is None):
            raise ValueError("give exactly one of text (words) and like (a product_id)")
        if self.like is not None and self.mode is not None:
            raise ValueError("mode is for a search by text; a search by like compares photos")
        return self

    def request(self, tenant: str) -> QueryRequest:
        if self.like is not None:
            return QueryRequest("like", like=check_product_id(self.like, "like"), limit=self.limit,
                                filter=self.filter, tenant=tenant)
        return QueryRequest("text", text=self.text, mode=self.mode or DEFAULT_MODE, limit=self.limit,
                            filter=self.filter, tenant=tenant)


class SearchResult(BaseModel):
    product_id: str
    score: float
    name: str | None
    description: str | None
    metadata: dict[str, Any]
    photo_index: int = Field(description="The product's photo that scored best.")


class SearchResponse(BaseModel):
    results: list[SearchResult]
    took_ms: float


async def require_worker(queue) -> None:
    if not await queue.live_workers():
        raise ApiError(503, "no_worker", "no worker is running to answer queries", headers={"Retry-After": "5"})


async def ask_workers(queue, settings, request: QueryRequest) -> QueryReply:
    await require_worker(queue)
    try:
        reply = await queue.ask(request, settings.search_timeout)
    except LaneFull:
        raise ApiError(503, "search_busy", "too many queries are waiting for a worker",
                       headers={"Retry-After": "1"}) from None
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


@router.post("/api/v1/search", response_model=SearchResponse, responses={404: {}, 422: {}, 503: {}, 504: {}})
async def search_text(body: TextSearch, queue: Queue, settings: Settings, caller: CallerOf) -> dict:
    check_filter(body.filter)
    return found(await ask_workers(queue, settings, body.request(tenant_of(caller))))


@router.post("/api/v1/search/image", response_model=SearchResponse,
             responses={413: {}, 415: {}, 422: {}, 503: {}, 504: {}})
async def search_image(queue: Queue, settings: Settings, caller: CallerOf,
                       image_file: Annotated[UploadFile | None, File()] = None,
                       image_url: Annotated[str | None, Form()] = None,
                       limit: Annotated[int, Form(ge=1, le=100)] = 10,
                       filter: Annotated[str | None, Form()] = None) -> dict:
    url = one_image_source(image_file is not None, image_url)
    conditions = check_filter(parse_object(filter, "filter", settings.max_metadata_bytes))
    tenant = tenant_of(caller)
    if url:  # the worker's query lane fetches it, under the same rules as indexing
        request = QueryRequest("image", image_url=url, limit=limit, filter=conditions, tenant=tenant)
    else:
        image, _ = await read_upload(image_file, settings.max_upload_bytes, settings.max_image_pixels)
        request = QueryRequest("image", image=image, limit=limit, filter=conditions, tenant=tenant)
    return found(await ask_workers(queue, settings, request))


@router.get("/api/v1/products/{product_id}", responses={404: {}, 503: {}, 504: {}})
async def get_product(product_id: str, queue: Queue, settings: Settings, caller: CallerOf) -> dict:
    reply = await ask_workers(queue, settings, QueryRequest("get", product_id=check_product_id(product_id),
                                                            tenant=tenant_of(caller)))
    return reply.product


@router.delete("/api/v1/products/{product_id}", responses={404: {}, 503: {}, 504: {}})
async def delete_product(product_id: str, queue: Queue, settings: Settings, caller: CallerOf) -> dict:
    """Delete the product's point, and cancel its uploads still queued or in progress: a
    tombstone version makes every earlier job of the product ``superseded``. 404 when there
    was neither a point nor a pending upload."""
    await require_worker(queue)
    tenant = tenant_of(caller)
    version, pending = await queue.tombstone(check_product_id(product_id), tenant)
    try:
        await ask_workers(queue, settings, QueryRequest("delete", product_id=product_id, version=version,
                                                        tenant=tenant))
    except ApiError as exc:
        if exc.status != 404:
            raise
        if not pending:  # the version still says where this delete stands among the uploads
            raise ApiError(404, exc.code, exc.message, extra={"version": version}) from None
    return {"deleted": True, "product_id": product_id, "version": version}
