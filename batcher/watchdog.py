"""The stall watchdog: a batch may spend at most ``WORKER_STALL_TIMEOUT`` in any one stage.

Each stage wraps its work on a batch in ``watch(stage)``. A thread of its own checks the
stages now and then; when one has held its batch too long (a hung CUDA call, a store call
that never returns) it calls ``on_stall`` once: the worker stops its heartbeat, reports
itself not live, and exits non-zero, so the reaper of another worker requeues its jobs and
the orchestrator restarts it. Waiting for work is never a stall: only time spent on a batch
is watched.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("clipq.worker")


class Watchdog(threading.Thread):
    def __init__(self, timeout_s: float, on_stall: Callable[[str, float], None],
                 clock: Callable[[], float] = time.monotonic, check_every_s: float | None = None) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.timeout_s, self.on_stall, self.clock = timeout_s, on_stall, clock
        self.check_every_s = check_every_s or min(5.0, timeout_s / 4)
        self._since: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self.tripped = False

    @contextmanager
    def watch(self, stage: str) -> Iterator[None]:
        with self._lock:
            self._since[stage] = self.clock()
        try:
            yield
        finally:
            with self._lock:
                self._since.pop(stage, None)

    def stalled(self) -> tuple[str, float] | None:
        """The stage that has held its batch longer than the timeout, and for how long."""
        now = self.clock()
        with self._lock:
            late = [(stage, now - t0) for stage, t0 in self._since.items() if now - t0 > self.timeout_s]
        return max(late, key=lambda s: s[1]) if late else None

    def run(self) -> None:
        while not self._stop_event.wait(self.check_every_s):
            if stall := self.stalled():
                self.tripped = True
                log.error("stall: a batch has spent %.0fs in the %s stage (limit %.0fs): giving up this "
                          "worker; its jobs go back through the reaper", stall[1], stall[0], self.timeout_s)
                self.on_stall(*stall)
                return

    def stop(self) -> None:
        self._stop_event.set()


class Unwatched:
    """Stands in for a watchdog where none runs (tools, unit tests of one stage)."""

    tripped = False

    @contextmanager
    def watch(self, stage: str) -> Iterator[None]:
        yield
