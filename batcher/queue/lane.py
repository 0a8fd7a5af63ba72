"""The query lane's wire protocol, both sides of it: where a request goes and how it is read,
where its reply goes, for how long, and how it is waited for.

The API (redis.asyncio) asks and waits; a worker (redis, sync) takes and answers. Each side
passes its own client: a method that runs a command returns what the client returns (a value,
or an awaitable on the API's side), and the rest only builds calls and reads answers, so the
keys, the TTLs and the encoding (``messages.py``) are used here and nowhere else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batcher.queue import calls
from batcher.queue.scripts import ScriptCall
from batcher.queue.keys import Keys
from batcher.queue.messages import QueryReply, QueryRequest

REPLY_TTL_MS = 60_000  # a reply nobody takes (its client gave up) goes away
REPLY_GRACE_S = 0.5  # past a search's time-out, for the BLPOP's own answer to come back
WAKE_TTL_S = 60


@dataclass(frozen=True)
class Lane:
    keys: Keys

    # -- the API's side: ask, then wait for the reply ----------------------------------
    def ask(self, request: QueryRequest, max_pending: int, timeout_s: float) -> ScriptCall:
        """Queue ``request`` unless the lane holds ``max_pending``; ask.lua gives it its deadline
        (Redis time + ``timeout_s``). Read the script's answer with ``queued``."""
        return calls.ask(self.keys, request.to_json(), max_pending, int(timeout_s * 1000))

    @staticmethod
    def queued(answer: list) -> tuple[bool, int]:
        """(whether the request was queued, how many requests the lane holds)."""
        queued, pending = answer
        return bool(queued), int(pending)

    def wait_reply(self, client, request: QueryRequest, timeout_s: float):
        """BLPOP of the request's reply key; read its answer with ``reply_of``."""
        return client.blpop([self.keys.reply(request.id)], timeout=timeout_s)

    @staticmethod
    def reply_of(popped) -> QueryReply | None:
        return None if popped is None else QueryReply.from_json(popped[1])

    # -- a worker's side: take what waits, answer it -----------------------------------
    def wait_request(self, client, worker_id: str, timeout_s: float):
        """BLPOP of the first request, or of the worker's wake-up (``wake``); read with ``first``."""
        return client.blpop([self.keys.requests, self.keys.wake(worker_id)], timeout=timeout_s)

    def first(self, popped) -> bytes | None:
        """The raw request taken by ``wait_request``; None on a time-out or a wake-up."""
        if popped is None or popped[0].decode() != self.keys.requests:
            return None
        return popped[1]

    def more_requests(self, client, count: int):
        """LPOP of up to ``count`` more raw requests (None when none waits)."""
        return client.lpop(self.keys.requests, count)

    @staticmethod
    def requests(raw: list[bytes]) -> tuple[list[QueryRequest], int]:
        """The requests among ``raw``, and how many items were not one."""
        out = []
        for item in raw:
            try:
                out.append(QueryRequest.from_json(item))
            except (ValueError, TypeError):
                pass
        return out, len(raw) - len(out)

    @staticmethod
    def in_time(requests: list[QueryRequest], now_ms: int) -> list[QueryRequest]:
        """The requests whose client still waits (no deadline, or one after ``now_ms``, Redis time)."""
        return [r for r in requests if not r.deadline_ms or r.deadline_ms > now_ms]

    def reply(self, client, replies: dict[str, QueryReply]) -> Any:
        """Push each reply on its request's reply key, with its TTL: one pipeline."""
        pipe = client.pipeline(transaction=False)
        for request_id, answer in replies.items():
            key = self.keys.reply(request_id)
            pipe.lpush(key, answer.to_json())
            pipe.pexpire(key, REPLY_TTL_MS)
        return pipe.execute()

    def wake(self, client, worker_id: str) -> Any:
        """End the worker's ``wait_request`` at once (it is stopping)."""
        pipe = client.pipeline(transaction=False)
        pipe.lpush(self.keys.wake(worker_id), 1)
        pipe.expire(self.keys.wake(worker_id), WAKE_TTL_S)
        return pipe.execute()
