"""API metrics. With PROMETHEUS_MULTIPROC_DIR set (several uvicorn workers) every process
writes its samples there and ``/metrics`` aggregates them; the queue depth is read from
Redis at scrape time, so it is right whichever process answers."""
from __future__ import annotations

import os
import time

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.enqueue = Histogram("clipq_enqueue_duration_seconds", "Time to store and queue one upload.",
                                 buckets=BUCKETS, registry=self.registry)
        self.http = Histogram("clipq_http_request_duration_seconds", "HTTP request duration.",
                              ["route", "method", "status"], buckets=BUCKETS, registry=self.registry)
        self.uploads = Counter("clipq_uploads_total", "Uploads by outcome.", ["outcome"], registry=self.registry)

    def exposition(self, depth: int | None) -> bytes:
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            scrape = CollectorRegistry()
            multiprocess.MultiProcessCollector(scrape)
        else:
            scrape = self.registry
        extra = CollectorRegistry()
        gauge = Gauge("clipq_queue_depth", "Jobs waiting in the queue (read from Redis at scrape time).",
                      registry=extra)
        if depth is not None:
            gauge.set(depth)
        up = Gauge("clipq_redis_up", "1 when Redis answered the scrape.", registry=extra)
        up.set(0 if depth is None else 1)
        return generate_latest(scrape) + generate_latest(extra)

    async def middleware(self, request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        self.http.labels(template, request.method, f"{response.status_code // 100}xx").observe(
            time.perf_counter() - start)
        return response
