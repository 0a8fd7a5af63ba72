"""Assemble a worker: Redis, the model, the vector store, metrics, heartbeat, query lane.

Everything is created here at start-up, never at import. Tests use ``WorkerApp.start``
with their own settings and a fresh metrics registry.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from prometheus_client import CollectorRegistry

from batcher.config import ModelConfig
from batcher.gpu_decode import UnsupportedDecodeDevice, check_decode_device
from batcher.heartbeat import Heartbeat
from batcher.metrics import WorkerMetrics
from batcher.probes import Health, serve_probes
from batcher.queries import QueryServer
from batcher.queue.connect import sync_client
from batcher.queue.shards import make_consumer
from batcher.settings import WorkerSettings
from batcher.stages.ledger import Totals
from batcher.status import WorkerStatus
from batcher.store import StoreError, VectorStore, open_store
from batcher.watchdog import Watchdog
from batcher.worker import Worker
from models.acceleration import UnsupportedAcceleration
from models.clip import ClipEncoder, WeightsUnavailable, load_encoder
from models.precision import UnsupportedPrecision

log = logging.getLogger("clipq.worker")


class StartupError(RuntimeError):
    """The worker cannot start; the message says why and how to fix it."""


STALL_EXIT_CODE = 3


def _keepalive_options() -> dict[int, int]:
    """Probe an idle connection after 30 s, every 10 s, 3 times: a dead peer is noticed in a minute."""
    names = {"TCP_KEEPIDLE": 30, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 3}
    return {getattr(socket, n): v for n, v in names.items() if hasattr(socket, n)}


def connect_redis(url: str, cluster: bool = False, timeout_s: float | None = None) -> redis.Redis:
    """A client whose every call ends within ``timeout_s`` (the blocking waits included: pass
    their longest wait plus a margin), with TCP keepalive on."""
    client = sync_client(url, cluster, socket_connect_timeout=5, socket_timeout=timeout_s, socket_keepalive=True,
                         socket_keepalive_options=_keepalive_options(), health_check_interval=30)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StartupError(f"cannot reach Redis at {url}: {exc}") from None
    return client


def _load_encoder(clip: ModelConfig, max_batch: int) -> ClipEncoder:
    try:
        encoder = load_encoder(clip.model, clip.pretrained, clip.device, clip.seed, clip.cache_dir, clip.precision,
                               pin_memory=clip.pin_memory, compile=clip.compile, max_batch=max_batch)
    except (WeightsUnavailable, UnsupportedPrecision, UnsupportedAcceleration) as exc:
        raise StartupError(str(exc)) from None
    encoder.warm_up(max_batch if encoder.device.type == "cuda" else 1)
    return encoder


@dataclass
class WorkerApp:
    settings: WorkerSettings
    redis: redis.Redis
    encoder: ClipEncoder
    store: VectorStore
    metrics: WorkerMetrics
    stop: threading.Event
    health: Health = field(default_factory=Health)
    exit: Callable[[int], None] = os._exit  # what a stalled worker calls; tests record it instead

    @classmethod
    def start(cls, settings: WorkerSettings, *, stop: threading.Event | None = None,
              registry: CollectorRegistry | None = None, encoder: ClipEncoder | None = None) -> "WorkerApp":
        try:
            check_decode_device(settings.worker_decode_device)
        except UnsupportedDecodeDevice as exc:
            raise StartupError(str(exc)) from None
        client = connect_redis(settings.redis_url, settings.redis_cluster,
                               settings.worker_redis_timeout + settings.worker_poll_interval)
        encoder = encoder or _load_encoder(settings.clip, settings.worker_batch_size)
        try:
            store = open_store(settings.store, encoder.dim, encoder.name, encoder.fingerprint)
            if settings.worker_duplicate_max_listed:  # 0: no near-duplicate lookup
                store.warm()
        except StoreError as exc:
            raise StartupError(str(exc)) from None
        metrics = WorkerMetrics(registry or CollectorRegistry())
        metrics.info.labels(settings.worker_id, str(encoder.device), encoder.name, encoder.precision).set(1)
        health = Health()
        if settings.worker_metrics_port and registry is None:
            try:
                serve_probes(settings.worker_metrics_port, metrics.registry, health)
            except OSError as exc:
                store.close()
                raise StartupError(f"cannot serve metrics on port {settings.worker_metrics_port} ({exc}): "
                                   "give each worker on a host its own WORKER_METRICS_PORT, or 0 for none") from None
            log.info("metrics on :%d/metrics, probes on /livez and /readyz", settings.worker_metrics_port)
        return cls(settings, client, encoder, store, metrics, stop or threading.Event(), health)

    def run(self, burst: bool = False, max_jobs: int | None = None) -> Totals:
        s = self.settings  # the start-up's settings: each part below gets its own group
        consumer = make_consumer(self.redis, s.queue, s.worker_id)
        heartbeat: Heartbeat | None = None

        def on_stall(stage: str, seconds: float) -> None:
            heartbeat.stop()  # no more beats: the reaper of another worker takes our jobs back
            self.exit(STALL_EXIT_CODE)

        liveness, fetching = s.liveness, s.fetch
        watchdog = Watchdog(liveness.stall_timeout_s, on_stall)
        worker = Worker(consumer, self.encoder, self.store, self.metrics, batching=s.batching, decoding=s.decode,
                        fetching=fetching, retries=s.retries, liveness=liveness,
                        max_metadata_depth=s.max_metadata_depth, reuse_vectors=s.worker_reuse_vectors,
                        burst=burst, max_jobs=max_jobs, stop=self.stop, watchdog=watchdog, duplicates=s.duplicates)
        queries = QueryServer(self.redis, consumer.keys, self.encoder, self.store, self.metrics,
                              s.max_image_pixels, self.stop, s.worker_id, worker.claim.fetcher, fetching.threads,
                              poll_s=s.worker_poll_interval, budget=worker.claim.budget)
        queries.start()
        status = WorkerStatus(s.worker_id, s.worker_batch_size, liveness.heartbeat_ttl_s, self.encoder, worker, queries)
        heartbeat = Heartbeat(consumer, liveness.heartbeat_ttl_s, status)
        heartbeat.beat_now()
        heartbeat.start()
        self.health.stalled = lambda: watchdog.tripped
        self.health.lane_ok, self.health.heartbeat_ok = queries.healthy, heartbeat.is_alive
        watchdog.start()
        log.info("worker %s ready: batch<=%d, window %.0fms, %s", s.worker_id, s.worker_batch_size,
                 s.worker_max_wait_ms, "burst" if burst else "serving")
        try:
            return worker.run()
        finally:
            watchdog.stop()
            queries.stop()
            heartbeat.stop()
            self.store.close()
