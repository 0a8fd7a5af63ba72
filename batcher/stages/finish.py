"""Finish stage (the store thread): write a batch's vectors to Qdrant, then acknowledge every
job of it in one ack script call. A job is acknowledged only after its vector is stored.

A store failure is transient: the jobs are retried with backoff. An ack that cannot reach
Redis is tried again until it can, or, once the worker is stopping, until the shutdown grace
is over; then the reaper will find the jobs in this worker's list.
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import redis

from batcher.metrics import WorkerMetrics
from batcher.policy import Backoff, backoff_ms
from batcher.queue.calls import AckResult, Outcome
from batcher.queue.consumer import JobConsumer
from batcher.queue.jobs import Job
from batcher.settings import WorkerSettings
from batcher.stages.batch import Batch, Embedded
from batcher.stages.ledger import Ledger
from batcher.store import VectorStore

log = logging.getLogger("clipq.worker")


class FinishStage:
    def __init__(self, s: WorkerSettings, consumer: JobConsumer, store: VectorStore, metrics: WorkerMetrics,
                 ledger: Ledger, stop: threading.Event) -> None:
        self.s, self.consumer, self.store, self.metrics = s, consumer, store, metrics
        self.ledger, self.stop = ledger, stop

    def run(self, batch: Batch, embedded: Embedded) -> None:
        jobs = [j for j, _ in batch.rejected]
        outcomes = [Outcome(j.job_id, "failed", msg) for j, msg in batch.rejected]
        jobs += [j for j, _ in batch.retry]  # image_url fetches that may work later
        outcomes += [self._retry(j, msg) for j, msg in batch.retry]
        if batch.jobs:
            error = embedded.error
            if error is None:
                self.ledger.batch_embedded()
                error = self._upsert(batch.jobs, embedded.vectors)
            jobs += batch.jobs
            if error is None:
                outcomes += [Outcome(j.job_id, "completed") for j in batch.jobs]
            else:
                outcomes += [self._retry(j, error) for j in batch.jobs]
        ack = self._ack(outcomes)
        if ack is not None:
            self.ledger.record(jobs, outcomes, ack)

    def _upsert(self, jobs: list[Job], vectors: np.ndarray) -> str | None:
        t0 = time.perf_counter()
        try:
            self.store.upsert(jobs, vectors)
        except Exception as exc:  # unreachable, 5xx, timeouts: transient
            log.warning("qdrant upsert of %d points failed: %s", len(jobs), exc)
            return f"vector store unavailable: {exc.__class__.__name__}: {exc}"[:500]
        self.metrics.stage.labels("upsert").observe(time.perf_counter() - t0)
        return None

    def _retry(self, job: Job, error: str) -> Outcome:
        delay = backoff_ms(job.retry_count + 1, self.s.retry_backoff_base_ms, self.s.retry_backoff_max_ms)
        return Outcome(job.job_id, "retry", error, delay)

    def _ack(self, outcomes: list[Outcome]) -> AckResult | None:
        t0 = time.perf_counter()
        backoff, deadline = Backoff(0.2, 5), None
        while True:
            try:
                result = self.consumer.ack(outcomes)
                break
            except redis.RedisError as exc:
                deadline = deadline or time.monotonic() + self.s.worker_shutdown_grace
                if self.stop.is_set() and time.monotonic() > deadline:
                    log.error("cannot acknowledge %d jobs (%s): leaving them to the reaper", len(outcomes), exc)
                    return None
                delay = backoff.next()
                log.warning("redis unavailable for ack (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
        self.metrics.stage.labels("ack").observe(time.perf_counter() - t0)
        return result
