"""``POST /api/v1/index-product-with-image``: validate, store, queue, answer 202."""
from __future__ import annotations

import hashlib
import time
from dataclasses import replace

from fastapi import APIRouter, Request, UploadFile
from fastapi.responses import JSONResponse

from api.callbacks import NO_HOOKS, callback_for, hooks_of
from api.errors import ApiError
from api.form_fields import FormField, FormSpec
from api.forms import read_form
from api.lane import declare
from api.metrics import UPLOAD_ROUTE
from api.queue import NotReplicated, OverBudget, QueueFull
from api.security import api_key, book_of, tenant_of
from api.validation import MAX_PRODUCT_ID, check_image, check_nesting, check_product_id, one_image_source, parse_object
from batcher.queue.jobs import JobSpec

router = APIRouter(tags=["indexing"])


def _metadata(raw: str | None, settings) -> dict:
    return check_nesting(parse_object(raw, "metadata", settings.max_metadata_bytes), "metadata",
                         settings.max_metadata_depth)


# The form, read by the route itself (api/forms.py), not by FastAPI: its one declaration.
FORM = FormSpec("Body_index_product_api_v1_index_product_with_image_post", (
    FormField("product_id", f"1 to {MAX_PRODUCT_ID} letters, digits and . _ : - (uploading one again replaces it).",
              required=True, max_length=MAX_PRODUCT_ID, check=lambda value, _: check_product_id(value)),
    FormField("name", "The product's name.", required=True, max_length=512),
    FormField("image_file", "The photo: JPEG, PNG or WebP, judged by its content. Give it or image_url.",
              file=True),
    FormField("image_url", "An http(s) URL the worker fetches the photo from, instead of image_file."),
    FormField("description", "Free text, indexed with the product.", default="", max_length=8192),
    FormField("metadata", "A JSON object, kept with the product and matched by search filters.",
              check=_metadata),
    FormField("callback_url", "An http(s) URL that receives the job's status document, signed, when the job "
              "ends (see Webhooks). Unset: the tenant's webhook_url, if set. Checked once the tenant is known "
              "(callback_for)."),
))


def check_size(data: bytes, max_bytes: int) -> bytes:
    if len(data) > max_bytes:
        raise ApiError(413, "payload_too_large", f"the image is over the limit of {max_bytes} bytes", "image_file")
    return data


async def read_upload(upload: UploadFile, max_bytes: int, max_pixels: int) -> tuple[bytes, str]:
    """An image from FastAPI's ``UploadFile`` (the image search): its bytes and sniffed type."""
    data = check_size(await upload.read(max_bytes + 1), max_bytes)
    return data, check_image(data, max_pixels)


async def index_product(request: Request) -> JSONResponse:
    """The answer is a ``JSONResponse`` made here: FastAPI then skips validating and encoding a dict."""
    settings, queue, metrics = request.app.state.settings, request.app.state.queue, request.app.state.metrics
    form = FORM.read(await read_form(request))
    url = one_image_source(form["image_file"] is not None, form["image_url"])
    checked = FORM.checked(form, settings)
    spec, image = _validate(settings, checked, url)
    # the tenant: set by the api_key guard
    tenant = tenant_of(request.state.caller)
    hooks = hooks_of(book_of(request), settings, tenant) or NO_HOOKS  # an admin's ?tenant= may name none
    callback = callback_for(checked["callback_url"], hooks, tenant, settings)
    spec = replace(spec, tenant=tenant, callback_url=callback)
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
    except NotReplicated as exc:
        raise _not_replicated(exc) from None
    metrics.enqueue.observe(time.perf_counter() - start)
    return JSONResponse({"status": "queued", "job_id": job_id, "product_id": spec.product_id,
                         "message": "Product queued for indexing", "processing_mode": "async",
                         "status_url": f"/api/v1/queue/status/{job_id}", "version": version}, status_code=202)


# served by api.lane.DirectRoute (see api/main.py), on the router for the OpenAPI document
LANE = declare(router, "POST", UPLOAD_ROUTE, index_product, guards=[api_key], status_code=202, response_model=dict,
               responses={413: {}, 415: {}, 422: {}, 429: {}, 503: {}}, openapi_extra=FORM.openapi())


def _not_replicated(exc: NotReplicated) -> ApiError:
    """REDIS_WAIT_REPLICAS: the job was queued on the master, but too few replicas confirmed it."""
    return ApiError(503, "not_replicated", f"the upload was not confirmed by enough Redis replicas ({exc}): it may "
                    "or may not survive a failover of the Redis master. Upload it again: if both survive, the "
                    "newest upload wins (its version is higher)", headers={"Retry-After": "1"},
                    extra={"job_id": getattr(exc, "job_id", None), "replicas_confirmed": exc.confirmed,
                           "replicas_wanted": exc.wanted})


def _validate(settings, form: dict, image_url: str | None) -> tuple[JobSpec, bytes]:
    text = form["product_id"], form["name"], form["description"], form["metadata"]
    if image_url:  # fetched by the worker: no bytes in Redis, the sha256 comes once fetched
        return JobSpec(*text, "", "", image_url=image_url), b""
    image = check_size(form["image_file"], settings.max_upload_bytes)
    content_type = check_image(image, settings.max_image_pixels)
    return JobSpec(*text, image_sha256=hashlib.sha256(image).hexdigest(), content_type=content_type), image
