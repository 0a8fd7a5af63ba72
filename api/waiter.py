"""Status long-polls: ``GET /api/v1/queue/status/{id}?wait=SECONDS`` answers as soon as the
job is terminal, or when the wait is over.

One pub/sub subscription per API process listens on ``Keys.finished``, where workers announce
the ids whose outcome they have just recorded, and wakes the requests waiting on them. A
waiting request also re-reads its job every ``poll_s`` on its own, so an announcement lost to a
reconnect, or an outcome recorded by the reaper (which announces nothing), delays the answer by
at most that much.
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any, Awaitable, Callable

import redis.asyncio as aioredis

from batcher.queue.jobs import TERMINAL

log = logging.getLogger("clipq.api")
Status = dict[str, Any] | None


class JobWaiter:
    def __init__(self, client: aioredis.Redis, channel: str, poll_s: float = 1.0) -> None:
        self.client, self.channel, self.poll_s = client, channel, poll_s
        self._waiting: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task | None = None
        self._stopping = False

    def start(self) -> None:
        if not hasattr(self.client, "pubsub"):  # redis-py's asyncio cluster client has none
            log.info("no pub/sub on this Redis client: status long-polls re-read every %.1fs", self.poll_s)
            return
        self._task = asyncio.create_task(self._listen(), name="job-waiter")

    async def stop(self) -> None:
        """Cancel the listener; never wait on it long (its connection is closed with its client)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            # redis-py's pub/sub can swallow a cancel while it cleans up: never hang shutdown on it
            await asyncio.wait([self._task], timeout=2)

    async def wait(self, job_id: str, read: Callable[[], Awaitable[Status]], wait_s: float) -> Status:
        """Read the job until it is terminal or ``wait_s`` has passed; the last read is returned."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        woken = asyncio.Event()
        self._waiting[job_id].add(woken)
        try:
            while True:
                status = await read()
                left = deadline - loop.time()
                if status is None or status["status"] in TERMINAL or left <= 0:
                    return status
                woken.clear()
                try:
                    await asyncio.wait_for(woken.wait(), min(left, self.poll_s))
                except TimeoutError:
                    pass
        finally:
            self._waiting[job_id].discard(woken)
            if not self._waiting[job_id]:
                del self._waiting[job_id]

    def _wake(self, message: bytes | str) -> None:
        text = message.decode() if isinstance(message, bytes) else message
        for job_id in text.split():
            for event in self._waiting.get(job_id, ()):
                event.set()

    async def _listen(self) -> None:
        delay = 0.5
        while not self._stopping:
            # not ``async with``: on cancel, its clean-up would talk to Redis; the lifespan
            # closes the listener's client, and with it this connection
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                delay = 0.5
                async for message in pubsub.listen():
                    self._wake(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down or restarted: the polls carry on meanwhile
                log.debug("status long-poll listener: %s; again in %.1fs", exc, delay)
                await pubsub.aclose()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
