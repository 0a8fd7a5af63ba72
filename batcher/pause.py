"""What a thread that must never die does after a failed round: log it, then wait its backoff."""
from __future__ import annotations

import logging
import threading

import redis

from batcher.policy import Backoff


def pause_after(exc: Exception, what: str, backoff: Backoff, stop: threading.Event, log: logging.Logger) -> None:
    """A Redis outage is a warning; anything else is a bug, logged with its traceback."""
    delay = backoff.next()
    if isinstance(exc, redis.RedisError):
        log.warning("%s: redis unavailable (%s); retrying in %.1fs", what, exc, delay)
    else:
        log.exception("%s failed; retrying in %.1fs", what, delay)
    stop.wait(delay)
