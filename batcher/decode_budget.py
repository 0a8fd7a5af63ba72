"""The byte budget the decode threads share (``WORKER_DECODE_MEMORY``): see ``batcher.decode``."""
from __future__ import annotations

import threading


class DecodeBudget:
    """Bytes of pixels the decode threads may hold at once: a byte semaphore."""

    def __init__(self, total_bytes: int) -> None:
        self.total = total_bytes
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, n: int) -> None:
        """Wait until ``n`` bytes are free (``n`` must not exceed ``total``), then hold them."""
        with self._cond:
            self._cond.wait_for(lambda: self.used + n <= self.total)
            self.used += n

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()
