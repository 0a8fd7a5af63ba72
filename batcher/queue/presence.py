"""A worker's presence on the queue, holding no job (the base of ``JobConsumer``).

Its registration and heartbeat, the housekeeping any live worker does for all of them
(promote due retries, requeue the jobs of dead workers, drop expired failed images), and what
it reads (depth, its own jobs in flight, the next delayed retry, product versions). Nothing
here touches the set of jobs the worker holds: that is ``JobConsumer``'s alone.
"""
from __future__ import annotations

import redis

from . import calls, history
from .config import QueueConfig
from .keys import Keys
from .scripts import Scripts


class Presence:
    """One worker id on the queue: its heartbeat, the housekeeping it does, what it reads."""

    def __init__(self, client: redis.Redis, config: QueueConfig, worker_id: str, keys: Keys | None = None) -> None:
        self._redis = client
        self.config = config
        self.worker_id = worker_id
        self.keys = keys or Keys(config.namespace)  # a shard's keys (batcher/queue/shards.py)
        self._scripts = Scripts(client)
        self._processing = self.keys.processing(worker_id)

    def register(self) -> None:
        self._redis.sadd(self.keys.workers, self.worker_id)

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
        """Queued jobs of every tenant (not those delayed for a retry)."""
        pipe = self._redis.pipeline(transaction=False)
        for key in self.keys.pending_lists(self._redis.lrange(self.keys.ring, 0, -1)):
            pipe.llen(key)
        return sum(int(n) for n in pipe.execute())

    def next_delayed_in_s(self) -> float | None:
        """Seconds until the next delayed retry is due (Redis time), None when there is none."""
        first = self._redis.zrange(self.keys.delayed, 0, 0, withscores=True)
        if not first:
            return None
        sec, usec = self._redis.time()
        return max(0.0, (first[0][1] - (sec * 1000 + usec / 1000)) / 1000)

    def in_flight(self) -> int:
        """Jobs in our processing list (claimed, not yet acknowledged or released)."""
        return int(self._redis.llen(self._processing))

    # -- versions (batcher/stages/versions.py) -------------------------------------------
    def versions(self, product_ids, deletes: bool = False) -> dict[str, int]:
        """Each product's newest version (its last upload or delete), or with ``deletes`` the
        version of its last delete; a product without one is absent."""
        ids = sorted(set(product_ids))
        values = self._redis.hmget(self.keys.deletes if deletes else self.keys.versions, ids) if ids else []
        return {p: int(v) for p, v in zip(ids, values) if v is not None}

    # -- housekeeping -----------------------------------------------------------------
    def promote_due(self, limit: int = 1000) -> int:
        return int(self._scripts.run(calls.promote(self.keys, limit)))

    def expire_failed_images(self, limit: int = 1000) -> int:
        """Drop failed jobs' images older than FAILED_IMAGE_TTL (counted out of the byte budget);
        returns the image bytes the queue holds afterwards."""
        return int(self._scripts.run(calls.expire_images(self.keys, self.config, limit)))

    def _hand_back(self, worker_id: str, mode: str, ids: tuple[str, ...] = ()) -> int:
        return int(self._scripts.run(calls.reap(self.keys, self.config, worker_id, mode, ids)))

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
