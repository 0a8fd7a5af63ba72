"""The worker's settings groups: one frozen dataclass per stage, each taken by the code that
uses it instead of the whole ``WorkerSettings``.

``WorkerSettings`` (batcher/settings.py) reads the environment once and builds every group,
so defaults and limits are declared there only. The store's group is ``StoreConfig``
(batcher/store/config.py), the queue's ``QueueConfig`` (batcher/queue/config.py), an
``image_url`` fetch's ``FetchLimits`` (batcher/fetch.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from batcher.fetch import FetchLimits


@dataclass(frozen=True)
class BatchConfig:
    """The claim and infer stages: WORKER_BATCH_SIZE, WORKER_MAX_WAIT_MS, WORKER_POLL_INTERVAL,
    WORKER_OOM_COOLDOWN."""

    max_batch: int
    max_wait_ms: float
    poll_interval_s: float
    oom_cooldown_s: float


@dataclass(frozen=True)
class DecodeConfig:
    """The decoders: WORKER_DECODE_THREADS, WORKER_DECODE_DEVICE, WORKER_DECODE_MEMORY,
    MAX_IMAGE_PIXELS."""

    threads: int
    device: str  # cpu or cuda
    memory: int  # bytes of pixels all decode threads may hold at once
    max_pixels: int


@dataclass(frozen=True)
class FetchConfig:
    """``image_url`` fetches (claim stage and query lane): IMAGE_URL_*, MAX_UPLOAD_BYTES."""

    limits: FetchLimits
    threads: int


@dataclass(frozen=True)
class RetryConfig:
    """The finish stage's retry delays: RETRY_BACKOFF_BASE_MS, RETRY_BACKOFF_MAX_MS
    (MAX_ATTEMPTS is the queue's, in ``QueueConfig``)."""

    backoff_base_ms: int
    backoff_max_ms: int


@dataclass(frozen=True)
class LivenessConfig:
    """Heartbeat, reaper, watchdog and shutdown: WORKER_HEARTBEAT_TTL, WORKER_REAPER_INTERVAL
    (resolved: half the TTL when unset), WORKER_STALL_TIMEOUT, WORKER_SHUTDOWN_GRACE."""

    heartbeat_ttl_s: float
    reaper_interval_s: float
    stall_timeout_s: float
    shutdown_grace_s: float


@dataclass(frozen=True)
class ModelConfig:
    """The CLIP model (``models.clip.load_encoder``): CLIP_*."""

    model: str
    pretrained: str
    seed: int
    device: str
    precision: str
    pin_memory: bool
    compile: str
    cache_dir: str | None


@dataclass(frozen=True)
class DuplicateConfig:
    """Near-duplicate photos at ingest (batcher/duplicates/): WORKER_DUPLICATE_MAX_DISTANCE,
    WORKER_DUPLICATE_MAX_LISTED (0: no lookup), WORKER_DUPLICATE_MIN_COSINE (0: no CLIP check)."""

    max_distance: int
    max_listed: int
    min_cosine: float = 0.0
