"""``POST /api/v1/index-product-with-image``: validate, store, queue, answer 202."""
from __future__ import annotations

import time
from dataclasses import replace

from fastapi import APIRouter, Request, UploadFile
from fastapi.responses import JSONResponse

from api import photos
from api.callbacks import NO_HOOKS, callback_for, hooks_of
from api.errors import ApiError
from api.form_fields import FormField, FormSpec
from api.forms import read_form
from api.lane import declare
from api.metrics import UPLOAD_ROUTE
from api.queue import NotReplicated, OverBudget, QueueFull, TenantQuotaFull
from api.photos import check_size
from api.quotas import tenant_quota, tenant_quota_error
from api.security import api_key, book_of, tenant_of
from api.validation import MAX_PRODUCT_ID, check_image, check_nesting, check_product_id, parse_object
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
    FormField("image_file", "A photo: JPEG, PNG or WebP, judged by its content. Repeat it for several photos "
              "(MAX_PHOTOS_PER_PRODUCT in all, with image_url); give it or image_url.", file=True, repeated=True),
    FormField("image_url", "An http(s) URL the worker fetches a photo from; repeatable. Photos are numbered "
              "image_file parts first, then image_url fields.", repeated=True),
    FormField("description", "Free text, indexed with the product.", default="", max_length=8192),
    FormField("metadata", "A JSON object, kept with the product and matched by search filters.",
              check=_metadata),
    FormField("callback_url", "An http(s) URL that receives the job's status document, signed, when the job "
              "ends (see Webhooks). Unset: the tenant's webhook_url, if set. Checked once the tenant is known "
              "(callback_for)."),
))


async def read_upload(upload: UploadFile, max_bytes: int, max_pixels: int) -> tuple[bytes, str]:
    """An image from FastAPI's ``UploadFile`` (the image search): its bytes and sniffed type."""
    data = check_size(await upload.read(max_bytes + 1), max_bytes)
    return data, check_image(data, max_pixels)


async def index_product(request: Request) -> JSONResponse:
    """The answer is a ``JSONResponse`` made here: FastAPI then skips validating and encoding a dict."""
    settings, queue, metrics = request.app.state.settings, request.app.state.queue, request.app.state.metrics
    form = FORM.read(await read_form(request))
    photos.count(form["image_file"], form["image_url"], settings.max_photos_per_product)
    checked = FORM.checked(form, settings)
    spec, image = _validate(settings, checked)
    # the tenant: set by the api_key guard
    tenant = tenant_of(request.state.caller)
    hooks = hooks_of(book_of(request), settings, tenant) or NO_HOOKS  # an admin's ?tenant= may name none
    callback = callback_for(checked["callback_url"], hooks, tenant, settings)
    spec = replace(spec, tenant=tenant, callback_url=callback)
    start = time.perf_counter()
    try:
        job_id, version = await queue.enqueue(spec, image, tenant_quota(request, spec.tenant))
    except QueueFull as exc:
        raise ApiError(429, "queue_full", f"the queue is full ({exc.depth} jobs); retry later",
                       headers={"Retry-After": "30"}) from None
    except OverBudget as exc:
        raise ApiError(429, "queue_bytes_full", f"the queue holds {exc.held} bytes of images; this one "
                       f"({exc.size} bytes) would pass MAX_QUEUE_BYTES ({exc.max_bytes}); retry later",
                       headers={"Retry-After": "30"}) from None
    except TenantQuotaFull as exc:
        raise tenant_quota_error(exc) from None
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


def _validate(settings, form: dict) -> tuple[JobSpec, bytes]:
    """The job of one upload: its photos' sha256s and types, the image key's value."""
    text = form["product_id"], form["name"], form["description"], form["metadata"]
    listed, image = photos.photos(form["image_file"], form["image_url"], settings.max_upload_bytes,
                                  settings.max_image_pixels)
    # image_url: photo 0's URL when no photo is uploaded (files come first): the job has no image
    # key, the worker fetches every photo (and a manual retry needs no stored image)
    first = listed[0]
    return JobSpec(*text, first.image_sha256, first.content_type, image_url=first.url,
                   photos=tuple(listed) if len(listed) > 1 else ()), image
