"""One error shape everywhere: ``{"error": {"code", "message", "field"}}``. Never a stack trace."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.queue import ClusterUnavailable, Unavailable

log = logging.getLogger("clipq.api")

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large",
               415: "unsupported_media_type", 422: "invalid_request", 429: "queue_full", 503: "unavailable",
               504: "timeout"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None, extra: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers, self.extra = headers, extra or {}


def error_body(code: str, message: str, field: str | None = None) -> dict:
    return {"error": {"code": code, "message": message, "field": field}}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None, extra: dict | None = None) -> JSONResponse:
    return JSONResponse({**(extra or {}), **error_body(code, message, field)}, status_code=status,
                        headers=headers)


def _field_of(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return parts[0] if parts else None


async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers, exc.extra)


async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    field = _field_of(tuple(first.get("loc", ())))
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    return error_response(422, "invalid_field", message, field)


async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "error"), str(exc.detail),
                          headers=getattr(exc, "headers", None))


def cause(exc: BaseException) -> str:
    """An error's class, message and node: ``MaxConnectionsError`` has no message at all."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    node = getattr(getattr(exc, "connection", None), "name", None)  # a cluster node, where known
    return f"{text} (node {node})" if isinstance(node, str) else text


class RefusalLog:
    """Every 503 that a Redis error causes is logged with its cause, at most one line per
    ``every_s``: the first at once, those within the next ``every_s`` counted by cause in one
    line at its end."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self.held: Counter[str] = Counter()
        self.quiet_until = 0.0

    def note(self, exc: BaseException, where: str) -> None:
        now = time.monotonic()
        if now >= self.quiet_until and not self.held:
            log.warning("503 redis_unavailable (%s): %s", where, cause(exc))
            self.quiet_until = now + self.every_s
            return
        if not self.held:
            asyncio.get_running_loop().call_later(self.quiet_until - now, self.flush)
        self.held[f"{where}: {cause(exc)}"] += 1

    def flush(self) -> None:
        if self.held:
            log.warning("503 redis_unavailable x%d in the last %gs: %s", sum(self.held.values()), self.every_s,
                        "; ".join(f"{n} x {what}" for what, n in self.held.most_common(5)))
            self.held.clear()
            self.quiet_until = time.monotonic() + self.every_s


refusals = RefusalLog()


async def on_redis_error(request: Request, exc: Unavailable) -> JSONResponse:
    refusals.note(exc, f"{request.method} {request.url.path}")
    return error_response(503, "redis_unavailable", "the job store (Redis) is unavailable; try again shortly",
                          headers={"Retry-After": "5"})


async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")
    return error_response(500, "internal_error", "internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Unavailable, on_redis_error)
    app.add_exception_handler(ClusterUnavailable, on_redis_error)
    app.add_exception_handler(Exception, on_unexpected)
