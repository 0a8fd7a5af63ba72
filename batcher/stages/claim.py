"""Claim stage (the prefetch thread): claim the next batch and decode it while the model runs
the current one. Between claims it does the housekeeping, and it decides when a burst-mode
(or ``--max-jobs``) run is over.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext

from batcher.config import BatchConfig, DecodeConfig, FetchConfig
from batcher.decode import DecodeBudget
from batcher.fetch import FetchError, UrlFetcher
from batcher.gpu_decode import make_decoder
from batcher.metrics import WorkerMetrics
from batcher.pause import pause_after
from batcher.policy import Backoff, BatchPolicy, collect
from batcher.queue.consumer import JobConsumer
from batcher.queue.jobs import Job, nesting
from batcher.queue.photos import FramingError
from batcher.stages import photos
from batcher.stages.batch import Batch, Known, Twin, photo_of
from batcher.stages.batch_source import BatchSource
from batcher.stages.housekeeping import Housekeeping
from batcher.stages.recall import RecallStage
from models.preprocessing import Preprocessing

log = logging.getLogger("clipq.worker")


class ClaimStage:
    def __init__(self, batching: BatchConfig, decoding: DecodeConfig, fetching: FetchConfig, consumer: JobConsumer,
                 prep: Preprocessing, metrics: WorkerMetrics, housekeeping: Housekeeping, room: Callable[[], int],
                 stop: threading.Event, *, max_metadata_depth: int, recall: RecallStage | None = None,
                 burst: bool = False, max_jobs: int | None = None,
                 watch: Callable[[str], AbstractContextManager] = lambda stage: nullcontext()) -> None:
        self.batching, self.consumer, self.prep, self.metrics = batching, consumer, prep, metrics
        self.max_metadata_depth = max_metadata_depth  # MAX_METADATA_DEPTH, as the API checks it
        self.watch = watch
        self.housekeeping, self.room, self.stop = housekeeping, room, stop
        self.recall = recall
        self.burst, self.max_jobs = burst, max_jobs
        self._claimed = 0
        self.budget = DecodeBudget(decoding.memory)  # shared by the decode threads
        self.decoder = make_decoder(decoding, prep, self.budget)  # WORKER_DECODE_DEVICE
        self.fetcher = UrlFetcher(fetching.limits)  # the worker's one fetcher: the query lane's too
        self._fetchers = ThreadPoolExecutor(fetching.threads, "fetch")

    def close(self) -> None:
        self.decoder.close()
        self._fetchers.shutdown(wait=True)

    def next_batch(self) -> Batch | None:
        """The next batch, or None when the run is over (or stopped)."""
        backoff = Backoff(0.5, 10)
        while not self.stop.is_set():
            try:
                batch = self._claim_and_decode()
                backoff.reset()
            except Exception as exc:  # Redis outage, or a bug: never kill the worker for it
                pause_after(exc, "claiming a batch", backoff, self.stop, log)
                continue
            if batch is not None:
                return batch
            if self._done():
                return None
        return None

    def _claim_and_decode(self) -> Batch | None:
        self.housekeeping.run()
        room = self.room()
        if self.max_jobs is not None:
            room = min(room, self.max_jobs - self._claimed)
        if room <= 0:
            return None
        source = BatchSource(self.consumer)
        first_timeout = 0.05 if self.burst else self.batching.poll_interval_s
        ids = collect(source, BatchPolicy(room, self.batching.max_wait_ms / 1000), first_timeout)
        if not ids:
            return None
        with self.watch("decode"):  # from here on the batch is ours: watched for stalls
            jobs = self.consumer.fetch(ids)
            self._claimed += len(ids)
            claimed_ms = self.consumer.claimed_at_ms  # every batch ends with the claim script
            self.metrics.stage.labels("claim").observe(time.perf_counter() - source.first_at)
            for job in jobs:
                self.metrics.queue_wait.observe(max(0, claimed_ms - job.created_at_ms) / 1000)
            return self.decode(jobs)

    def decode(self, jobs: list[Job]) -> Batch:
        """From here on a job of several photos is one ``Job`` per photo (``stages.photos``)."""
        jobs, malformed = self._photos(jobs)
        failed, retry = self._fetch_urls(jobs)
        failed += malformed
        unfetched = {j.job_id for j, _ in failed + retry}  # a job's other photos wait with it
        jobs = [j for j in jobs if j.job_id not in unfetched]
        jobs, known, twins = self.recall.split(jobs) if self.recall else (jobs, [], [])
        t0 = time.perf_counter()
        pixels, errors, hashes = self.decoder.hashed([j.image for j in jobs])
        error_of = {id(j): e for j, e in zip(jobs, errors)}  # a twin's bytes fail as its first's did
        rejected = failed + [(j, e) for j, e in zip(jobs, errors) if e is not None]
        rejected += [(t.job, error_of[id(t.same_as)]) for t in twins if error_of[id(t.same_as)] is not None]
        twins = [t for t in twins if error_of[id(t.same_as)] is None]
        hashes = self._hashes(jobs, hashes, known, twins)
        self.metrics.stage.labels("decode").observe(time.perf_counter() - t0)
        return Batch([j for j, e in zip(jobs, errors) if e is None], pixels, rejected, retry, known, twins, hashes)

    def _hashes(self, jobs: list[Job], hashes: list[int | None], known: list[Known], twins: list[Twin]
                ) -> dict[tuple[str, int], int]:
        """Each photo's perceptual hash by (job id, photo index): from its decode, its twin's, or
        (a known vector: no decode) hashed alone."""
        by_photo = {photo_of(j): h for j, h in zip(jobs, hashes) if h is not None}
        by_photo |= {photo_of(t.job): by_photo[photo_of(t.same_as)] for t in twins if photo_of(t.same_as) in by_photo}
        alone = self.decoder.hash_only([k.job.image for k in known])
        return by_photo | {photo_of(k.job): h for k, h in zip(known, alone) if h is not None}

    def _photos(self, jobs: list[Job]) -> tuple[list[Job], list[tuple[Job, str]]]:
        """(one ``Job`` per photo of the well-formed jobs, the malformed jobs with their error)."""
        malformed = self._malformed(jobs)
        bad = {m.job_id for m, _ in malformed}
        units = []
        for job in (j for j in jobs if j.job_id not in bad):
            try:
                units += photos.split(job)
            except FramingError as exc:
                malformed.append((job, f"malformed photos: {exc}"))
        return units, malformed

    def _malformed(self, jobs: list[Job]) -> list[tuple[Job, str]]:
        """Jobs whose metadata nests deeper than the API allows (pushed into Redis another way):
        they fail alone, whatever the store would make of them."""
        limit = self.max_metadata_depth
        return [(j, f"metadata nests {depth} levels deep; the limit is {limit}")
                for j in jobs if (depth := nesting(j.metadata)) > limit]

    def _fetch_urls(self, jobs: list[Job]) -> tuple[list[tuple[Job, str]], list[tuple[Job, str]]]:
        """Fetch the images of ``image_url`` jobs, all at once: (failed for good, to retry)."""
        by_url = [j for j in jobs if j.image_url]
        if not by_url:
            return [], []
        t0 = time.perf_counter()

        def one(job: Job) -> FetchError | None:
            try:
                job.image = self.fetcher.fetch(job.image_url)
            except FetchError as exc:
                return exc
            except Exception as exc:  # a bug must not poison the batch: this job retries
                log.exception("fetching image_url of job %s failed", job.job_id)
                return FetchError(f"internal error ({exc.__class__.__name__})", transient=True)
            job.image_sha256 = hashlib.sha256(job.image).hexdigest()
            return None

        failed, retry = [], []
        for job, error in zip(by_url, self._fetchers.map(one, by_url)):
            if error is not None:
                (retry if error.transient else failed).append((job, str(error)))
        self.metrics.stage.labels("fetch").observe(time.perf_counter() - t0)
        return failed, retry

    def _done(self) -> bool:
        """Burst mode ends when nothing is queued, delayed or in flight; --max-jobs when reached."""
        if self.max_jobs is not None and self._claimed >= self.max_jobs:
            return True
        if not self.burst:
            return False
        if self.consumer.depth() or self.consumer.in_flight():
            return False
        due_in = self.consumer.next_delayed_in_s()
        if due_in is None:
            return True
        self.stop.wait(min(due_in, self.batching.poll_interval_s))
        return False
