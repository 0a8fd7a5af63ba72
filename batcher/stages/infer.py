"""Infer stage (the main thread): one forward pass per batch; after a device OOM, halves.

It owns the batch ceiling: lowered here after an OOM, read by the claim stage (another
thread) to size the next batch, so both go through one lock.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from batcher.config import BatchConfig
from batcher.metrics import WorkerMetrics
from batcher.policy import BatchCeiling
from batcher.stages.batch import Batch, Embedded
from models.clip import ClipEncoder, OutOfMemory

log = logging.getLogger("clipq.worker")


class InferStage:
    def __init__(self, encoder: ClipEncoder, metrics: WorkerMetrics, batching: BatchConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.encoder = encoder
        self.metrics = metrics
        self.clock = clock
        self._ceiling = BatchCeiling(batching.max_batch, batching.oom_cooldown_s)
        self._lock = threading.Lock()

    def room(self) -> int:
        """The largest batch to claim now."""
        with self._lock:
            return self._ceiling.current(self.clock())

    def _lower(self, failed_size: int) -> int:
        with self._lock:
            return self._ceiling.lower(failed_size, self.clock())

    def run(self, batch: Batch) -> Embedded:
        if batch.pixels is None:
            return Embedded()
        t0 = time.perf_counter()
        jobs = len({j.job_id for j in batch.jobs})  # the ceiling counts jobs; a job may have several photos
        try:
            vectors = self._embed(batch.pixels, len(batch.jobs) / max(jobs, 1))
        except OutOfMemory as exc:
            log.warning("device out of memory even for one image: %s", exc)
            return Embedded(error="device out of memory even for one image")
        except Exception:  # a model failure must not kill the worker: retry the jobs
            log.exception("inference failed for a batch of %d", len(batch.jobs))
            return Embedded(error="inference failed")
        finally:
            elapsed = time.perf_counter() - t0
            self.metrics.infer_busy.inc(elapsed)  # failed passes kept the device busy too
        self.metrics.stage.labels("infer").observe(elapsed)
        self.metrics.batch_size.observe(len(batch.jobs))
        return Embedded(vectors=vectors)

    def _embed(self, pixels: np.ndarray, per_job: float = 1.0) -> np.ndarray:
        """``per_job``: images per job in this batch, to lower the ceiling (in jobs) after an OOM."""
        try:
            return self.encoder.embed_images(pixels)
        except OutOfMemory:
            if len(pixels) == 1:
                raise
            self.metrics.oom_splits.inc()
            ceiling = self._lower(max(1, round(len(pixels) / per_job)))
            log.warning("out of memory on a batch of %d images: splitting, ceiling %d jobs for %.0fs",
                        len(pixels), ceiling, self._ceiling.cooldown_s)
            half = len(pixels) // 2
            return np.concatenate([self._embed(pixels[:half], per_job), self._embed(pixels[half:], per_job)])
