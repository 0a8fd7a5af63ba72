"""Worker settings: environment variables, overridden by command-line flags.

Read once at start-up; each property builds one stage's group (batcher/config.py), and the
stages take their groups, never this class."""
from __future__ import annotations

import os
import socket
import uuid
from typing import Literal

from pydantic import Field, field_validator

from batcher.config import (BatchConfig, DecodeConfig, DuplicateConfig, FetchConfig, LivenessConfig, ModelConfig,
                            RetryConfig)
from batcher.fetch import FetchLimits
from batcher.queue.addresses import parse_networks
from batcher.queue.config import QueueSettings
from batcher.store.config import StoreConfig

Quantization = Literal["none", "int8"]
Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]  # models.precision.PRECISIONS, without torch
CompileMode = Literal["off", "compile", "cudagraphs"]  # models.acceleration.COMPILE_MODES
DecodeDevice = Literal["cpu", "cuda"]


def available_cpus(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """CPUs this process may use: its affinity, capped by a container's CPU quota (cgroup v2)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = open(cpu_max).read().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class WorkerSettings(QueueSettings):
    owned_prefixes = ("WORKER_", "CLIP_", "QDRANT_", "RETRY_", "IMAGE_URL_")

    worker_id: str = Field(default_factory=default_worker_id, pattern=r"^[A-Za-z0-9_.:-]{1,128}$",
                           description="Unique name of this worker (default: host-pid-random).")
    worker_batch_size: int = Field(32, ge=1, le=4096, description="Largest micro-batch (jobs per forward pass).")
    worker_max_wait_ms: float = Field(
        50, ge=0, le=60_000, description="How long a batch may wait for more jobs after its first one.")
    worker_poll_interval: float = Field(
        1.0, gt=0, le=60, description="Seconds an idle worker blocks on the queue between housekeeping rounds.")
    worker_decode_threads: int = Field(
        default_factory=lambda: min(8, available_cpus()), ge=1, le=64,
        description="Threads decoding images (default: the CPUs this container may use, at most 8).")
    worker_decode_device: DecodeDevice = Field(
        "cpu", description="`cpu`: Pillow in the decode threads; `cuda`: JPEGs decoded, resized and cropped on "
                           "the GPU in one batch (nvJPEG, `torchvision.io.decode_jpeg`), other formats and "
                           "JPEGs it cannot decode on the CPU. Not measured on a GPU yet: `cpu` stays the default.")
    worker_heartbeat_ttl: float = Field(
        30, gt=0, description="Seconds a heartbeat lives; a worker silent that long is presumed dead.")
    worker_reaper_interval: float | None = Field(
        None, gt=0, description="Seconds between reaper rounds (default: half the heartbeat TTL).")
    worker_shutdown_grace: float = Field(
        30, gt=0, description="Seconds a worker may take to finish its batch after SIGTERM.")
    worker_reuse_vectors: bool = Field(
        True, description="Skip the model for an image whose vector the store already holds (same bytes, "
                          "same model): its own product's (unchanged) or another product's (reused); and embed "
                          "an image carried by several jobs of one batch once (reused).")
    worker_metrics_port: int = Field(9100, ge=0, le=65535, description="Port of the worker's /metrics (0: off).")
    worker_oom_cooldown: float = Field(
        300, ge=0, description="Seconds the batch ceiling stays lowered after a device out-of-memory.")
    worker_stall_timeout: float = Field(
        600, ge=1, description="Seconds a batch may spend in one stage (decode, infer, upsert); a worker "
                               "stalled longer stops its heartbeat, fails /livez and exits 3.")
    worker_redis_timeout: float = Field(
        10, gt=0, le=300, description="Seconds a Redis call may take beyond its own blocking wait "
                                      "before it fails (TCP keepalive is on too).")
    worker_decode_memory: int = Field(
        1 << 30, ge=1 << 20, description="Bytes of pixels all decode threads may hold at once (bit depth and "
                                         "bands counted, from the header); a larger image fails alone.")
    worker_duplicate_max_distance: int = Field(
        10, ge=0, le=16, description="Near-duplicate photos: the largest Hamming distance between two perceptual "
                                     "hashes (of 64 bits) that counts as the same picture (measured: "
                                     "`python -m scripts.bench_duplicates`).")
    worker_duplicate_max_listed: int = Field(
        20, ge=0, le=1000, description="Near duplicates listed per photo, nearest first (0: no lookup; the hash "
                                       "is stored all the same).")
    worker_duplicate_min_cosine: float = Field(
        0.0, ge=0, le=1, description="Near-duplicate photos: above 0, a pair found by its hashes must also have "
                                     "CLIP vectors at least this close (cosine); meaningless with random weights.")
    retry_backoff_base_ms: int = Field(1000, ge=0, description="First retry delay; doubles each attempt.")
    retry_backoff_max_ms: int = Field(60_000, ge=0, description="Longest retry delay.")
    # -- image_url fetching (batcher/fetch.py) --
    image_url_allowed_networks: str = Field(
        "", description="Comma-separated CIDR networks an `image_url` may reach although they are loopback, "
                        "private, link-local, multicast, reserved or cloud metadata (refused by default).")
    image_url_connect_timeout: float = Field(5.0, gt=0, le=120, description="Seconds to connect to an `image_url` host.")
    image_url_read_timeout: float = Field(
        10.0, gt=0, le=300, description="Seconds an `image_url` answer may stay silent (per read).")
    image_url_total_timeout: float = Field(
        30.0, gt=0, le=600, description="Seconds a whole `image_url` fetch may take, redirects included.")
    image_url_fetch_threads: int = Field(16, ge=1, le=256, description="Threads fetching `image_url` images.")
    clip_model: str = Field("ViT-B-32", description="open_clip model name (`clipq-tiny` for tests).")
    clip_pretrained: str = Field(
        "laion2b_s34b_b79k",
        description="open_clip weight tag, a local checkpoint path, or `none` for seeded random weights.")
    clip_seed: int = Field(0, description="Seed of the random weights when CLIP_PRETRAINED=none.")
    clip_device: str = Field("auto", description="`auto` (CUDA if present, else CPU), `cpu`, `cuda:0`.")
    clip_precision: Precision = Field(
        "auto", description="`auto` (fp16 on CUDA, fp32 on CPU), `fp32`, `bf16`, `fp16` (CUDA, or a CPU with "
        "native bf16/fp16), `int8` (CPU only: dynamically quantised Linear layers).")
    clip_pin_memory: bool = Field(
        True, description="Copy each batch to the GPU from pinned (page-locked) memory, without blocking; "
                          "`false`: a plain copy. No effect on a CPU.")
    clip_compile: CompileMode = Field(
        "off", description="Image forward pass: `off` (eager); `compile` (`torch.compile`, CPU or CUDA, the "
                           "batch size dynamic: compiled for batch 1 and for the rest at start-up); `cudagraphs` "
                           "(CUDA only: a batch is padded to a bucket, powers of two from 8 and WORKER_BATCH_SIZE, "
                           "each captured at start-up). Not measured on a GPU yet: `off` stays the default.")
    clip_cache_dir: str | None = Field(None, description="Where downloaded weights are cached.")
    # -- the vector store (batcher/store/, batcher/README.md "The vector store") --
    qdrant_url: str | None = Field(None, description="Qdrant server URL; unset: the embedded store (Qdrant Edge) "
                                                     "in QDRANT_PATH.")
    qdrant_path: str = Field("./data/qdrant", description="Folder of the embedded store, one process at a time "
                                                          "(`:memory:`: a temporary folder, removed at exit).")
    qdrant_collection: str = Field("products", pattern=r"^[A-Za-z0-9_.-]{1,128}$",
                                   description="Qdrant collection name (the embedded store's subfolder).")
    qdrant_api_key: str | None = Field(None, description="Qdrant server API key.")
    qdrant_shards: int = Field(1, ge=1, le=1000, description="Shards of a new collection (Qdrant server).")
    qdrant_replicas: int = Field(1, ge=1, le=100, description="Replicas per shard of a new collection (Qdrant server).")
    qdrant_indexed_fields: str = Field(
        "", description="Comma-separated metadata keys to index for filters (both engines).")
    qdrant_hnsw_m: int = Field(16, ge=4, le=128, description="HNSW edges per node of a new collection: more is "
                                                             "better recall, more memory and a slower build.")
    qdrant_hnsw_ef_construct: int = Field(
        100, ge=8, le=1000, description="HNSW candidates while building the index of a new collection.")
    qdrant_hnsw_ef: int = Field(128, ge=1, le=10_000, description="HNSW candidates per search: more is better "
                                                                  "recall, slower searches.")
    qdrant_segment_points: int = Field(
        20_000, ge=1_000, le=10_000_000,
        description="Embedded store: points a segment takes, searched exactly, before its HNSW index is built. "
                    "The build holds the worker's process (about 4 s per 20,000 points on 2 cores).")
    qdrant_vectors_on_disk: bool = Field(
        False, description="Embedded store: vectors read from disk through the page cache, not held in RAM.")
    qdrant_quantization: Quantization = Field(
        "none", description="Vectors of a new collection: `int8` adds scalar-quantized copies (4x smaller, "
                            "searched first, rescored with the originals).")

    @field_validator("image_url_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)  # a ValueError naming the bad entry
        return value

    @property
    def batching(self) -> BatchConfig:
        return BatchConfig(self.worker_batch_size, self.worker_max_wait_ms, self.worker_poll_interval,
                           self.worker_oom_cooldown)

    @property
    def decode(self) -> DecodeConfig:
        return DecodeConfig(self.worker_decode_threads, self.worker_decode_device, self.worker_decode_memory,
                            self.max_image_pixels)

    @property
    def fetch(self) -> FetchConfig:
        return FetchConfig(FetchLimits(self.max_upload_bytes, self.image_url_connect_timeout,
                                       self.image_url_read_timeout, self.image_url_total_timeout,
                                       parse_networks(self.image_url_allowed_networks)),
                           self.image_url_fetch_threads)

    @property
    def retries(self) -> RetryConfig:
        return RetryConfig(self.retry_backoff_base_ms, self.retry_backoff_max_ms)

    @property
    def liveness(self) -> LivenessConfig:
        return LivenessConfig(self.worker_heartbeat_ttl, self.worker_reaper_interval or self.worker_heartbeat_ttl / 2,
                              self.worker_stall_timeout, self.worker_shutdown_grace)

    @property
    def duplicates(self) -> DuplicateConfig:
        return DuplicateConfig(self.worker_duplicate_max_distance, self.worker_duplicate_max_listed,
                               self.worker_duplicate_min_cosine)

    @property
    def clip(self) -> ModelConfig:
        return ModelConfig(self.clip_model, self.clip_pretrained, self.clip_seed, self.clip_device,
                           self.clip_precision, self.clip_pin_memory, self.clip_compile, self.clip_cache_dir)

    @property
    def store(self) -> StoreConfig:
        return StoreConfig(
            url=self.qdrant_url, path=self.qdrant_path, collection=self.qdrant_collection, api_key=self.qdrant_api_key,
            indexed_fields=tuple(f for f in self.qdrant_indexed_fields.split(",") if f), shards=self.qdrant_shards,
            replicas=self.qdrant_replicas, hnsw_m=self.qdrant_hnsw_m, hnsw_ef_construct=self.qdrant_hnsw_ef_construct,
            hnsw_ef=self.qdrant_hnsw_ef, segment_points=self.qdrant_segment_points,
            vectors_on_disk=self.qdrant_vectors_on_disk, quantization=self.qdrant_quantization)
