"""Checks on untrusted uploads, before anything is queued.

The type comes from the file's first bytes, never from its name or Content-Type; the
dimensions come from the header alone (Pillow's ``open`` is lazy), so a decompression
bomb is refused without decoding a pixel.
"""
from __future__ import annotations

import io
import json
import re
from typing import Any

from PIL import Image

from api.errors import ApiError

ACCEPTED = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WebP"}
PRODUCT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_NAME, MAX_DESCRIPTION = 512, 8192


def sniff(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_image(data: bytes, max_pixels: int, field: str = "image_file") -> str:
    """Return the sniffed content type, or raise a 415/422 ``ApiError``."""
    if not data:
        raise ApiError(422, "empty_file", "the image file is empty", field)
    content_type = sniff(data)
    if content_type is None:
        raise ApiError(415, "unsupported_media_type",
                       "the file is not a JPEG, PNG or WebP image (judged by its content, not its name)", field)
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG", "PNG", "WEBP")) as im:
            width, height = im.size
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours: same answer
        raise ApiError(422, "image_too_large", f"the image header claims over {max_pixels} pixels",
                       field) from None
    except Exception:  # hostile headers make Pillow raise many types; none may become a 500
        raise ApiError(422, "invalid_image", "cannot read the image header (not a valid JPEG, PNG or WebP)",
                       field) from None
    if width < 1 or height < 1:
        raise ApiError(422, "invalid_image", f"the image has no pixels ({width}x{height})", field)
    if width * height > max_pixels:
        raise ApiError(422, "image_too_large",
                       f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
                       field)
    return content_type


def check_product_id(value: str, field: str = "product_id") -> str:
    if not PRODUCT_ID.fullmatch(value):
        raise ApiError(422, "invalid_field",
                       "product_id must be 1 to 128 characters of letters, digits and . _ : -", field)
    return value


def check_text(value: str, field: str, limit: int) -> str:
    if len(value) > limit:
        raise ApiError(422, "invalid_field", f"{field} is {len(value)} characters; the limit is {limit}", field)
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


def nesting(value: Any) -> int:
    """How deep objects and lists nest in ``value`` (a scalar: 0, ``{}``: 1); no recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def check_nesting(value: Any, field: str, max_depth: int) -> Any:
    if (depth := nesting(value)) > max_depth:
        raise ApiError(422, "invalid_field", f"{field} nests {depth} levels deep; the limit is {max_depth}", field)
    return value
