"""What the claim stage collects one batch from (``batcher.policy.collect``): the consumer,
with the time the batch's first job arrived, and a claim failing part-way handled."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from batcher.queue.consumer import JobConsumer

log = logging.getLogger("clipq.worker")


class BatchSource:
    """Wraps the consumer for one batch: notes when its first job arrived (the claim stage
    starts), and ends the batch with the ids already taken when a later claim fails. Those ids
    are in this worker's list and held: raised away, they would be lost to the pipeline, and
    neither the reaper (the worker lives) nor the orphan round (they are held) would give them
    back. The error comes back at the next claim, which backs off."""

    def __init__(self, consumer: JobConsumer) -> None:
        self.consumer = consumer
        self.first_at: float | None = None
        self.failed: Exception | None = None

    def take_blocking(self, timeout_s: float) -> list[str]:
        got = self._take(lambda: self.consumer.take_blocking(timeout_s))
        if got and self.first_at is None:
            self.first_at = time.perf_counter()
        return got

    def take_now(self, n: int) -> list[str]:
        return self._take(lambda: self.consumer.take_now(n))

    def _take(self, take: Callable[[], list[str]]) -> list[str]:
        if self.failed is not None:
            return []
        try:
            return take()
        except redis.RedisError as exc:
            if self.first_at is None:
                raise  # nothing taken yet: the claim stage backs off
            self.failed = exc
            log.warning("claiming more of a batch: %s; the batch goes on with the jobs it has", exc)
            return []
