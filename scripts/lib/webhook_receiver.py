"""A local webhook receiver for scripts.bench_webhooks and the tests: http.server in a thread
on 127.0.0.1, recording every POST. ``answers[path]``: the statuses to answer in turn (the last
one repeats; none: 200); a path in ``held`` waits for ``release`` before it answers."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when it arrived


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # socketserver's 5 drops concurrent connects: each then waits a SYN retry (1 s)
    daemon_threads = True


class Receiver:
    def __init__(self) -> None:
        self.answers: dict[str, list[int]] = {}
        self.held: set[str] = set()
        self.release = threading.Event()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "Receiver":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return self.base + path

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, n: int, timeout_s: float = 30) -> list[Received]:
        """The first ``n`` requests to ``path``, once they came (within ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while len(self.at(path)) < n:
            assert time.monotonic() < deadline, f"{path}: {len(self.at(path))} of {n} requests came"
            time.sleep(0.02)
        return self.at(path)[:n]

    def _answer(self, path: str) -> int:
        with self._lock:
            plan = self.answers.get(path) or [200]
            return plan.pop(0) if len(plan) > 1 else plan[0]

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.received.append(Received(self.path, dict(self.headers), body, time.time()))
                if self.path in receiver.held:
                    receiver.release.wait(60)
                self.send_response(receiver._answer(self.path))
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler
