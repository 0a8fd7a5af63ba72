"""The blocking wait of a sharded worker: one BLMOVE standing on every shard at once.

A BLMOVE covers one slot on a cluster, and a shared wake-up key would live in a slot of its own,
outside the enqueue script; so each shard has its own BLMOVE, on a thread (and so a connection)
of its own, blocking at most ``STANDING_S`` and renewed as it ends. A job in any shard wakes the
worker at once; an idle worker sends N BLMOVEs a second, never a busy loop.
"""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import redis

from .consumer import JobConsumer

STANDING_S = 1.0  # how long one standing BLMOVE blocks before it is renewed


class StandingWaits:
    """One BLMOVE standing on every shard, each on a thread of its own (so on a connection of its
    own), kept across calls: ``wait`` returns the ids of those that ended with a job within its
    time-out and renews them, and the others keep standing.

    An id a BLMOVE has moved is in the worker's processing list before this thread hears of it,
    so the orphan round (ids listed but not held) must not run while one stands: ``drain`` waits
    for every standing BLMOVE to end (within ``STANDING_S``) and hands its id to its shard."""

    def __init__(self, shards: list[JobConsumer], standing_s: float = STANDING_S) -> None:
        self.shards, self.standing_s = shards, standing_s
        self._pool = ThreadPoolExecutor(len(shards), "shard-wait")
        self._standing: dict[int, Future] = {}

    def wait(self, timeout_s: float) -> list[str]:
        for i, shard in enumerate(self.shards):
            if i not in self._standing:
                self._standing[i] = self._pool.submit(shard.blmove, self.standing_s)
        done, _ = wait(list(self._standing.values()), timeout=max(timeout_s, 0), return_when=FIRST_COMPLETED)
        return self._collect(done)

    def drain(self) -> list[str]:
        done, _ = wait(list(self._standing.values()))
        return self._collect(done)

    def _collect(self, done) -> list[str]:
        """The ids of the ended BLMOVEs, each noted by its shard; a Redis error is raised when no
        BLMOVE brought an id (it comes back at the next call otherwise)."""
        got, error = [], None
        for i in [i for i, f in self._standing.items() if f in done]:
            try:
                job_id = self._standing.pop(i).result()
            except redis.RedisError as exc:
                error = error or exc
                continue
            if job_id is not None:
                self.shards[i].note_moved(job_id)
                got.append(job_id)
        if error is not None and not got:
            raise error
        return got
