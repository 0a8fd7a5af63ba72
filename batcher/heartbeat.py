"""A heartbeat key with a server-side TTL, refreshed from a thread of its own.

Each beat stores the worker's status (rebuilt by ``info()``) and offers a sample of the
queue to the dashboard's history.

The main loop may spend a long time in one batch; the heartbeat never waits for it. When
the process dies the key expires in Redis, and other workers' reapers requeue its jobs.
"""
from __future__ import annotations

import json
import logging
import threading
from typing import Callable

import redis

from batcher.queue.consumer import JobConsumer

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    def __init__(self, consumer: JobConsumer, ttl_s: float, info: Callable[[], dict]) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.consumer = consumer
        self.ttl_s = ttl_s
        self.info = info
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.beat_now()
                self.consumer.sample_history()
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
            except Exception:  # a cluster slot error, a bug in info(): never let the beat die
                log.exception("heartbeat failed")
            self._stop_event.wait(self.ttl_s / 3)

    def beat_now(self) -> None:
        self.consumer.beat(self.ttl_s, json.dumps(self.info()))

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)
        try:
            self.consumer.stop_beating()
        except Exception:  # Redis gone: the key expires by itself
            pass
