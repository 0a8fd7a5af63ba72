"""This worker's accounting: totals, job metrics and the per-job log lines.

Everything is taken from what the ack script recorded for each job, never worked out again
here: a job the script skipped (reaped, and handed to another worker, before our ack came)
is not counted. The finish stage writes; the stats line and ``Worker.run`` read: a lock.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace

from batcher.metrics import WorkerMetrics
from batcher.queue.calls import COMPLETED_RESULTS, AckResult, Outcome
from batcher.queue.jobs import Job

log = logging.getLogger("clipq.worker")


@dataclass(frozen=True)
class Totals:
    completed: int = 0  # every completed job, those that skipped the model included
    unchanged: int = 0  # completed with their product's stored vector
    reused: int = 0     # completed with another product's vector
    failed: int = 0
    retried: int = 0
    superseded: int = 0
    batches: int = 0
    started: float = field(default_factory=time.monotonic)


class Ledger:
    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        self._totals = Totals()
        self._lock = threading.Lock()

    def snapshot(self) -> Totals:
        with self._lock:
            return self._totals

    def _add(self, *what: str) -> None:
        with self._lock:
            self._totals = replace(self._totals, **{w: getattr(self._totals, w) + 1 for w in what})

    def batch_embedded(self) -> None:
        self._add("batches")

    def record(self, jobs: list[Job], outcomes: list[Outcome], ack: AckResult) -> None:
        if ack.unreplicated:
            self.metrics.unreplicated_acks.inc(ack.unreplicated)
        for job, o, recorded in zip(jobs, outcomes, ack.results, strict=True):
            if recorded == "skipped":
                log.warning("job %s was no longer ours when acknowledged (handed to another worker): "
                            "not counted", o.job_id)
                continue
            self.metrics.jobs.labels(recorded).inc()
            if recorded in COMPLETED_RESULTS:
                self._add(*(("completed",) if recorded == "completed" else ("completed", recorded)))
                latency = max(0, ack.now_ms - job.created_at_ms)
                self.metrics.job_latency.observe(latency / 1000)
                how = "" if recorded == "completed" else f" ({recorded})"
                log.info("✓ Job %s completed%s in %dms - product %s", o.job_id, how, latency, job.product_id)
                continue
            self._add(recorded)
            if recorded == "superseded":
                log.info("⤼ Job %s superseded by a newer upload or a delete - product %s", o.job_id, job.product_id)
            elif recorded == "failed":
                log.warning("✗ Job %s failed - product %s: %s", o.job_id, job.product_id, o.error)
            else:
                log.info("↻ Job %s retry in %dms - product %s: %s", o.job_id, o.delay_ms, job.product_id, o.error)

    def log_stats(self) -> None:
        t = self.snapshot()
        uptime = time.monotonic() - t.started
        log.info("stats: processed=%d (unchanged=%d reused=%d) failed=%d retried=%d superseded=%d batches=%d "
                 "uptime=%.0fs rate=%.2f jobs/s", t.completed, t.unchanged, t.reused, t.failed, t.retried,
                 t.superseded, t.batches, uptime,
                 t.completed / max(uptime, 1e-9))
