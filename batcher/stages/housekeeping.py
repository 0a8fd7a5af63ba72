"""Housekeeping, done by the claim stage between two claims: promote due retries, reap dead
workers, requeue our own orphans and drop failed images past FAILED_IMAGE_TTL now and then,
log the stats line once a minute."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from batcher.queue.consumer import JobConsumer
from batcher.stages.ledger import Ledger

log = logging.getLogger("clipq.worker")
STATS_EVERY_S = 60


class Housekeeping:
    def __init__(self, consumer: JobConsumer, reaper_interval_s: float, ledger: Ledger,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.consumer = consumer
        self.reaper_interval_s = reaper_interval_s
        self.ledger = ledger
        self.clock = clock
        self._next_reap = 0.0
        self._next_stats = clock() + STATS_EVERY_S

    def run(self) -> None:
        self.consumer.promote_due()
        now = self.clock()
        if now >= self._next_reap:
            self._next_reap = now + self.reaper_interval_s
            self._reap()
            self.consumer.expire_failed_images()
        if now >= self._next_stats:
            self._next_stats = now + STATS_EVERY_S
            self.ledger.log_stats()

    def _reap(self) -> None:
        for worker_id, n in self.consumer.reap_dead_workers().items():
            log.warning("worker %s is dead (no heartbeat): %d jobs back in the queue", worker_id, n)
        if orphans := self.consumer.requeue_orphans():
            log.warning("%d jobs in our list that no claim returned (a lost reply): requeued", orphans)
