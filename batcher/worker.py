"""The worker: claim -> decode -> infer -> upsert -> ack, with the stages overlapped.

While the model runs batch k on the main thread (``InferStage``), the prefetch thread claims
and decodes batch k+1 (``ClaimStage``) and the store thread writes batch k-1 to Qdrant and
acknowledges it in Redis (``FinishStage``). Each hand-off holds one batch, so memory stays
flat, and a batch belongs to one stage at a time. The little state the threads share has
one owner behind a lock: held jobs (the consumer), the batch ceiling (the infer stage), the
totals (the ledger). A job is acknowledged only after its vector is in Qdrant; until then
it sits in this worker's processing list, where the reaper finds it if the worker dies.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import redis

from batcher.config import BatchConfig, DecodeConfig, DuplicateConfig, FetchConfig, LivenessConfig, RetryConfig
from batcher.metrics import WorkerMetrics
from batcher.queue.consumer import JobConsumer
from batcher.stages.batch import Batch, Embedded
from batcher.stages.claim import ClaimStage
from batcher.stages.finish import FinishStage
from batcher.stages.housekeeping import Housekeeping
from batcher.stages.infer import InferStage
from batcher.stages.ledger import Ledger, Totals
from batcher.stages.recall import RecallStage
from batcher.store import VectorStore
from batcher.watchdog import Unwatched, Watchdog
from models.clip import ClipEncoder

log = logging.getLogger("clipq.worker")


class Worker:
    """Builds the stages, each with its own settings group, and runs them."""

    def __init__(self, consumer: JobConsumer, encoder: ClipEncoder, store: VectorStore, metrics: WorkerMetrics, *,
                 batching: BatchConfig, decoding: DecodeConfig, fetching: FetchConfig, retries: RetryConfig,
                 liveness: LivenessConfig, max_metadata_depth: int, reuse_vectors: bool = True,
                 burst: bool = False, max_jobs: int | None = None, stop: threading.Event | None = None,
                 watchdog: Watchdog | Unwatched | None = None, duplicates: DuplicateConfig | None = None) -> None:
        self.consumer = consumer
        self.stop = stop or threading.Event()
        self.watchdog = watchdog or Unwatched()
        self.ledger = Ledger(metrics)
        self.infer = InferStage(encoder, metrics, batching)
        housekeeping = Housekeeping(consumer, liveness.reaper_interval_s, self.ledger)
        self.claim = ClaimStage(batching, decoding, fetching, consumer, encoder.preprocessing, metrics, housekeeping,
                                self.infer.room, self.stop, max_metadata_depth=max_metadata_depth,
                                burst=burst, max_jobs=max_jobs, recall=RecallStage(store, metrics, reuse_vectors),
                                watch=self.watchdog.watch)
        self.finish = FinishStage(retries, liveness.shutdown_grace_s, consumer, store, metrics, self.ledger,
                                  self.stop, watch=self.watchdog.watch, duplicates=duplicates)

    def run(self) -> Totals:
        self.consumer.register()
        if recovered := self.consumer.recover_own():
            log.warning("requeued %d jobs left by an earlier process with this worker id", recovered)
        prefetch, storer = ThreadPoolExecutor(1, "claim"), ThreadPoolExecutor(1, "store")
        stored: Future | None = None
        upcoming = prefetch.submit(self.claim.next_batch)
        try:
            # a batch claimed but not started when the loop ends goes back in _release() below
            while (batch := upcoming.result()) is not None and not self.stop.is_set():
                upcoming = prefetch.submit(self.claim.next_batch)
                embedded = self._infer(batch)
                if stored is not None:
                    stored.result()
                stored = storer.submit(self.finish.run, batch, embedded)
        finally:
            self.stop.set()
            for future in (stored, upcoming):  # let the batch in flight finish; never raise here
                if future is not None:
                    future.cancel() or future.exception()
            self._release()
            for pool in (prefetch, storer):
                pool.shutdown(wait=True)
            self.claim.close()
        self.ledger.log_stats()
        return self.ledger.snapshot()

    def _infer(self, batch: Batch) -> Embedded:
        """Mark the batch's jobs as started (a crash from here on charges them an attempt), then
        embed it under the watchdog."""
        try:
            self.consumer.mark_started([j.job_id for j in batch.jobs])
        except redis.RedisError as exc:  # unmarked jobs are only spared an attempt if we die
            log.warning("could not mark a batch as started (%s)", exc)
        with self.watchdog.watch("infer"):
            return self.infer.run(batch)

    def _release(self) -> None:
        try:
            if n := self.consumer.release():
                log.info("returned %d claimed but unstarted jobs to the queue", n)
        except redis.RedisError as exc:
            log.warning("could not return claimed jobs (%s): the reaper will", exc)
