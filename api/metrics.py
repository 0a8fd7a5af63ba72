"""API metrics. With PROMETHEUS_MULTIPROC_DIR set (several uvicorn workers) every process
writes its samples there and ``/metrics`` aggregates them; the queue depth is read from
Redis at scrape time (never stored in a process), so it is right whichever process answers."""
from __future__ import annotations

import os

from starlette.types import Scope
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
WEBHOOK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 4 * 3600)
UPLOAD_ROUTE = "/api/v1/index-product-with-image"


def upload_outcome(status: int) -> str:
    if status == 202:
        return "queued"
    if status == 429:
        return "queue_full"
    return "rejected" if status < 500 else "unavailable"


class _ScrapeTimeGauges:
    """Gauges computed for one scrape: never written to the multiprocess files."""

    def __init__(self, depths: list[int] | None) -> None:
        self.depths = depths

    def collect(self):
        depth = GaugeMetricFamily("clipq_queue_depth", "Jobs waiting in the queue, every shard together (read from "
                                                       "Redis at scrape time): what KEDA scales on.")
        by_shard = GaugeMetricFamily("clipq_queue_shard_depth", "Jobs waiting in each shard of the queue "
                                                                "(QUEUE_SHARDS).", labels=["shard"])
        if self.depths is not None:
            depth.add_metric([], sum(self.depths))
            for shard, n in enumerate(self.depths):
                by_shard.add_metric([str(shard)], n)
        yield depth
        yield by_shard
        yield GaugeMetricFamily("clipq_redis_up", "1 when Redis answered the scrape.",
                                value=0 if self.depths is None else 1)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.enqueue = Histogram("clipq_enqueue_duration_seconds", "Time to store and queue one upload.",
                                 buckets=BUCKETS, registry=self.registry)
        self.http = Histogram("clipq_http_request_duration_seconds", "HTTP request duration.",
                              ["route", "method", "status"], buckets=BUCKETS, registry=self.registry)
        self.uploads = Counter("clipq_uploads_total", "Uploads by outcome.", ["outcome"], registry=self.registry)
        self.webhooks = Counter("clipq_webhook_deliveries_total", "Webhook delivery attempts by outcome: "
                                "delivered, retried (another attempt is due) or dead (dead-lettered).",
                                ["outcome"], registry=self.registry)
        self.webhook_latency = Histogram("clipq_webhook_delivery_seconds", "From a job's end to the delivery "
                                         "of its webhook (Redis time).", buckets=WEBHOOK_BUCKETS,
                                         registry=self.registry)

    def exposition(self, depths: list[int] | int | None) -> bytes:
        """``depths``: the pending jobs of each shard (an int: one shard), None when Redis failed."""
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            scrape = CollectorRegistry()
            multiprocess.MultiProcessCollector(scrape)
        else:
            scrape = self.registry
        extra = CollectorRegistry()
        extra.register(_ScrapeTimeGauges([depths] if isinstance(depths, int) else depths))
        return generate_latest(scrape) + generate_latest(extra)

    def record(self, scope: Scope, status: int, seconds: float) -> None:
        """One answer, timed by the outermost layer (``api.limits.BodyLimits``): the body-size
        413s and unhandled 500s included."""
        route = getattr(scope.get("route"), "path", None)
        if route is None and scope["path"] == UPLOAD_ROUTE:
            route = UPLOAD_ROUTE  # served by api.lane.DirectRoute, or refused before (body too large)
        self.http.labels(route or "unmatched", scope["method"], f"{status // 100}xx").observe(seconds)
        if route == UPLOAD_ROUTE and scope["method"] == "POST":
            self.uploads.labels(upload_outcome(status)).inc()
