"""Search filters, checked at the door: only exact matches the vector store can evaluate.

A filter is an object of ``key: value``: ``product_id`` or a ``metadata`` key, matched exactly
by Qdrant. Values are strings, integers (64-bit) and booleans. A float is refused: an exact
match on a float is no sound search (``1.1 + 2.2 != 3.3``) and Qdrant's exact match has no
float kind. Keys are what Qdrant reads as a plain path: names of ASCII letters, digits, ``_``
and ``-``, joined by dots (a dot reaches into nested metadata), 64 characters at most; any
other character makes Qdrant's path parser raise. Anything else is a 422 naming ``filter``,
before any worker sees the query.
"""
from __future__ import annotations

import re
from typing import Any

from api.errors import ApiError

MAX_KEYS = 16
MAX_VALUE_CHARS = 1024
MAX_KEY_CHARS = 64
KEY = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
INT64 = range(-(2**63), 2**63)


def _problem(key: Any, value: Any) -> str | None:
    if not isinstance(key, str) or len(key) > MAX_KEY_CHARS or not KEY.fullmatch(key):
        return (f"filter key {str(key)[:70]!r} must be 1 to {MAX_KEY_CHARS} characters: names of letters, "
                "digits, _ and - joined by dots")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if value in INT64 else f"filter.{key}: the integer is outside the 64-bit range"
    if isinstance(value, str):
        return None if len(value) <= MAX_VALUE_CHARS else \
            f"filter.{key}: the string is over {MAX_VALUE_CHARS} characters"
    if isinstance(value, float):
        return f"filter.{key}: floats cannot be matched exactly; use a string, an integer or a boolean"
    return f"filter.{key}: values must be a string, an integer or a boolean, not {type(value).__name__}"


def check_filter(value: Any) -> dict[str, str | int | bool]:
    """Return the filter, or raise a 422 ``ApiError`` that names ``filter`` and says what is wrong."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_field", "filter must be an object of key: value", "filter")
    if len(value) > MAX_KEYS:
        raise ApiError(422, "invalid_field", f"filter has {len(value)} keys; the limit is {MAX_KEYS}", "filter")
    for key, item in value.items():
        if problem := _problem(key, item):
            raise ApiError(422, "invalid_field", problem, "filter")
    return value
