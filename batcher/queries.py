"""The query lane: searches and product reads/deletes, answered ahead of bulk indexing.

The API stays free of torch and, in embedded mode, cannot open Qdrant, so it puts each
query (``batcher.queue.messages.QueryRequest``) on ``{clipq}:requests`` and waits on its
reply key. A thread of every worker blocks on that list, takes what is waiting, embeds all
texts in one pass and all images in one pass, searches Qdrant in one batched call, and pushes
each ``QueryReply`` to its reply key with a short TTL. It runs beside the indexing loop, so a
query waits for no batch.

The lane never dies: a request that makes the model or the store raise gets an error reply
(a batched search that fails is answered again one request at a time, so the others of its
round still get their results), and the loop survives any exception, with backoff. Requests
whose client has given up (past their deadline, in Redis time) are dropped unanswered.
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import redis

from batcher.decode import DecodeBudget, DecodeError, decode
from batcher.metrics import WorkerMetrics
from batcher.pause import pause_after
from batcher.policy import Backoff
from batcher.queue.keys import Keys
from batcher.queue.messages import SEARCHES, QueryReply, QueryRequest
from batcher.store import VectorStore
from models.clip import ClipEncoder

log = logging.getLogger("clipq.queries")
REPLY_TTL_MS = 60_000
FAILING_ROUNDS = 3  # rounds failing in a row after which the lane is reported unhealthy
KINDS = (*SEARCHES, "get", "delete")  # metric labels: anything else counts as "other"


def _not_found(product_id: str) -> QueryReply:
    return QueryReply.error(404, "product_not_found", f"no product {product_id!r} in the index")


def _failed() -> QueryReply:
    return QueryReply.error(500, "internal_error", "a worker failed to answer this query")


class QueryServer(threading.Thread):
    def __init__(self, client: redis.Redis, keys: Keys, encoder: ClipEncoder, store: VectorStore,
                 metrics: WorkerMetrics, max_image_pixels: int, stop: threading.Event, worker_id: str,
                 max_batch: int = 64, poll_s: float = 1.0, budget: DecodeBudget | None = None) -> None:
        super().__init__(name="queries", daemon=True)
        self.redis, self.keys, self.encoder, self.store = client, keys, encoder, store
        self.metrics, self.max_image_pixels, self.stop_event = metrics, max_image_pixels, stop
        self.max_batch, self.poll_s, self.budget = max_batch, poll_s, budget
        self.wake_key = keys.wake(worker_id)
        self.failing_rounds = 0

    def healthy(self) -> bool:
        """The lane runs and its rounds succeed: what the heartbeat and the readiness probe say."""
        return self.is_alive() and self.failing_rounds < FAILING_ROUNDS

    def stop(self) -> None:
        """Stop after the queries in hand: wake the lane if it is waiting for more."""
        self.stop_event.set()
        try:
            self.redis.lpush(self.wake_key, 1)
            self.redis.expire(self.wake_key, 60)
        except redis.RedisError:
            pass  # it wakes by itself within poll_s
        self.join(timeout=10)

    def run(self) -> None:
        backoff = Backoff(0.5, 10)
        while not self.stop_event.is_set():
            try:
                self.serve_round()
                backoff.reset()
                self.failing_rounds = 0
            except Exception as exc:  # never let the lane die: a dead lane silences search
                self.failing_rounds += 1
                pause_after(exc, "query lane round", backoff, self.stop_event, log)

    def serve_round(self) -> None:
        first = self.redis.blpop([self.keys.requests, self.wake_key], timeout=self.poll_s)
        if first is None or first[0].decode() == self.wake_key:
            return
        self.answer_all([first[1], *(self.redis.lpop(self.keys.requests, self.max_batch - 1) or [])])

    def answer_all(self, raw: list[bytes]) -> None:
        requests = []
        for item in raw:
            try:
                requests.append(QueryRequest.from_json(item))
            except (ValueError, TypeError):
                log.warning("query lane: dropped a request that is not a query")
        requests = self._in_time(requests)
        replies = self.answer(requests)
        pipe = self.redis.pipeline(transaction=False)
        for request_id, reply in replies.items():
            key = self.keys.reply(request_id)
            pipe.lpush(key, reply.to_json())
            pipe.pexpire(key, REPLY_TTL_MS)
        pipe.execute()

    def _in_time(self, requests: list[QueryRequest]) -> list[QueryRequest]:
        """Drop the requests whose client has already given up (deadline past, Redis time)."""
        if not any(r.deadline_ms for r in requests):
            return requests
        sec, usec = self.redis.time()
        now_ms = sec * 1000 + usec // 1000
        live = [r for r in requests if not r.deadline_ms or r.deadline_ms > now_ms]
        if dropped := len(requests) - len(live):
            self.metrics.queries_expired.inc(dropped)
            log.info("query lane: dropped %d requests whose client has given up", dropped)
        return live

    def answer(self, requests: list[QueryRequest]) -> dict[str, QueryReply]:
        replies: dict[str, QueryReply] = {}
        searches = []
        for r in requests:
            try:
                if r.kind in SEARCHES:
                    searches.append(r)
                else:
                    replies[r.id] = self._product(r)
            except Exception:  # never let one request kill the lane
                log.exception("query lane: %s request failed", r.kind)
                replies[r.id] = _failed()
        if searches:
            replies |= self._search_isolated(searches)
        for r in requests:
            self.metrics.queries.labels(r.kind if r.kind in KINDS else "other").inc()
        return replies

    def _search_isolated(self, requests: list[QueryRequest]) -> dict[str, QueryReply]:
        """One batched search; when it raises, each request alone, so only the bad one fails."""
        try:
            return self._search(requests)
        except Exception:
            if len(requests) == 1:
                log.exception("query lane: a %s search failed", requests[0].kind)
                return {requests[0].id: _failed()}
            log.warning("query lane: a batched search of %d failed: answering each alone", len(requests))
            return {k: v for r in requests for k, v in self._search_isolated([r]).items()}

    def _search(self, requests: list[QueryRequest]) -> dict[str, QueryReply]:
        t0 = time.perf_counter()
        replies, vectors, asked = {}, [], []
        texts = [r for r in requests if r.kind == "text"]
        if texts:
            vectors.append(self.encoder.embed_texts([r.text for r in texts]))
            asked += texts
        images, pixels = [], []
        for r in (r for r in requests if r.kind == "image"):
            try:
                pixels.append(decode(r.image, self.encoder.preprocessing, self.max_image_pixels, self.budget))
                images.append(r)
            except DecodeError as exc:
                replies[r.id] = QueryReply.error(422, "invalid_image", str(exc))
        if images:
            vectors.append(self.encoder.embed_images(np.stack(pixels)))
            asked += images
        if not asked:
            return replies
        hits = self.store.search(np.concatenate(vectors), [int(r.limit) for r in asked], [r.filter for r in asked])
        took_ms = round((time.perf_counter() - t0) * 1000, 2)
        for r, found in zip(asked, hits):
            replies[r.id] = QueryReply(results=found, took_ms=took_ms)
        return replies

    def _product(self, r: QueryRequest) -> QueryReply:
        if r.kind == "get":
            payload = self.store.get(r.product_id)
            return QueryReply(product=payload) if payload else _not_found(r.product_id)
        if r.kind == "delete":
            deleted = self.store.delete(r.product_id, int(r.version))
            return QueryReply(deleted=r.product_id) if deleted else _not_found(r.product_id)
        return QueryReply.error(400, "bad_request", "unknown query kind")
