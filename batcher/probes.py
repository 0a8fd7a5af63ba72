"""The worker's HTTP endpoints on ``WORKER_METRICS_PORT``: ``/metrics``, ``/livez``, ``/readyz``.

``/livez`` (the orchestrator's liveness probe) fails once the stall watchdog has given up on
this worker; ``/readyz`` also fails while its query lane or its heartbeat cannot run. They are
served from a thread of their own, so a stuck batch cannot answer for a healthy worker: the
answer comes from the watchdog, not from the thread serving it.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("clipq.worker")


class Health:
    """What the probes report. ``run()`` plugs in the live parts once they exist."""

    def __init__(self) -> None:
        self.stalled: Callable[[], bool] = lambda: False
        self.lane_ok: Callable[[], bool] = lambda: False        # no lane yet: not ready
        self.heartbeat_ok: Callable[[], bool] = lambda: False

    def live(self) -> bool:
        return not self.stalled()

    def ready(self) -> bool:
        return self.live() and self.lane_ok() and self.heartbeat_ok()


def serve_probes(port: int, registry: CollectorRegistry, health: Health,
                 host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the endpoints in a daemon thread; ``OSError`` if the port is taken."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/livez", "/readyz"):
                ok = health.live() if path == "/livez" else health.ready()
                self._send(200 if ok else 503, b"ok\n" if ok else b"unavailable\n", "text/plain")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # probes every few seconds: not worth a log line
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    return server
