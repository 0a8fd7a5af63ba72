"""Guard request bodies while they stream in, without reading them whole: a body over the size
limit gets 413, and one that has not fully arrived within the read deadline gets 408 (a
trickling client must not hold a connection and a request slot for ever).

The same layer times every answer for the metrics (``observe``): one ASGI layer instead of two,
outside everything but Starlette's own error handler, so it sees the 408s and 413s it sends and
the unhandled 500s."""
from __future__ import annotations

import asyncio
import time
from typing import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response

MULTIPART_SLACK = 64 * 1024  # room for the form fields around the image


class _Refused(Exception):
    pass


Observe = Callable[[Scope, int, float], None]  # (scope, status, seconds)


class BodyLimits:
    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_s: float, observe: Observe | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes + MULTIPART_SLACK
        self.read_timeout_s = read_timeout_s
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._guard(scope, receive, send_status)
        finally:
            if self.observe is not None:
                self.observe(scope, status, time.perf_counter() - start)

    async def _guard(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._too_large()(scope, receive, send)
        deadline = asyncio.get_running_loop().time() + self.read_timeout_s
        seen, complete, answered = 0, False, False
        refusal: Response | None = None

        async def guarded_receive() -> Message:
            nonlocal seen, complete, refusal
            if complete:  # the body is in: later receives wait for a disconnect, with no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):  # no task per receive, unlike wait_for
                    message = await receive()
            except TimeoutError:
                refusal = self._too_slow()
                raise _Refused() from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.max_bytes:
                    refusal = self._too_large()
                    raise _Refused()
            return message

        async def guarded_send(message: Message) -> None:
            # the form parser may turn our exception into its own 400: answer with ours instead
            nonlocal answered
            if refusal is not None:
                if message["type"] == "http.response.start" and not answered:
                    answered = True
                    await refusal(scope, receive, send)
                return
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except _Refused:
            if not answered and refusal is not None:
                await refusal(scope, receive, send)

    def _too_large(self) -> Response:
        limit = self.max_bytes - MULTIPART_SLACK
        return error_response(413, "payload_too_large", f"the upload is over the limit of {limit} bytes",
                              "image_file", headers={"Connection": "close"})

    def _too_slow(self) -> Response:
        return error_response(408, "request_timeout",
                              f"the request body did not arrive within {self.read_timeout_s:g}s",
                              headers={"Connection": "close"})
