"""Finish stage (the store thread): write a batch's vectors to Qdrant, then acknowledge every
job of it in one ack script call. A job is acknowledged only after its vector is stored.

A store failure is transient: the jobs are retried with backoff. A batch the store refuses
while it is reachable is split in halves, like an OOM, until the point it refuses is alone:
that job retries (and at last fails) by itself, the rest complete on their first attempt.
An ack that cannot reach Redis is tried again until it can, or, once the worker is stopping,
until the shutdown grace is over; then the reaper will find the jobs in this worker's list.
"""
from __future__ import annotations

import json
import logging
import threading
import time

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import redis
from qdrant_client.http.exceptions import ResponseHandlingException

from batcher.config import DuplicateConfig, RetryConfig
from batcher.duplicates.finder import DuplicateFinder
from batcher.duplicates.photo import NearDuplicate
from batcher.metrics import WorkerMetrics
from batcher.policy import Backoff, backoff_ms
from batcher.queue.calls import AckResult, Outcome
from batcher.queue.consumer import JobConsumer
from batcher.queue.jobs import Job
from batcher.stages.batch import Batch, Embedded
from batcher.stages.ledger import Ledger
from batcher.stages.recall import REUSED
from batcher.stages.versions import VersionedStore
from batcher.store import VectorStore

log = logging.getLogger("clipq.worker")
# Errors that say the store cannot be reached (no point in splitting the batch for them).
UNREACHABLE = (OSError, ResponseHandlingException)
STORE_DOWN = "vector store unavailable"
STORE_REFUSED = "vector store refused this product"


class FinishStage:
    def __init__(self, retries: RetryConfig, shutdown_grace_s: float, consumer: JobConsumer, store: VectorStore,
                 metrics: WorkerMetrics, ledger: Ledger, stop: threading.Event,
                 watch: Callable[[str], AbstractContextManager] = lambda stage: nullcontext(),
                 duplicates: DuplicateConfig | None = None) -> None:
        self.retries, self.shutdown_grace_s = retries, shutdown_grace_s  # the ack's retries once stopping
        self.consumer, self.store, self.metrics = consumer, store, metrics
        self.ledger, self.stop, self.watch = ledger, stop, watch
        self.versioned = VersionedStore(consumer, store)  # last upload wins, a delete sticks
        self.duplicates = DuplicateFinder(store, duplicates) if duplicates else None  # None: no hashes stored

    def run(self, batch: Batch, embedded: Embedded) -> None:
        jobs = [j for j, _ in batch.rejected]
        outcomes = [Outcome(j.job_id, "failed", msg) for j, msg in batch.rejected]
        jobs += [j for j, _ in batch.retry]  # image_url fetches that may work later
        outcomes += [self._retry(j, msg) for j, msg in batch.retry]
        if batch.jobs and embedded.error is not None:
            failed = batch.jobs + [t.job for t in batch.twins]
            jobs += failed
            outcomes += [self._retry(j, embedded.error) for j in failed]
        elif batch.jobs:
            self.ledger.batch_embedded()
        stored, vectors, kinds = self._to_store(batch, embedded)
        if stored:
            with self.watch("upsert"):
                near = self._near_duplicates(stored, batch.hashes, vectors)
                t0 = time.perf_counter()
                errors = self._upsert(stored, vectors)
            self.metrics.stage.labels("upsert").observe(time.perf_counter() - t0)
            jobs += stored
            outcomes += [self._completed(j, k, near.get(j.job_id)) if e is None else self._retry(j, e)
                         for j, k, e in zip(stored, kinds, errors)]
        ack = self._ack(outcomes)
        if ack is not None:
            self.ledger.record(jobs, outcomes, ack)

    @staticmethod
    def _to_store(batch: Batch, embedded: Embedded) -> tuple[list[Job], np.ndarray | None, list[str]]:
        """The jobs to write in one upsert: those embedded and their twins, then those whose
        vector was known."""
        ok = embedded.error is None and embedded.vectors is not None
        parts = [(j, v, "") for j, v in zip(batch.jobs, embedded.vectors)] if ok else []
        made = {j.job_id: v for j, v, _ in parts}
        parts += [(t.job, made[t.same_as.job_id], REUSED) for t in batch.twins if ok]
        parts += [(k.job, k.vector, k.kind) for k in batch.known]
        if not parts:
            return [], None, []
        jobs, vectors, kinds = zip(*parts)
        return list(jobs), np.stack(vectors), list(kinds)

    def _upsert(self, jobs: list[Job], vectors: np.ndarray) -> list[str | None]:
        """Each job's store error (None: stored). The exception text goes to the log only."""
        try:
            self.versioned.upsert(jobs, vectors)
            return [None] * len(jobs)
        except Exception as exc:
            down = isinstance(exc, UNREACHABLE)
            if down or len(jobs) == 1:
                log.warning("qdrant upsert of %d points failed: %s: %s", len(jobs), exc.__class__.__name__, exc)
                return [STORE_DOWN if down else STORE_REFUSED] * len(jobs)
            log.warning("qdrant refused a batch of %d (%s: %s): splitting it to find the bad point",
                        len(jobs), exc.__class__.__name__, str(exc)[:200])
            self.metrics.store_splits.inc()
            half = len(jobs) // 2
            return self._upsert(jobs[:half], vectors[:half]) + self._upsert(jobs[half:], vectors[half:])

    def _near_duplicates(self, jobs: list[Job], hashes: dict[str, int], vectors: np.ndarray
                         ) -> dict[str, list[NearDuplicate] | None]:
        """Each job's near duplicates, found before its point is written (batcher.duplicates)."""
        if self.duplicates is None:
            return {}
        t0 = time.perf_counter()
        near = self.duplicates.mark(jobs, hashes, vectors)
        self.metrics.stage.labels("duplicates").observe(time.perf_counter() - t0)
        return near

    @staticmethod
    def _completed(job: Job, kind: str, near: list[NearDuplicate] | None) -> Outcome:
        listed = "" if near is None else json.dumps([n.public() for n in near], separators=(",", ":"))
        return Outcome(job.job_id, "completed", kind=kind, near_duplicates=listed)

    def _retry(self, job: Job, error: str) -> Outcome:
        delay = backoff_ms(job.retry_count + 1, self.retries.backoff_base_ms, self.retries.backoff_max_ms)
        return Outcome(job.job_id, "retry", error, delay)

    def _ack(self, outcomes: list[Outcome]) -> AckResult | None:
        t0 = time.perf_counter()
        backoff, deadline = Backoff(0.2, 5), None
        while True:
            try:
                result = self.consumer.ack(outcomes)
                break
            except redis.RedisError as exc:
                deadline = deadline or time.monotonic() + self.shutdown_grace_s
                if self.stop.is_set() and time.monotonic() > deadline:
                    log.error("cannot acknowledge %d jobs (%s): leaving them to the reaper", len(outcomes), exc)
                    return None
                delay = backoff.next()
                log.warning("redis unavailable for ack (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
        self.metrics.stage.labels("ack").observe(time.perf_counter() - t0)
        return result
