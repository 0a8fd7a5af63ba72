"""``POST /api/v1/index-product-with-image``: validate, store, queue, answer 202."""
from __future__ import annotations

import hashlib
import time
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from api.deps import KEY_REQUIRED, Metrics, Queue, Settings
from api.errors import ApiError
from api.queue import OverBudget, QueueFull
from api.validation import (MAX_DESCRIPTION, MAX_NAME, check_image, check_nesting, check_product_id, check_text,
                            one_image_source, parse_object)
from batcher.queue.jobs import JobSpec

router = APIRouter(tags=["indexing"])


async def read_upload(upload: UploadFile, max_bytes: int, max_pixels: int) -> tuple[bytes, str]:
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ApiError(413, "payload_too_large", f"the image is over the limit of {max_bytes} bytes", "image_file")
    return data, check_image(data, max_pixels)


@router.post("/api/v1/index-product-with-image", status_code=202, dependencies=KEY_REQUIRED,
             responses={413: {}, 415: {}, 422: {}, 429: {}, 503: {}})
async def index_product(settings: Settings, queue: Queue, metrics: Metrics,
                        product_id: Annotated[str, Form()], name: Annotated[str, Form()],
                        image_file: Annotated[UploadFile | None, File()] = None,
                        image_url: Annotated[str | None, Form()] = None,
                        description: Annotated[str, Form()] = "",
                        metadata: Annotated[str | None, Form()] = None) -> dict:
    url = one_image_source(image_file is not None, image_url)
    spec, image = await _validate(settings, product_id, name, description, metadata, image_file, url)
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
    return {"status": "queued", "job_id": job_id, "product_id": product_id,
            "message": "Product queued for indexing", "processing_mode": "async",
            "status_url": f"/api/v1/queue/status/{job_id}", "version": version}


async def _validate(settings, product_id, name, description, metadata, image_file,
                    image_url: str | None) -> tuple[JobSpec, bytes]:
    check_product_id(product_id)
    check_text(name, "name", MAX_NAME)
    check_text(description, "description", MAX_DESCRIPTION)
    meta = check_nesting(parse_object(metadata, "metadata", settings.max_metadata_bytes), "metadata",
                         settings.max_metadata_depth)
    if image_url:  # fetched by the worker: no bytes in Redis, the sha256 comes once fetched
        return JobSpec(product_id, name, description, meta, "", "", image_url=image_url), b""
    image, content_type = await read_upload(image_file, settings.max_upload_bytes, settings.max_image_pixels)
    spec = JobSpec(product_id=product_id, name=name, description=description, metadata=meta,
                   image_sha256=hashlib.sha256(image).hexdigest(), content_type=content_type)
    return spec, image
