"""Checks on untrusted uploads, before anything is queued.

The type comes from the file's first bytes, never from its name or Content-Type; the
dimensions come from the header alone (Pillow's ``open`` is lazy), so a decompression
bomb is refused without decoding a pixel.
"""
from __future__ import annotations

import json
import re
from typing import Any

from api.errors import ApiError
from batcher.queue.addresses import UrlRefused, parse_url
from batcher.queue.jobs import nesting
from batcher.queue.images import ImageRejected, probe, sniff

MAX_PRODUCT_ID = 128
PRODUCT_ID = re.compile(rf"^[A-Za-z0-9._:-]{{1,{MAX_PRODUCT_ID}}}$")


def check_image(data: bytes, max_pixels: int, field: str = "image_file") -> str:
    """Return the sniffed content type, or raise a 415/422 ``ApiError``."""
    if not data:
        raise ApiError(422, "empty_file", "the image file is empty", field)
    content_type = sniff(data)
    if content_type is None:
        raise ApiError(415, "unsupported_media_type",
                       "the file is not a JPEG, PNG or WebP image (judged by its content, not its name)", field)
    try:
        probe(data, max_pixels).close()
    except ImageRejected as exc:  # public text is ours: Pillow's own words stay out of answers
        message = "cannot read the image header (not a valid JPEG, PNG or WebP)" if exc.unreadable else str(exc)
        raise ApiError(422, exc.code, message, field) from None
    return content_type


def check_product_id(value: str, field: str = "product_id") -> str:
    if not PRODUCT_ID.fullmatch(value):
        raise ApiError(422, "invalid_field",
                       f"product_id must be 1 to {MAX_PRODUCT_ID} characters of letters, digits and . _ : -", field)
    return value


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def parse_object(raw: str | None, field: str, max_bytes: int) -> dict[str, Any]:
    """A JSON object given as a string form field (``metadata``, ``filter``)."""
    if raw is None or raw.strip() == "":
        return {}
    if len(raw.encode()) > max_bytes:
        raise ApiError(422, "invalid_field", f"{field} is over the limit of {max_bytes} bytes", field)
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise ApiError(422, "invalid_field", f"{field} is not valid JSON: {exc}", field) from None
    except RecursionError:
        raise ApiError(422, "invalid_field", f"{field} is nested too deeply", field) from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_field", f"{field} must be a JSON object", field)
    return value


def check_nesting(value: Any, field: str, max_depth: int) -> Any:
    if (depth := nesting(value)) > max_depth:
        raise ApiError(422, "invalid_field", f"{field} nests {depth} levels deep; the limit is {max_depth}", field)
    return value


def one_image_source(has_file: bool, image_url: str | None) -> str | None:
    """Exactly one of ``image_file`` and ``image_url``; returns the checked URL, or None for a file.

    Only the form of the URL is checked here: where it leads is the worker's to check, after
    DNS resolution, on every redirect (``batcher.fetch``).
    """
    if has_file and image_url:
        raise ApiError(422, "invalid_field", "give image_file or image_url, not both", "image_url")
    if not has_file and not image_url:
        raise ApiError(422, "missing_field", "give image_file (a photo) or image_url (where to fetch it)",
                       "image_file")
    if image_url:
        check_url(image_url)
    return image_url or None


def check_url(image_url: str) -> str:
    """The form of an ``image_url`` (where it leads is the worker's to check), or a 422."""
    try:
        parse_url(image_url)
    except UrlRefused as exc:
        raise ApiError(422, "invalid_field", f"image_url: {exc}", "image_url") from None
    return image_url
