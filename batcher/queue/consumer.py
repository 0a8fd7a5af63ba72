"""The worker's side of the queue protocol (synchronous redis-py).

The consumer alone knows which jobs this worker holds: an id is held from its claim until it
is acknowledged, released, or found gone. The claim stage and the store stage both touch
that set, so it lives behind a lock.
"""
from __future__ import annotations

import threading

import redis

from . import calls, history
from .calls import AckResult, Outcome
from .config import QueueSettings
from .jobs import PROCESSING, Job
from .keys import Keys
from .scripts import Scripts


class JobConsumer:
    """Claims, reads, acknowledges and recovers jobs for one worker id."""

    def __init__(self, client: redis.Redis, settings: QueueSettings, worker_id: str) -> None:
        self._redis = client
        self.settings = settings
        self.worker_id = worker_id
        self.keys = Keys(settings.queue_namespace)
        self._scripts = Scripts(client)
        self._processing = self.keys.processing(worker_id)
        self._unmarked: list[str] = []  # moved here by BLMOVE, not yet marked by the claim script
        self._held: set[str] = set()
        self._held_lock = threading.Lock()
        self.claimed_at_ms = 0  # Redis time of the last claim script

    # -- what this worker holds ------------------------------------------------------------
    def held(self) -> set[str]:
        with self._held_lock:
            return set(self._held) | set(self._unmarked)

    def _hold(self, ids) -> None:
        with self._held_lock:
            self._held.update(ids)

    def _let_go(self, ids) -> None:
        with self._held_lock:
            self._held.difference_update(ids)

    def in_flight(self) -> int:
        """Jobs in our processing list (claimed, not yet acknowledged or released)."""
        return int(self._redis.llen(self._processing))

    # -- claiming: the source of the batch collector -----------------------------------
    def register(self) -> None:
        self._redis.sadd(self.keys.workers, self.worker_id)

    def take_blocking(self, timeout_s: float) -> list[str]:
        """Block up to ``timeout_s`` for one job id, moved atomically into our processing list."""
        if self._unmarked:
            # moved here by a BLMOVE whose batch was lost to a Redis error before take_now marked
            # it: hand it out again, else it stays in our processing list, never processed
            return list(self._unmarked)
        job_id = self._redis.blmove(self.keys.queue, self._processing, max(timeout_s, 0.001), "RIGHT", "LEFT")
        if job_id is None:
            return []
        self._unmarked.append(job_id.decode())
        return [self._unmarked[-1]]

    def take_now(self, n: int) -> list[str]:
        """Move up to ``n`` more ids at once and mark every claimed job ``processing``."""
        if n <= 0 and not self._unmarked:
            return []
        out = self._scripts.run(calls.claim(self.keys, self.worker_id, n, self._unmarked))
        moved = [i.decode() for i in out[1:]]
        self._hold(self._unmarked + moved)
        self._unmarked.clear()
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
            self._let_go(job_ids)  # still in our list: the next orphan round requeues them
            raise
        jobs = []
        for h, image in zip(replies[::2], replies[1::2]):
            job = Job.from_hash(h, image) if h else None
            if job and job.status == PROCESSING:
                jobs.append(job)
        self._let_go(set(job_ids) - {j.job_id for j in jobs})
        return jobs

    def mark_started(self, job_ids: list[str]) -> None:
        """These jobs reach the model now: if this worker dies, they are charged an attempt."""
        if job_ids:
            self._scripts.run(calls.started(self.keys, self.worker_id, job_ids))

    # -- acknowledging -----------------------------------------------------------------
    def ack(self, outcomes: list[Outcome]) -> AckResult:
        """Record the outcomes; the result says, job by job, what was recorded or skipped."""
        reply = self._scripts.run(calls.ack(self.keys, self.settings, self.worker_id, outcomes))
        self._let_go(o.job_id for o in outcomes)
        return AckResult.parse(reply)  # ack.lua announced the finished ids on ``keys.finished``

    # -- versions (batcher/stages/versions.py) -------------------------------------------
    def versions(self, product_ids, deletes: bool = False) -> dict[str, int]:
        """Each product's newest version (its last upload or delete), or with ``deletes`` the
        version of its last delete; a product without one is absent."""
        ids = sorted(set(product_ids))
        values = self._redis.hmget(self.keys.deletes if deletes else self.keys.versions, ids) if ids else []
        return {p: int(v) for p, v in zip(ids, values) if v is not None}

    # -- recovery ----------------------------------------------------------------------
    def promote_due(self, limit: int = 1000) -> int:
        return int(self._scripts.run(calls.promote(self.keys, limit)))

    def expire_failed_images(self, limit: int = 1000) -> int:
        """Drop failed jobs' images older than FAILED_IMAGE_TTL (counted out of the byte budget);
        returns the image bytes the queue holds afterwards."""
        return int(self._scripts.run(calls.expire_images(self.keys, self.settings, limit)))

    def _hand_back(self, worker_id: str, mode: str, ids: tuple[str, ...] = ()) -> int:
        return int(self._scripts.run(calls.reap(self.keys, self.settings, worker_id, mode, ids)))

    def reap_dead_workers(self) -> dict[str, int]:
        """Requeue the processing lists of workers whose heartbeat has expired."""
        reaped = {}
        for member in self._redis.smembers(self.keys.workers):
            worker_id = member.decode()
            if worker_id != self.worker_id:
                n = self._hand_back(worker_id, "reap")
                if n >= 0:
                    reaped[worker_id] = n
        return reaped

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
        self._unmarked.clear()
        n = self._hand_back(self.worker_id, "release")
        with self._held_lock:
            self._held.clear()
        return n

    # -- presence and observation ----------------------------------------------------------
    def beat(self, ttl_s: float, info: str) -> None:
        """Refresh the heartbeat, and the registration the reaper needs (it may have been
        reaped while Redis was away longer than the TTL, yet still be alive)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self.keys.heartbeat(self.worker_id), info, px=int(ttl_s * 1000))
        pipe.sadd(self.keys.workers, self.worker_id)
        pipe.execute()

    def stop_beating(self) -> None:
        """Leave: no heartbeat, and no registration unless jobs remain for the reaper to recover."""
        self._redis.delete(self.keys.heartbeat(self.worker_id))
        if not self.in_flight():
            self._redis.srem(self.keys.workers, self.worker_id)

    def sample_history(self) -> int:
        """Offer a queue sample to the dashboard's history (at most one per gap is kept)."""
        return int(self._scripts.run(history.sample(self.keys)))

    def depth(self) -> int:
        return int(self._redis.llen(self.keys.queue))

    def next_delayed_in_s(self) -> float | None:
        """Seconds until the next delayed retry is due (Redis time), None when there is none."""
        first = self._redis.zrange(self.keys.delayed, 0, 0, withscores=True)
        if not first:
            return None
        sec, usec = self._redis.time()
        return max(0.0, (first[0][1] - (sec * 1000 + usec / 1000)) / 1000)
