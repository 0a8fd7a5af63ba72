"""A worker's side of QUEUE_SHARDS=N > 1: one ``JobConsumer`` per shard, behind the face of one.

Claims rotate over the shards: each claim starts at the next shard and fills the batch from
the following ones when the first runs short. The blocking wait covers every shard at once:
a BLMOVE is single-slot on a cluster (and a shared wake-up key would live in a slot of its own,
outside the enqueue script), so each shard has one BLMOVE standing on a thread and a connection
of its own (``standing.py``), renewed as it ends. A job
in any shard wakes the worker at once; an idle worker sends N BLMOVEs a second, never a busy
loop.

Everything per job (fetch, started, ack) goes to the shard its id names, one call per shard;
the heartbeat, the registration and the housekeeping (reaper, promotions) run on every shard.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import redis

from .calls import AckResult, Outcome
from .config import QueueConfig
from .consumer import JobConsumer
from .jobs import Job
from .keys import Keys, job_shard, product_shard, shard_keys
from .standing import StandingWaits

T = TypeVar("T")


def make_consumer(client: redis.Redis, config: QueueConfig, worker_id: str):
    """The worker's consumer: today's ``JobConsumer`` for one shard, else a ``ShardedConsumer``."""
    if config.shards == 1:
        return JobConsumer(client, config, worker_id)
    return ShardedConsumer(client, config, worker_id)


def group(items: Iterable[T], shard_of: Callable[[T], int]) -> dict[int, list[T]]:
    out: dict[int, list[T]] = {}
    for item in items:
        out.setdefault(shard_of(item), []).append(item)
    return out


class ShardedConsumer:
    """``JobConsumer``'s methods over every shard, for one worker id."""

    def __init__(self, client: redis.Redis, config: QueueConfig, worker_id: str) -> None:
        self.config, self.worker_id = config, worker_id
        self.keys = Keys(config.namespace)  # the shared keys: the query lane's
        self.shards = [JobConsumer(client, config, worker_id, k) for k in shard_keys(config.namespace, config.shards)]
        self._next = 0
        self._waits = StandingWaits(self.shards)
        self.claimed_at_ms = 0
        self._acked: dict[str, str] = {}  # of an ack that failed on a later shard
        self._acked_ms = self._acked_unreplicated = 0

    def _rotation(self) -> list[JobConsumer]:
        """Every shard, starting at the next one in turn."""
        start, self._next = self._next, (self._next + 1) % len(self.shards)
        return self.shards[start:] + self.shards[:start]

    def _by_job(self, items: Iterable[T], job_id: Callable[[T], str] = lambda x: x):
        n = len(self.shards)
        return [(self.shards[i], part) for i, part in group(items, lambda x: job_shard(job_id(x), n)).items()]

    # -- claiming ----------------------------------------------------------------------
    def held(self) -> set[str]:
        return set().union(*(s.held() for s in self.shards))

    def take_blocking(self, timeout_s: float) -> list[str]:
        """Block up to ``timeout_s`` for work in any shard (the standing BLMOVEs), then claim one
        job of each shard that has some."""
        deadline = time.monotonic() + timeout_s
        while woken := self._waits.wait(deadline - time.monotonic()):
            if got := self._each(woken, lambda shard, _: shard.take_now(1)):
                return got
            if time.monotonic() >= deadline:
                break
        return []

    def take_now(self, n: int) -> list[str]:
        """Up to ``n`` more ids, from the next shard in turn first, then from the others."""
        moved = self._each(self._rotation(), lambda shard, moved: shard.take_now(n - len(moved)))
        self.claimed_at_ms = max(s.claimed_at_ms for s in self.shards)
        return moved

    @staticmethod
    def _each(shards: list[JobConsumer], take: Callable[[JobConsumer, list[str]], list[str]]) -> list[str]:
        """``take`` on each shard in turn. A shard that fails (its slot moving, its node away)
        does not lose what the others moved into this worker's lists (held, so no orphan round
        would give them back): they are returned, and the error only when none moved anything."""
        moved: list[str] = []
        error: redis.RedisError | None = None
        for shard in shards:
            try:
                moved += take(shard, moved)
            except redis.RedisError as exc:
                error = error or exc
        if error is not None and not moved:
            raise error
        return moved

    def fetch(self, job_ids: list[str]) -> list[Job]:
        found: dict[str, Job] = {}
        try:
            for shard, ids in self._by_job(job_ids):
                found.update((j.job_id, j) for j in shard.fetch(ids))
        except Exception:
            for shard in self.shards:
                shard.let_go(job_ids)  # still in the lists: the next orphan rounds requeue them
            raise
        return [found[i] for i in job_ids if i in found]

    def mark_started(self, job_ids: list[str]) -> None:
        for shard, ids in self._by_job(job_ids):
            shard.mark_started(ids)

    def ack(self, outcomes: list[Outcome]) -> AckResult:
        """One ack script per shard; the results in the order of ``outcomes``. When a shard
        fails, the caller retries the whole list: the shards already done are not asked again."""
        todo = [o for o in outcomes if o.job_id not in self._acked]
        for shard, part in self._by_job(todo, lambda o: o.job_id):
            result = shard.ack(part)
            self._acked_ms = max(self._acked_ms, result.now_ms)
            self._acked_unreplicated += result.unreplicated
            self._acked.update((o.job_id, r) for o, r in zip(part, result.results))
        result = AckResult(self._acked_ms, tuple(self._acked[o.job_id] for o in outcomes), self._acked_unreplicated)
        self._acked.clear()
        self._acked_ms = self._acked_unreplicated = 0
        return result

    # -- recovery and housekeeping: every shard ----------------------------------------
    def recover_own(self) -> int:
        return sum(s.recover_own() for s in self.shards)

    def requeue_orphans(self) -> int:
        return sum(s.requeue_orphans() for s in self.shards)

    def release(self) -> int:
        self._waits.drain()
        return sum(s.release() for s in self.shards)

    def promote_due(self, limit: int = 1000) -> int:
        return sum(s.promote_due(limit) for s in self.shards)

    def expire_failed_images(self, limit: int = 1000) -> int:
        return sum(s.expire_failed_images(limit) for s in self.shards)

    def reap_dead_workers(self) -> dict[str, int]:
        reaped: dict[str, int] = {}
        for shard in self.shards:
            for worker_id, n in shard.reap_dead_workers().items():
                reaped[worker_id] = reaped.get(worker_id, 0) + n
        return reaped

    # -- presence: every shard -----------------------------------------------------------
    def register(self) -> None:
        for s in self.shards:
            s.register()

    def beat(self, ttl_s: float, info: str) -> None:
        for s in self.shards:
            s.beat(ttl_s, info)

    def stop_beating(self) -> None:
        for s in self.shards:
            s.stop_beating()

    def sample_history(self) -> int:
        return sum(s.sample_history() for s in self.shards)

    # -- reads -----------------------------------------------------------------------
    def depth(self) -> int:
        return sum(s.depth() for s in self.shards)

    def in_flight(self) -> int:
        return sum(s.in_flight() for s in self.shards)

    def next_delayed_in_s(self) -> float | None:
        due = [d for d in (s.next_delayed_in_s() for s in self.shards) if d is not None]
        return min(due) if due else None

    def versions(self, product_ids, deletes: bool = False) -> dict[str, int]:
        out: dict[str, int] = {}
        for i, ids in group(set(product_ids), lambda p: product_shard(p, len(self.shards))).items():
            out.update(self.shards[i].versions(ids, deletes))
        return out
