"""What a worker publishes in its heartbeat, rebuilt at every beat.

``GET /api/v1/workers`` serves it as it is, plus the heartbeat's age (from the key's TTL in
Redis, so no clock of ours is involved).
"""
from __future__ import annotations

import socket
import time
from collections import deque
from typing import Callable


class RateWindow:
    """Events per second over the last ``window_s``, from samples of a growing counter."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, t: float, count: int) -> float:
        """Note the counter at time ``t``; return the rate over the window that ends there."""
        self.samples.append((t, count))
        while len(self.samples) > 2 and t - self.samples[1][0] >= self.window_s:
            self.samples.popleft()  # keep one sample at or before the window's start
        t0, c0 = self.samples[0]
        return round((count - c0) / (t - t0), 3) if t > t0 else 0.0


class WorkerStatus:
    """Callable that builds the heartbeat's document from the live worker's state."""

    def __init__(self, worker_id: str, max_batch: int, heartbeat_ttl_s: float, encoder, worker, queries,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.worker_id, self.max_batch, self.heartbeat_ttl_s = worker_id, max_batch, heartbeat_ttl_s
        self.encoder, self.worker, self.queries = encoder, worker, queries
        self.clock = clock
        self.rate = RateWindow(60.0)
        self.host = socket.gethostname()

    def __call__(self) -> dict:
        now = self.clock()
        totals = self.worker.ledger.snapshot()  # the ledger and the infer stage own these, behind locks
        return {
            "worker_id": self.worker_id, "host": self.host,
            "device": str(self.encoder.device), "model": self.encoder.name,
            "precision": self.encoder.precision,  # int8 runs float32 activations: not its dtype
            "batch_ceiling": self.worker.infer.room(), "max_batch_size": self.max_batch,
            "jobs_per_s": self.rate.add(now, totals.completed),
            "completed": totals.completed, "failed": totals.failed,
            "query_lane_alive": self.queries.healthy(),
            "heartbeat_ttl_s": self.heartbeat_ttl_s,
        }
