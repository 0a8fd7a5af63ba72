"""API keys: ``X-API-Key`` compared in constant time against every configured key."""
from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.security import APIKeyHeader

from api.errors import ApiError


def key_matches(given: str, keys: list[str]) -> bool:
    found = False
    for key in keys:  # no early exit: the time does not depend on which key matched
        found |= hmac.compare_digest(given.encode(), key.encode())
    return found


class KeyCheck(APIKeyHeader):
    """One dependency that both documents ``X-API-Key`` in OpenAPI and checks it (a single
    dependency per request rather than two nested ones)."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        await require_api_key(request)


api_key = KeyCheck(name="X-API-Key", scheme_name="APIKeyHeader", auto_error=False,
                   description="Required when API_KEY is set.")


async def require_api_key(request: Request) -> None:
    keys = request.app.state.settings.api_keys
    if not keys:
        return
    given = request.headers.get("x-api-key")
    if not given:
        raise ApiError(401, "unauthorized", "this endpoint needs an X-API-Key header",
                       headers={"WWW-Authenticate": "APIKey"})
    if not key_matches(given, keys):
        raise ApiError(403, "forbidden", "the X-API-Key is not valid")
