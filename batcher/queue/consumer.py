"""The worker's side of the queue protocol (synchronous redis-py)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from .config import QueueSettings
from .jobs import PROCESSING, Job
from .keys import Keys
from .scripts import Scripts


@dataclass(frozen=True)
class Outcome:
    """What happened to one job of a batch: ``completed``, ``failed`` (permanent) or ``retry``."""

    job_id: str
    outcome: str
    error: str = ""
    delay_ms: int = 0


@dataclass(frozen=True)
class AckResult:
    now_ms: int
    completed: int
    failed: int
    retried: int
    skipped: int


class JobConsumer:
    """Claims, reads, acknowledges and recovers jobs for one worker id."""

    def __init__(self, client: redis.Redis, settings: QueueSettings, worker_id: str) -> None:
        self.redis = client
        self.settings = settings
        self.worker_id = worker_id
        self.keys = Keys(settings.queue_namespace)
        self.scripts = Scripts(client)
        self.processing = self.keys.processing(worker_id)
        self._unmarked: list[str] = []
        self.claimed_at_ms = 0  # Redis time of the last claim script

    # -- claiming: the source of the batch collector -----------------------------------
    def register(self) -> None:
        self.redis.sadd(self.keys.workers, self.worker_id)

    def take_blocking(self, timeout_s: float) -> list[str]:
        """Block up to ``timeout_s`` for one job id, moved atomically into our processing list."""
        if self._unmarked:
            # moved here by a BLMOVE whose batch was lost to a Redis error before take_now marked
            # it: hand it out again, else it stays in our processing list, never processed
            return list(self._unmarked)
        job_id = self.redis.blmove(self.keys.queue, self.processing, max(timeout_s, 0.001), "RIGHT", "LEFT")
        if job_id is None:
            return []
        self._unmarked.append(job_id.decode())
        return [self._unmarked[-1]]

    def take_now(self, n: int) -> list[str]:
        """Move up to ``n`` more ids at once and mark every claimed job ``processing``."""
        if n <= 0 and not self._unmarked:
            return []
        k = self.keys
        out = self.scripts.claim(keys=[k.queue, self.processing, k.stats],
                                 args=[k.job(""), max(n, 0), *self._unmarked])
        self._unmarked.clear()
        self.claimed_at_ms = int(out[0])
        return [i.decode() for i in out[1:]]

    def fetch(self, job_ids: list[str]) -> list[Job]:
        """Read the records and images of claimed jobs in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self.keys.job(job_id))
            pipe.get(self.keys.image(job_id))
        replies = pipe.execute()
        jobs = []
        for h, image in zip(replies[::2], replies[1::2]):
            job = Job.from_hash(h, image) if h else None
            if job and job.status == PROCESSING:  # else: deleted, expired or a stale duplicate
                jobs.append(job)
        return jobs

    # -- acknowledging -----------------------------------------------------------------
    def ack(self, outcomes: list[Outcome]) -> AckResult:
        k, s = self.keys, self.settings
        payload = json.dumps([o.__dict__ | {"id": o.job_id} for o in outcomes])
        out = self.scripts.ack(
            keys=[self.processing, k.stats, k.failed, k.delayed],
            args=[k.job(""), k.image(""), s.job_ttl, s.failed_job_ttl, s.failed_image_ttl,
                  s.max_attempts, payload],
        )
        return AckResult(*(int(x) for x in out))

    # -- recovery ----------------------------------------------------------------------
    def promote_due(self, limit: int = 1000) -> int:
        return int(self.scripts.promote(keys=[self.keys.delayed, self.keys.queue], args=[limit]))

    def _hand_back(self, worker_id: str, mode: str, ids: tuple[str, ...] = ()) -> int:
        k, s = self.keys, self.settings
        return int(self.scripts.reap(
            keys=[k.processing(worker_id), k.queue, k.stats, k.failed, k.workers, k.heartbeat(worker_id)],
            args=[k.job(""), k.image(""), mode, worker_id, s.max_attempts, s.failed_job_ttl,
                  s.failed_image_ttl, *ids],
        ))

    def reap_dead_workers(self) -> dict[str, int]:
        """Requeue the processing lists of workers whose heartbeat has expired."""
        reaped = {}
        for member in self.redis.smembers(self.keys.workers):
            worker_id = member.decode()
            if worker_id != self.worker_id:
                n = self._hand_back(worker_id, "reap")
                if n >= 0:
                    reaped[worker_id] = n
        return reaped

    def recover_own(self) -> int:
        """At start: requeue jobs left in our list by an earlier process with our id (a restart)."""
        return self._hand_back(self.worker_id, "recover")

    def requeue_orphans(self, held: set[str]) -> int:
        """Requeue ids in our list that we do not hold: a claim whose reply was lost in a Redis
        error moved them here without our knowing. Call between claims, never during one."""
        listed = {i.decode() for i in self.redis.lrange(self.processing, 0, -1)}
        orphans = listed - held - set(self._unmarked)
        return self._hand_back(self.worker_id, "orphans", tuple(sorted(orphans))) if orphans else 0

    def release(self) -> int:
        """Give our claimed-but-unfinished jobs back to the queue (graceful shutdown)."""
        self._unmarked.clear()
        return self._hand_back(self.worker_id, "release")

    def beat(self, ttl_s: float, info: str) -> None:
        """Refresh the heartbeat, and the registration the reaper needs (it may have been
        reaped while Redis was away longer than the TTL, yet still be alive)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.keys.heartbeat(self.worker_id), info, px=int(ttl_s * 1000))
        pipe.sadd(self.keys.workers, self.worker_id)
        pipe.execute()

    def stop_beating(self) -> None:
        """Leave: no heartbeat, and no registration unless jobs remain for the reaper to recover."""
        self.redis.delete(self.keys.heartbeat(self.worker_id))
        if not self.redis.llen(self.processing):
            self.redis.srem(self.keys.workers, self.worker_id)

    # -- observation ---------------------------------------------------------------------
    def depth(self) -> int:
        return int(self.redis.llen(self.keys.queue))

    def next_delayed_in_s(self) -> float | None:
        """Seconds until the next delayed retry is due (Redis time), None when there is none."""
        first = self.redis.zrange(self.keys.delayed, 0, 0, withscores=True)
        if not first:
            return None
        sec, usec = self.redis.time()
        return max(0.0, (first[0][1] - (sec * 1000 + usec / 1000)) / 1000)
