"""Assemble a worker: Redis, the model, the vector store, metrics, heartbeat, query lane.

Everything is created here at start-up, never at import. Tests use ``WorkerApp.start``
with their own settings and a fresh metrics registry.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import redis
from prometheus_client import CollectorRegistry, start_http_server

from batcher.fetch import UrlFetcher
from batcher.heartbeat import Heartbeat
from batcher.metrics import WorkerMetrics
from batcher.queries import QueryServer
from batcher.queue.connect import sync_client
from batcher.queue.consumer import JobConsumer
from batcher.settings import WorkerSettings
from batcher.stages.ledger import Totals
from batcher.status import WorkerStatus
from batcher.store import StoreLocked, VectorStore
from batcher.worker import Worker
from models.clip import ClipEncoder, WeightsUnavailable, load_encoder

log = logging.getLogger("clipq.worker")


class StartupError(RuntimeError):
    """The worker cannot start; the message says why and how to fix it."""


def connect_redis(url: str, cluster: bool = False) -> redis.Redis:
    client = sync_client(url, cluster, socket_connect_timeout=5, socket_keepalive=True, health_check_interval=30)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StartupError(f"cannot reach Redis at {url}: {exc}") from None
    return client


@dataclass
class WorkerApp:
    settings: WorkerSettings
    redis: redis.Redis
    encoder: ClipEncoder
    store: VectorStore
    metrics: WorkerMetrics
    stop: threading.Event

    @classmethod
    def start(cls, settings: WorkerSettings, *, stop: threading.Event | None = None,
              registry: CollectorRegistry | None = None, encoder: ClipEncoder | None = None) -> "WorkerApp":
        client = connect_redis(settings.redis_url, settings.redis_cluster)
        if encoder is None:
            try:
                encoder = load_encoder(settings.clip_model, settings.clip_pretrained, settings.clip_device,
                                       settings.clip_seed, settings.clip_cache_dir)
            except WeightsUnavailable as exc:
                raise StartupError(str(exc)) from None
            encoder.warm_up(settings.worker_batch_size if encoder.device.type == "cuda" else 1)
        fields = tuple(f for f in settings.qdrant_indexed_fields.split(",") if f)
        try:
            store = VectorStore.open(settings.qdrant_url, settings.qdrant_path, settings.qdrant_collection,
                                     encoder.dim, settings.qdrant_api_key, fields, settings.qdrant_shards,
                                     settings.qdrant_replicas)
        except StoreLocked as exc:
            raise StartupError(str(exc)) from None
        metrics = WorkerMetrics(registry or CollectorRegistry())
        metrics.info.labels(settings.worker_id, str(encoder.device), encoder.name).set(1)
        if settings.worker_metrics_port and registry is None:
            try:
                start_http_server(settings.worker_metrics_port, registry=metrics.registry)
            except OSError as exc:
                store.close()
                raise StartupError(f"cannot serve metrics on port {settings.worker_metrics_port} ({exc}): "
                                   "give each worker on a host its own WORKER_METRICS_PORT, or 0 for none") from None
            log.info("metrics on :%d/metrics", settings.worker_metrics_port)
        return cls(settings, client, encoder, store, metrics, stop or threading.Event())

    def run(self, burst: bool = False, max_jobs: int | None = None) -> Totals:
        s = self.settings
        consumer = JobConsumer(self.redis, s, s.worker_id)
        worker = Worker(s, consumer, self.encoder, self.store, self.metrics, burst=burst,
                        max_jobs=max_jobs, stop=self.stop)
        queries = QueryServer(self.redis, consumer.keys, self.encoder, self.store, self.metrics,
                              s.max_image_pixels, self.stop, s.worker_id, poll_s=s.worker_poll_interval,
                              fetcher=UrlFetcher(s.fetch_limits), fetch_threads=s.image_url_fetch_threads)
        queries.start()
        heartbeat = Heartbeat(consumer, s.worker_heartbeat_ttl, WorkerStatus(s, self.encoder, worker, queries))
        heartbeat.beat_now()
        heartbeat.start()
        log.info("worker %s ready: batch<=%d, window %.0fms, %s", s.worker_id, s.worker_batch_size,
                 s.worker_max_wait_ms, "burst" if burst else "serving")
        try:
            return worker.run()
        finally:
            queries.stop()
            heartbeat.stop()
            self.store.close()
