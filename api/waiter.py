"""Status long-polls: ``GET /api/v1/queue/status/{id}?wait=SECONDS`` answers as soon as the
job is terminal, or when the wait is over.

One pub/sub subscription per API process listens on ``Keys.finished``, where workers announce
the ids whose outcome they have just recorded, and wakes the requests waiting on them. Every
``poll_s`` one sweep also reads the status of every waiting job in one pipeline and wakes those
that are over, so an announcement lost to a reconnect, or an outcome recorded by the reaper
(which announces nothing), delays the answer by at most that much. A waiting request reads its
job only when it starts, when it is woken and when its wait ends: 1,000 waiting requests cost
one pipelined read per ``poll_s``, not 1,000 reads.
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

from batcher.queue.jobs import TERMINAL

log = logging.getLogger("clipq.api")
Status = dict[str, Any] | None
Settled = Callable[[list[str]], Awaitable[set[str]]]  # the ids among these that are over (or gone)
# the ids announced as finished: [] once subscribed, then each announcement (JobQueue's gateway)
Announcements = Callable[[], AsyncIterator[list[str]]]


class JobWaiter:
    def __init__(self, announcements: Announcements | None, settled: Settled, poll_s: float = 1.0) -> None:
        """``announcements`` None: no pub/sub (redis-py's asyncio cluster client has none)."""
        self.announcements, self.settled, self.poll_s = announcements, settled, poll_s
        self._waiting: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self.listeners: list[Callable[[list[str]], None]] = []  # also told of each announcement (webhooks)

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._sweep(), name="job-waiter-sweep"))
        if self.announcements is None:
            log.info("no pub/sub on this Redis client: status long-polls answer within %.1fs", self.poll_s)
            return
        self._tasks.append(asyncio.create_task(self._listen(), name="job-waiter"))

    async def stop(self) -> None:
        """Cancel the tasks; never wait on them long (the listener's connection closes with its client)."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # redis-py's pub/sub can swallow a cancel while it cleans up: never hang shutdown on it
            await asyncio.wait(self._tasks, timeout=2)

    async def wait(self, job_id: str, read: Callable[[], Awaitable[Status]], wait_s: float) -> Status:
        """Read the job until it is terminal or ``wait_s`` has passed; the last read is returned."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        woken = asyncio.Event()
        self._waiting[job_id].add(woken)
        try:
            while True:
                woken.clear()  # before the read: a wake-up during it is not lost
                status = await read()
                left = deadline - loop.time()
                if status is None or status["status"] in TERMINAL or left <= 0:
                    return status
                try:
                    await asyncio.wait_for(woken.wait(), left)
                except TimeoutError:
                    pass
        finally:
            self._waiting[job_id].discard(woken)
            if not self._waiting[job_id]:
                del self._waiting[job_id]

    def _wake(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            for event in self._waiting.get(job_id, ()):
                event.set()

    async def _sweep(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.poll_s)
            if not self._waiting:
                continue
            try:
                self._wake(await self.settled(list(self._waiting)))
            except Exception as exc:  # Redis down: the waits end on their own deadline
                log.debug("status long-poll sweep: %s", exc)

    async def _listen(self) -> None:
        delay = 0.5
        while not self._stopping:
            try:
                async for job_ids in self.announcements():
                    delay = 0.5  # subscribed
                    self._wake(job_ids)
                    for listener in self.listeners:
                        listener(job_ids)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down or restarted: the polls carry on meanwhile
                log.debug("status long-poll listener: %s; again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
