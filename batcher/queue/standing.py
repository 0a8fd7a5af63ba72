"""The blocking wait of a sharded worker: one BLMOVE standing on every shard's ring at once.

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
    """One BLMOVE standing on every shard's ring, each on a thread of its own (so on a connection
    of its own), kept across calls: ``wait`` returns the shards whose BLMOVE ended with work
    queued within its time-out and renews them, and the others keep standing. A BLMOVE on the
    ring moves no job id (``JobConsumer.wait_for_work``): the claim that follows does."""

    def __init__(self, shards: list[JobConsumer], standing_s: float = STANDING_S) -> None:
        self.shards, self.standing_s = shards, standing_s
        self._pool = ThreadPoolExecutor(len(shards), "shard-wait")
        self._standing: dict[int, Future] = {}

    def wait(self, timeout_s: float) -> list[JobConsumer]:
        for i, shard in enumerate(self.shards):
            if i not in self._standing:
                self._standing[i] = self._pool.submit(shard.wait_for_work, self.standing_s)
        done, _ = wait(list(self._standing.values()), timeout=max(timeout_s, 0), return_when=FIRST_COMPLETED)
        return self._collect(done)

    def drain(self) -> None:
        """Let every standing BLMOVE end (within ``STANDING_S``), e.g. before the worker leaves."""
        wait(list(self._standing.values()))
        self._standing.clear()

    def _collect(self, done) -> list[JobConsumer]:
        """The shards whose ended BLMOVE saw work; a Redis error is raised when none did (it comes
        back at the next call otherwise)."""
        woken, error = [], None
        for i in [i for i, f in self._standing.items() if f in done]:
            try:
                if self._standing.pop(i).result():
                    woken.append(self.shards[i])
            except redis.RedisError as exc:
                error = error or exc
        if error is not None and not woken:
            raise error
        return woken
