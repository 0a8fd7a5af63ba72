"""One hot route served straight from ASGI, past FastAPI's router and dependency machinery.

The upload is most of the API's traffic. Starlette's exception middleware, FastAPI's exit-stack
middleware, the router's match over every route and FastAPI's per-request dependency solving
cost about a fifth of an upload's CPU (``scripts/bench_api_cpu.py``). ``DirectRoute`` answers
``method path`` itself: it runs the guards (the API-key check), then the endpoint, and turns an
exception into an answer with the app's own handlers, found as Starlette finds them. What no
handler takes (a bug) propagates to Starlette's error middleware, which answers 500 as for any
route. Every other request goes on to FastAPI. ``declare`` is the route's one declaration: it
puts the route on its router too, its guards as dependencies, for the OpenAPI document (FastAPI
never serves it), and returns the arguments of the ``DirectRoute`` that serves it.

Added first, it is the innermost of the app's middleware: inside the body limits, the metrics
and CORS, which so apply to it as to any route.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Sequence

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
Guard = Callable[[Request], Awaitable[None]]


def declare(router: APIRouter, method: str, path: str, endpoint: Endpoint, *, guards: Sequence[Guard] = (),
            **route: Any) -> dict[str, Any]:
    """``endpoint`` at ``method path``: on ``router`` for the OpenAPI document (``route``: the rest
    of ``add_api_route``'s arguments), and the keyword arguments of its ``DirectRoute``."""
    router.add_api_route(path, endpoint, methods=[method], dependencies=[Depends(g) for g in guards], **route)
    return {"method": method, "path": path, "endpoint": endpoint, "guards": guards}


class DirectRoute:
    def __init__(self, app: ASGIApp, method: str, path: str, endpoint: Endpoint, guards: Sequence[Guard] = ()) -> None:
        self.app, self.method, self.path = app, method, path
        self.endpoint, self.guards = endpoint, tuple(guards)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != self.method:
            return await self.app(scope, receive, send)
        request = Request(scope, receive, send)
        try:
            for guard in self.guards:
                await guard(request)
            response = await self.endpoint(request)
        except Exception as exc:
            handler = _handler(request, exc)
            if handler is None:
                raise
            response = await handler(request, exc)  # the app's handlers are coroutines (api/errors.py)
        await response(scope, receive, send)


def _handler(request: Request, exc: Exception):
    """The app's handler for ``exc`` by its classes, most specific first; never the catch-all
    ``Exception`` one, which is Starlette's error middleware's to call (and to log)."""
    handlers = request.app.exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None
