"""The worker loop: claim -> decode -> infer -> upsert -> ack, with the stages overlapped.

While the model runs batch k on the main thread, one thread claims and decodes batch k+1
and another writes batch k-1 to Qdrant and Redis. Each hand-off holds at most one batch,
so memory stays flat. A job is acknowledged only after its vector is in Qdrant; until then
it sits in this worker's processing list, where the reaper finds it if the worker dies.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import redis

from batcher.decode import DecodeError, decode
from batcher.metrics import WorkerMetrics
from batcher.policy import BatchCeiling, BatchPolicy, backoff_ms, collect
from batcher.queue.consumer import JobConsumer, Outcome
from batcher.queue.jobs import Job
from batcher.settings import WorkerSettings
from batcher.store import VectorStore
from models.clip import ClipEncoder, OutOfMemory

log = logging.getLogger("clipq.worker")


@dataclass
class Batch:
    jobs: list[Job]                      # decoded, to embed
    pixels: np.ndarray | None            # (len(jobs), S, S, 3) uint8
    rejected: list[tuple[Job, str]]      # permanent failures (cannot decode)


@dataclass
class Totals:
    completed: int = 0
    failed: int = 0
    retried: int = 0
    batches: int = 0
    started: float = field(default_factory=time.monotonic)


class _TimedSource:
    """Wraps the consumer to note when a batch's first job arrived (the claim stage starts)."""

    def __init__(self, consumer: JobConsumer) -> None:
        self.consumer = consumer
        self.first_at: float | None = None

    def take_blocking(self, timeout_s: float) -> list[str]:
        got = self.consumer.take_blocking(timeout_s)
        if got and self.first_at is None:
            self.first_at = time.perf_counter()
        return got

    def take_now(self, n: int) -> list[str]:
        return self.consumer.take_now(n)


class Worker:
    def __init__(self, settings: WorkerSettings, consumer: JobConsumer, encoder: ClipEncoder,
                 store: VectorStore, metrics: WorkerMetrics, *, burst: bool = False,
                 max_jobs: int | None = None, stop: threading.Event | None = None) -> None:
        self.s = settings
        self.consumer = consumer
        self.encoder = encoder
        self.store = store
        self.metrics = metrics
        self.burst = burst
        self.max_jobs = max_jobs
        self.stop = stop or threading.Event()
        self.ceiling = BatchCeiling(settings.worker_batch_size, settings.worker_oom_cooldown)
        self.totals = Totals()
        self._claimed = 0
        self._held: set[str] = set()  # ids claimed and not yet acknowledged or released
        self._held_lock = threading.Lock()
        self._next_reap = 0.0
        self._next_stats = time.monotonic() + 60
        self._decoders = ThreadPoolExecutor(settings.worker_decode_threads, "decode")

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> Totals:
        self.consumer.register()
        recovered = self.consumer.recover_own()
        if recovered:
            log.warning("requeued %d jobs left by an earlier process with this worker id", recovered)
        prefetch = ThreadPoolExecutor(1, "claim")
        storer = ThreadPoolExecutor(1, "store")
        stored: Future | None = None
        upcoming = prefetch.submit(self.next_batch)
        try:
            while True:
                batch = upcoming.result()
                if batch is None or self.stop.is_set():
                    break  # a batch claimed but not started goes back in release() below
                upcoming = prefetch.submit(self.next_batch)
                vectors, error = self.infer(batch)
                if stored is not None:
                    stored.result()
                stored = storer.submit(self.store_and_ack, batch, vectors, error)
        finally:
            self.stop.set()
            for future in (stored, upcoming):  # let the batch in flight finish; never raise here
                if future is not None:
                    future.cancel() or future.exception()
            self._release()
            for pool in (prefetch, storer, self._decoders):
                pool.shutdown(wait=True)
        self.log_stats()
        return self.totals

    def _release(self) -> None:
        try:
            n = self.consumer.release()
            if n:
                log.info("returned %d claimed but unstarted jobs to the queue", n)
        except redis.RedisError as exc:
            log.warning("could not return claimed jobs (%s): the reaper will", exc)

    # -- claim + decode (prefetch thread) -----------------------------------------------
    def next_batch(self) -> Batch | None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                batch = self._claim_and_decode()
                backoff = 0.5
            except Exception as exc:  # Redis outage, or a bug: never kill the worker for it
                if isinstance(exc, redis.RedisError):
                    log.warning("redis unavailable (%s); retrying in %.1fs", exc, backoff)
                else:
                    log.exception("claiming a batch failed; retrying in %.1fs", backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 10)
                continue
            if batch is not None:
                return batch
            if self._done():
                return None
        return None

    def _room(self) -> int:
        room = self.ceiling.current(time.monotonic())
        if self.max_jobs is not None:
            room = min(room, self.max_jobs - self._claimed)
        return room

    def _claim_and_decode(self) -> Batch | None:
        self.housekeeping()
        room = self._room()
        if room <= 0:
            return None
        source = _TimedSource(self.consumer)
        policy = BatchPolicy(room, self.s.worker_max_wait_ms / 1000)
        first_timeout = 0.05 if self.burst else self.s.worker_poll_interval
        ids = collect(source, policy, first_timeout)
        if not ids:
            return None
        self._hold(ids)
        try:
            jobs = self.consumer.fetch(ids)
        except Exception:
            self._let_go(ids)  # still in our list: the next housekeeping round requeues them
            raise
        self._let_go(set(ids) - {j.job_id for j in jobs})  # gone or finished: nothing to do
        self._claimed += len(ids)
        claimed_ms = self.consumer.claimed_at_ms  # every batch ends with the claim script
        self.metrics.stage.labels("claim").observe(time.perf_counter() - source.first_at)
        for job in jobs:
            self.metrics.queue_wait.observe(max(0, claimed_ms - job.created_at_ms) / 1000)
        return self.decode(jobs)

    def decode(self, jobs: list[Job]) -> Batch:
        t0 = time.perf_counter()
        prep, limit = self.encoder.preprocessing, self.s.max_image_pixels

        def one(job: Job):
            try:
                return decode(job.image, prep, limit)
            except DecodeError as exc:
                return exc

        results = list(self._decoders.map(one, jobs))
        good = [(j, r) for j, r in zip(jobs, results) if not isinstance(r, Exception)]
        rejected = [(j, str(r)) for j, r in zip(jobs, results) if isinstance(r, Exception)]
        pixels = np.stack([r for _, r in good]) if good else None
        self.metrics.stage.labels("decode").observe(time.perf_counter() - t0)
        return Batch([j for j, _ in good], pixels, rejected)

    def _done(self) -> bool:
        """Burst mode ends when nothing is queued, delayed or in flight; --max-jobs when reached."""
        if self.max_jobs is not None and self._claimed >= self.max_jobs:
            return True
        if not self.burst:
            return False
        c = self.consumer
        if c.depth() or c.redis.llen(c.processing):
            return False
        due_in = c.next_delayed_in_s()
        if due_in is None:
            return True
        self.stop.wait(min(due_in, self.s.worker_poll_interval))
        return False

    def housekeeping(self) -> None:
        """Promote due retries; reap dead workers now and then; log stats once a minute."""
        self.consumer.promote_due()
        now = time.monotonic()
        if now >= self._next_reap:
            self._next_reap = now + self.s.reaper_interval
            for worker_id, n in self.consumer.reap_dead_workers().items():
                log.warning("worker %s is dead (no heartbeat): %d jobs back in the queue", worker_id, n)
            with self._held_lock:
                held = set(self._held)
            if orphans := self.consumer.requeue_orphans(held):
                log.warning("%d jobs in our list that no claim returned (a lost reply): requeued", orphans)
        if now >= self._next_stats:
            self._next_stats = now + 60
            self.log_stats()

    # -- infer (main thread) -------------------------------------------------------------
    def infer(self, batch: Batch) -> tuple[np.ndarray | None, str | None]:
        if batch.pixels is None:
            return None, None
        t0 = time.perf_counter()
        try:
            vectors = self._embed(batch.pixels)
        except OutOfMemory as exc:
            return None, f"device out of memory even for one image: {exc}"
        except Exception as exc:  # a model failure must not kill the worker: retry the jobs
            log.exception("inference failed for a batch of %d", len(batch.jobs))
            return None, f"inference failed: {exc.__class__.__name__}: {exc}"
        self.metrics.stage.labels("infer").observe(time.perf_counter() - t0)
        self.metrics.batch_size.observe(len(batch.jobs))
        self.totals.batches += 1
        return vectors, None

    def _embed(self, pixels: np.ndarray) -> np.ndarray:
        """One forward pass; after an OOM, halves (and a lower ceiling for a while)."""
        try:
            return self.encoder.embed_images(pixels)
        except OutOfMemory:
            if len(pixels) == 1:
                raise
            self.metrics.oom_splits.inc()
            ceiling = self.ceiling.lower(len(pixels), time.monotonic())
            log.warning("out of memory on a batch of %d: splitting, ceiling %d for %.0fs",
                        len(pixels), ceiling, self.s.worker_oom_cooldown)
            half = len(pixels) // 2
            return np.concatenate([self._embed(pixels[:half]), self._embed(pixels[half:])])

    # -- upsert + ack (store thread) -----------------------------------------------------
    def store_and_ack(self, batch: Batch, vectors: np.ndarray | None, error: str | None) -> None:
        outcomes = [Outcome(j.job_id, "failed", msg) for j, msg in batch.rejected]
        if batch.jobs:
            if error is None:
                error = self._upsert(batch.jobs, vectors)
            if error is None:
                outcomes += [Outcome(j.job_id, "completed") for j in batch.jobs]
            else:
                outcomes += [self._retry(j, error) for j in batch.jobs]
        self._ack(batch, outcomes)

    def _upsert(self, jobs: list[Job], vectors: np.ndarray) -> str | None:
        t0 = time.perf_counter()
        now = datetime.now(timezone.utc).isoformat()
        payloads = [{"product_id": j.product_id, "name": j.name, "description": j.description,
                     "metadata": j.metadata, "job_id": j.job_id, "indexed_at": now,
                     "image_sha256": j.image_sha256} for j in jobs]
        try:
            self.store.upsert([j.product_id for j in jobs], vectors, payloads)
        except Exception as exc:  # unreachable, 5xx, timeouts: transient
            log.warning("qdrant upsert of %d points failed: %s", len(jobs), exc)
            return f"vector store unavailable: {exc.__class__.__name__}: {exc}"[:500]
        self.metrics.stage.labels("upsert").observe(time.perf_counter() - t0)
        return None

    def _retry(self, job: Job, error: str) -> Outcome:
        delay = backoff_ms(job.retry_count + 1, self.s.retry_backoff_base_ms, self.s.retry_backoff_max_ms)
        return Outcome(job.job_id, "retry", error, delay)

    def _ack(self, batch: Batch, outcomes: list[Outcome]) -> None:
        t0 = time.perf_counter()
        backoff, deadline = 0.2, None
        while True:
            try:
                result = self.consumer.ack(outcomes)
                break
            except redis.RedisError as exc:
                deadline = deadline or time.monotonic() + self.s.worker_shutdown_grace
                if self.stop.is_set() and time.monotonic() > deadline:
                    log.error("cannot acknowledge %d jobs (%s): leaving them to the reaper", len(outcomes), exc)
                    return
                log.warning("redis unavailable for ack (%s); retrying in %.1fs", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5)
        self._let_go({o.job_id for o in outcomes})
        self.metrics.stage.labels("ack").observe(time.perf_counter() - t0)
        self._account(batch, outcomes, result.now_ms)

    def _account(self, batch: Batch, outcomes: list[Outcome], now_ms: int) -> None:
        jobs = {j.job_id: j for j in batch.jobs} | {j.job_id: j for j, _ in batch.rejected}
        for o in outcomes:
            job = jobs[o.job_id]
            if o.outcome == "completed":
                latency = max(0, now_ms - job.created_at_ms)
                self.metrics.job_latency.observe(latency / 1000)
                self.metrics.jobs.labels("completed").inc()
                self.totals.completed += 1
                log.info("✓ Job %s completed in %dms - product %s", o.job_id, latency, job.product_id)
            elif o.outcome == "failed" or job.retry_count + 1 >= self.s.max_attempts:
                self.metrics.jobs.labels("failed").inc()
                self.totals.failed += 1
                log.warning("✗ Job %s failed - product %s: %s", o.job_id, job.product_id, o.error)
            else:
                self.metrics.jobs.labels("retried").inc()
                self.totals.retried += 1
                log.info("↻ Job %s retry in %dms - product %s: %s", o.job_id, o.delay_ms,
                         job.product_id, o.error)

    # -- helpers -------------------------------------------------------------------------
    def _hold(self, ids) -> None:
        with self._held_lock:
            self._held.update(ids)

    def _let_go(self, ids) -> None:
        with self._held_lock:
            self._held.difference_update(ids)

    def log_stats(self) -> None:
        t = self.totals
        uptime = time.monotonic() - t.started
        log.info("stats: processed=%d failed=%d retried=%d batches=%d uptime=%.0fs rate=%.2f jobs/s",
                 t.completed, t.failed, t.retried, t.batches, uptime, t.completed / max(uptime, 1e-9))
