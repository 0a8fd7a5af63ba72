"""Pure batching and retry policy: no Redis, no model, no sleeps. Time is passed in.

``collect`` is the dynamic micro-batcher: block for the first item, then keep taking items
until the batch is full or ``max_wait_s`` has passed since the first one. Whatever is
already waiting is taken at once, so a deep queue yields full batches with no waiting.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

T = TypeVar("T")


class Source(Protocol[T]):
    def take_blocking(self, timeout_s: float) -> list[T]:
        """Wait up to ``timeout_s`` for one item; [] on time-out."""

    def take_now(self, n: int) -> list[T]:
        """Take up to ``n`` items that are already there, without waiting."""


@dataclass(frozen=True)
class BatchPolicy:
    max_size: int
    max_wait_s: float

    def __post_init__(self) -> None:
        if self.max_size < 1 or self.max_wait_s < 0:
            raise ValueError(f"invalid batch policy {self}")


def collect(source: Source[T], policy: BatchPolicy, first_timeout_s: float,
            clock: Callable[[], float] = time.monotonic) -> list[T]:
    """Form one batch from ``source`` under ``policy``; [] when nothing came in time."""
    batch = source.take_blocking(first_timeout_s)
    if not batch:
        return []
    deadline = clock() + policy.max_wait_s
    while True:
        batch += source.take_now(policy.max_size - len(batch))
        remaining = deadline - clock()
        if len(batch) >= policy.max_size or remaining <= 0:
            return batch
        more = source.take_blocking(remaining)
        if not more:
            return batch
        batch += more


class BatchCeiling:
    """The largest batch the device is trusted with, lowered for a while after an OOM.

    Not thread-safe: its owner (the infer stage) serialises calls."""

    def __init__(self, max_size: int, cooldown_s: float) -> None:
        self.max_size = max_size
        self.cooldown_s = cooldown_s
        self._lowered: int | None = None
        self._until = 0.0

    def current(self, now: float) -> int:
        if self._lowered is not None and now < self._until:
            return self._lowered
        self._lowered = None
        return self.max_size

    def lower(self, failed_size: int, now: float) -> int:
        """A batch of ``failed_size`` ran out of memory: allow half of it until the cooldown ends."""
        self._lowered = max(1, min(failed_size // 2, self.current(now)))
        self._until = now + self.cooldown_s
        return self._lowered


class Backoff:
    """Waits between attempts to reach a service that is down: ``first_s``, doubling up to
    ``cap_s``; ``reset`` after a success. The caller does the waiting (on its stop event)."""

    def __init__(self, first_s: float, cap_s: float) -> None:
        self.first_s, self.cap_s = first_s, cap_s
        self._next = first_s

    def next(self) -> float:
        delay = self._next
        self._next = min(delay * 2, self.cap_s)
        return delay

    def reset(self) -> None:
        self._next = self.first_s


def backoff_ms(attempt: int, base_ms: int, cap_ms: int, rand: Callable[[], float] = random.random) -> int:
    """Exponential backoff with full jitter for retry number ``attempt`` (1-based)."""
    ceiling = min(cap_ms, base_ms * 2 ** max(attempt - 1, 0))
    return int(ceiling / 2 + rand() * ceiling / 2)
