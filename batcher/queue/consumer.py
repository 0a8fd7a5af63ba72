"""The worker's side of the queue protocol (synchronous redis-py).

The consumer alone knows which jobs this worker holds: an id is held from its claim until it
is acknowledged, released, or found gone. The claim stage and the store stage both touch
that set, so it lives behind a lock. What a worker does on the queue without holding a job
(heartbeat, housekeeping, reads) is its base, ``Presence`` (presence.py).
"""
from __future__ import annotations

import logging
import threading
import time

import redis

from . import calls
from .calls import AckResult, Outcome
from .config import QueueConfig
from .durable import Durability, NotReplicated, run_durable
from .jobs import PROCESSING, Job
from .keys import Keys
from .presence import Presence

log = logging.getLogger(__name__)


class JobConsumer(Presence):
    """Claims, reads, acknowledges and recovers jobs for one worker id."""

    def __init__(self, client: redis.Redis, config: QueueConfig, worker_id: str, keys: Keys | None = None) -> None:
        super().__init__(client, config, worker_id, keys)
        self._held: set[str] = set()
        self._held_lock = threading.Lock()
        self.claimed_at_ms = 0  # Redis time of the last claim script
        self.durability = Durability(config.wait_replicas, config.wait_timeout_ms)
        self.unreplicated_acks = 0  # acks that REDIS_WAIT_REPLICAS replicas did not confirm in time

    # -- what this worker holds ------------------------------------------------------------
    def held(self) -> set[str]:
        with self._held_lock:
            return set(self._held)

    def _hold(self, ids) -> None:
        with self._held_lock:
            self._held.update(ids)

    def let_go(self, ids) -> None:
        with self._held_lock:
            self._held.difference_update(ids)

    # -- claiming: the source of the batch collector -----------------------------------
    def take_blocking(self, timeout_s: float) -> list[str]:
        """Block up to ``timeout_s`` until some tenant has queued jobs, then claim one (another
        worker may claim it first: then wait again, within the time left)."""
        deadline = time.monotonic() + timeout_s
        while self.wait_for_work(deadline - time.monotonic()):
            if got := self.take_now(1):
                return got
            if time.monotonic() >= deadline:
                break
        return []

    def wait_for_work(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until the ring lists a tenant with queued jobs. ``BLMOVE ring
        ring RIGHT RIGHT`` moves nothing (the tenant goes back where it was): no job id moves, so
        a lost reply leaves nothing behind, and no state of ours changes (a thread of its own may
        call this: ``standing.StandingWaits``)."""
        return self._redis.blmove(self.keys.ring, self.keys.ring, max(timeout_s, 0.001), "RIGHT", "RIGHT") is not None

    def take_now(self, n: int) -> list[str]:
        """Claim up to ``n`` jobs at once, round-robin over the tenants (``lua/claim.lua``)."""
        if n <= 0:
            return []
        out = self._scripts.run(calls.claim(self.keys, self.worker_id, n, self.config.fair))
        moved = [i.decode() for i in out[1:]]
        self._hold(moved)
        self.claimed_at_ms = int(out[0])
        return moved

    def fetch(self, job_ids: list[str]) -> list[Job]:
        """Read the records and images of claimed jobs in one round trip; ids without a job to
        do (deleted, expired, a stale duplicate) are no longer held."""
        try:
            pipe = self._redis.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hgetall(self.keys.job(job_id))
                pipe.get(self.keys.image(job_id))
            replies = pipe.execute()
        except Exception:
            self.let_go(job_ids)  # still in our list: the next orphan round requeues them
            raise
        jobs = []
        for h, image in zip(replies[::2], replies[1::2]):
            job = Job.from_hash(h, image) if h else None
            if job and job.status == PROCESSING:
                jobs.append(job)
        self.let_go(set(job_ids) - {j.job_id for j in jobs})
        return jobs

    def mark_started(self, job_ids: list[str]) -> None:
        """These jobs reach the model now: if this worker dies, they are charged an attempt."""
        if job_ids:
            self._scripts.run(calls.started(self.keys, self.worker_id, job_ids))

    # -- acknowledging -----------------------------------------------------------------
    def ack(self, outcomes: list[Outcome]) -> AckResult:
        """Record the outcomes; the result says, job by job, what was recorded or skipped.

        With REDIS_WAIT_REPLICAS=k, a WAIT follows on the same connection. When fewer replicas
        confirm it, the ack has still run on the master (running it again would find the jobs
        no longer ours): a warning and ``unreplicated_acks`` say so, and the result stands. A
        failover before the replica catches up would bring those jobs back as processing by
        this worker; the reaper requeues them once it stops beating, or ``requeue_orphans``
        does, and they run again: at least once, as ever."""
        unreplicated = 0
        try:
            reply = run_durable(self._redis, self._scripts,
                                calls.ack(self.keys, self.config, self.worker_id, outcomes), self.durability)
        except NotReplicated as exc:
            unreplicated = 1
            self.unreplicated_acks += 1
            log.warning("ack of %d jobs not confirmed by replicas: %s", len(outcomes), exc)
            reply = exc.reply
        self.let_go(o.job_id for o in outcomes)
        return AckResult.parse(reply, unreplicated)  # ack.lua announced the finished ids on ``keys.finished``

    # -- recovery ----------------------------------------------------------------------
    def recover_own(self) -> int:
        """At start: requeue jobs left in our list by an earlier process with our id (a restart)."""
        return self._hand_back(self.worker_id, "recover")

    def requeue_orphans(self) -> int:
        """Requeue ids in our list that we do not hold: a claim whose reply was lost in a Redis
        error moved them here without our knowing. Call between claims, never during one."""
        listed = {i.decode() for i in self._redis.lrange(self._processing, 0, -1)}
        orphans = listed - self.held()
        return self._hand_back(self.worker_id, "orphans", tuple(sorted(orphans))) if orphans else 0

    def release(self) -> int:
        """Give our claimed-but-unfinished jobs back to the queue (graceful shutdown)."""
        n = self._hand_back(self.worker_id, "release")
        with self._held_lock:
            self._held.clear()
        return n

