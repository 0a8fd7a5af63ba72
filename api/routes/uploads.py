"""``POST /api/v1/index-product-with-image``: validate, store, queue, answer 202."""
from __future__ import annotations

import hashlib
import time

from fastapi import APIRouter, Request, UploadFile
from fastapi.responses import JSONResponse

from api.deps import KEY_REQUIRED
from api.errors import ApiError
from api.form_fields import file_field, text_field
from api.forms import read_form
from api.metrics import UPLOAD_ROUTE
from api.queue import OverBudget, QueueFull
from api.validation import (MAX_DESCRIPTION, MAX_NAME, check_image, check_nesting, check_product_id, check_text,
                            one_image_source, parse_object)
from batcher.queue.jobs import JobSpec

router = APIRouter(tags=["indexing"])
PATH = UPLOAD_ROUTE  # served by api.lane.DirectRoute (see api/main.py); declared here for OpenAPI too


def _text(title: str, nullable: bool = False, binary: bool = False) -> dict:
    kind = {"type": "string", **({"contentMediaType": "application/octet-stream"} if binary else {})}
    return {"anyOf": [kind, {"type": "null"}], "title": title} if nullable else {**kind, "title": title}


# The form, for the OpenAPI document: the route reads it itself (api/forms.py), not FastAPI.
FORM = {"title": "Body_index_product_api_v1_index_product_with_image_post", "type": "object",
        "required": ["product_id", "name"],
        "properties": {"product_id": _text("Product Id"), "name": _text("Name"),
                       "image_file": _text("Image File", nullable=True, binary=True),
                       "image_url": _text("Image Url", nullable=True),
                       "description": _text("Description") | {"default": ""},
                       "metadata": _text("Metadata", nullable=True)}}
OPENAPI = {"requestBody": {"content": {"multipart/form-data": {"schema": FORM}}, "required": True}}


def check_size(data: bytes, max_bytes: int) -> bytes:
    if len(data) > max_bytes:
        raise ApiError(413, "payload_too_large", f"the image is over the limit of {max_bytes} bytes", "image_file")
    return data


async def read_upload(upload: UploadFile, max_bytes: int, max_pixels: int) -> tuple[bytes, str]:
    """An image from FastAPI's ``UploadFile`` (the image search): its bytes and sniffed type."""
    data = check_size(await upload.read(max_bytes + 1), max_bytes)
    return data, check_image(data, max_pixels)


@router.post(PATH, status_code=202, dependencies=KEY_REQUIRED, response_model=dict,
             responses={413: {}, 415: {}, 422: {}, 429: {}, 503: {}}, openapi_extra=OPENAPI)
async def index_product(request: Request) -> JSONResponse:
    """The answer is a ``JSONResponse`` made here: FastAPI then skips validating and encoding a dict."""
    settings, queue, metrics = request.app.state.settings, request.app.state.queue, request.app.state.metrics
    form = await read_form(request)
    product_id, name = text_field(form, "product_id"), text_field(form, "name")
    image_file, image_url = file_field(form, "image_file"), text_field(form, "image_url", None)
    description, metadata = text_field(form, "description", ""), text_field(form, "metadata", None)
    url = one_image_source(image_file is not None, image_url)
    spec, image = _validate(settings, product_id, name, description, metadata, image_file, url)
    start = time.perf_counter()
    try:
        job_id, version = await queue.enqueue(spec, image)
    except QueueFull as exc:
        raise ApiError(429, "queue_full", f"the queue is full ({exc.depth} jobs); retry later",
                       headers={"Retry-After": "30"}) from None
    except OverBudget as exc:
        raise ApiError(429, "queue_bytes_full", f"the queue holds {exc.held} bytes of images; this one "
                       f"({exc.size} bytes) would pass MAX_QUEUE_BYTES ({exc.max_bytes}); retry later",
                       headers={"Retry-After": "30"}) from None
    metrics.enqueue.observe(time.perf_counter() - start)
    return JSONResponse({"status": "queued", "job_id": job_id, "product_id": product_id,
                         "message": "Product queued for indexing", "processing_mode": "async",
                         "status_url": f"/api/v1/queue/status/{job_id}", "version": version}, status_code=202)


def _validate(settings, product_id, name, description, metadata, image_file,
              image_url: str | None) -> tuple[JobSpec, bytes]:
    check_product_id(product_id)
    check_text(name, "name", MAX_NAME)
    check_text(description, "description", MAX_DESCRIPTION)
    meta = check_nesting(parse_object(metadata, "metadata", settings.max_metadata_bytes), "metadata",
                         settings.max_metadata_depth)
    if image_url:  # fetched by the worker: no bytes in Redis, the sha256 comes once fetched
        return JobSpec(product_id, name, description, meta, "", "", image_url=image_url), b""
    image = check_size(image_file, settings.max_upload_bytes)
    content_type = check_image(image, settings.max_image_pixels)
    spec = JobSpec(product_id=product_id, name=name, description=description, metadata=meta,
                   image_sha256=hashlib.sha256(image).hexdigest(), content_type=content_type)
    return spec, image
