"""A local HTTP server for the image_url tests: http.server in a thread, on 127.0.0.1.

Paths: ``/photo`` (the photo), ``/hop/N`` (N redirects, then the photo), ``/elsewhere`` (a
redirect to 127.0.0.2), ``/missing`` (404), ``/flaky`` (500 the first time, then the photo),
``/slow`` (silent for ``slow_s``, then the photo), ``/trickle`` (the photo one byte every
0.1 s), ``/huge`` (an endless body without a length), ``/text`` (not an image).
"""
from __future__ import annotations

import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ImageServer:
    def __init__(self, photo: bytes, slow_s: float = 2.0, tls: ssl.SSLContext | None = None) -> None:
        self.photo, self.slow_s = photo, slow_s
        self.hits: Counter[str] = Counter()
        self.hosts: list[str] = []
        self.huge_sent = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    def __enter__(self) -> "ImageServer":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return self.base + path

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.hits[self.path] += 1
                server.hosts.append(self.headers.get("Host", ""))
                server.answer(self)

        return Handler

    def answer(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path
        if path == "/photo":
            send(h, 200, self.photo)
        elif path.startswith("/hop/"):
            n = int(path.rsplit("/", 1)[1])
            redirect(h, "/photo" if n <= 1 else f"/hop/{n - 1}")
        elif path == "/elsewhere":
            redirect(h, f"http://127.0.0.2:{self.port}/photo")
        elif path == "/missing":
            send(h, 404, b"not here")
        elif path == "/flaky":
            send(h, 500, b"oops") if self.hits[path] == 1 else send(h, 200, self.photo)
        elif path == "/slow":
            time.sleep(self.slow_s)
            send(h, 200, self.photo)
        elif path == "/trickle":
            self._trickle(h)
        elif path == "/huge":
            self._huge(h)
        else:
            send(h, 200, b"<html>this is not an image</html>")

    def _trickle(self, h) -> None:
        head(h, 200, len(self.photo))
        try:
            for i in range(len(self.photo)):
                h.wfile.write(self.photo[i:i + 1])
                h.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    def _huge(self, h) -> None:
        h.send_response(200)
        h.send_header("Connection", "close")  # no length: the body runs until the connection closes
        h.end_headers()
        block = self.photo[:65536].ljust(65536, b"\0")
        try:
            for _ in range(1024):  # 64 MiB at most
                h.wfile.write(block)
                self.huge_sent += len(block)
        except OSError:
            pass


def head(h, status: int, length: int) -> None:
    h.send_response(status)
    h.send_header("Content-Length", str(length))
    h.end_headers()


def send(h, status: int, body: bytes) -> None:
    try:
        head(h, status, len(body))
        h.wfile.write(body)
    except OSError:  # the fetcher gave up (a timeout) and closed the connection
        pass


def redirect(h, location: str) -> None:
    h.send_response(302)
    h.send_header("Location", location)
    h.send_header("Content-Length", "0")
    h.end_headers()
