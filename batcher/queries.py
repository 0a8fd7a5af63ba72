"""The query lane: searches and product reads/deletes, answered ahead of bulk indexing.

The API (no torch; in embedded mode it cannot open Qdrant) puts each ``QueryRequest`` on
``{clipq}:requests`` and waits on its reply key. A thread of every worker takes what is waiting,
embeds all texts in one pass and all images in one, searches Qdrant in one call and pushes each
``QueryReply`` with a short TTL; a search by ``image_url`` is fetched and answered on a thread of
its own. The lane never dies: a request that makes the model or the store raise gets an error
reply (a failed batched search is answered again one request at a time), the loop survives any
exception with backoff, and requests past their deadline (Redis time) are dropped unanswered.
The wire protocol, both sides of it, is ``batcher/queue/lane.py``.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import redis

from batcher import search_asks
from batcher.decode import DecodeBudget
from batcher.duplicates import pairs as duplicate_pairs
from batcher.fetch import FetchError, UrlFetcher
from batcher.metrics import WorkerMetrics
from batcher.pause import pause_after
from batcher.policy import Backoff
from batcher.queue.keys import Keys
from batcher.queue.lane import Lane
from batcher.queue.messages import SEARCHES, QueryReply, QueryRequest
from batcher.store import VectorStore
from models.clip import ClipEncoder

log = logging.getLogger("clipq.queries")
FAILING_ROUNDS = 3  # rounds failing in a row after which the lane is reported unhealthy
KINDS = (*SEARCHES, "get", "delete", "duplicates")  # metric labels: anything else counts as "other"


def _not_found(product_id: str) -> QueryReply:
    return QueryReply.error(404, "product_not_found", f"no product {product_id!r} in the index")


def _failed() -> QueryReply:
    return QueryReply.error(500, "internal_error", "a worker failed to answer this query")


class QueryServer(threading.Thread):
    def __init__(self, client: redis.Redis, keys: Keys, encoder: ClipEncoder, store: VectorStore,
                 metrics: WorkerMetrics, max_image_pixels: int, stop: threading.Event, worker_id: str,
                 fetcher: UrlFetcher, fetch_threads: int, max_batch: int = 64, poll_s: float = 1.0,
                 budget: DecodeBudget | None = None) -> None:
        super().__init__(name="queries", daemon=True)
        self.redis, self.lane, self.encoder, self.store = client, Lane(keys), encoder, store
        self.metrics, self.max_image_pixels, self.stop_event = metrics, max_image_pixels, stop
        self.max_batch, self.poll_s, self.budget = max_batch, poll_s, budget
        self.fetcher, self.worker_id, self.failing_rounds = fetcher, worker_id, 0  # the claim stage's fetcher
        self._by_url = ThreadPoolExecutor(fetch_threads, "query-fetch")  # a slow URL holds up no other query

    def healthy(self) -> bool:
        """The lane runs and its rounds succeed: what the heartbeat and the readiness probe say."""
        return self.is_alive() and self.failing_rounds < FAILING_ROUNDS

    def stop(self) -> None:
        """Stop after the queries in hand: wake the lane if it is waiting for more."""
        self.stop_event.set()
        try:
            self.lane.wake(self.redis, self.worker_id)
        except redis.RedisError:
            pass  # it wakes by itself within poll_s
        self.join(timeout=10)
        self._by_url.shutdown(wait=False, cancel_futures=True)

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
        first = self.lane.first(self.lane.wait_request(self.redis, self.worker_id, self.poll_s))
        if first is None:
            return
        self.answer_all([first, *(self.lane.more_requests(self.redis, self.max_batch - 1) or [])])

    def answer_all(self, raw: list[bytes]) -> None:
        requests, bad = self.lane.requests(raw)
        for _ in range(bad):
            log.warning("query lane: dropped a request that is not a query")
        self.lane.reply(self.redis, self.answer(self._in_time(requests)))

    def _in_time(self, requests: list[QueryRequest]) -> list[QueryRequest]:
        """Drop the requests whose client has already given up (deadline past, Redis time)."""
        if not any(r.deadline_ms for r in requests):
            return requests
        sec, usec = self.redis.time()
        now_ms = sec * 1000 + usec // 1000
        live = self.lane.in_time(requests, now_ms)
        if dropped := len(requests) - len(live):
            self.metrics.queries_expired.inc(dropped)
            log.info("query lane: dropped %d requests whose client has given up", dropped)
        return live

    def answer(self, requests: list[QueryRequest]) -> dict[str, QueryReply]:
        replies: dict[str, QueryReply] = {}
        searches = []
        for r in requests:
            if r.kind == "image" and r.image_url:
                self._by_url.submit(self._answer_by_url, r)
                continue
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

    def _answer_by_url(self, r: QueryRequest) -> None:
        """Fetch an image search's ``image_url`` (a thread of its own), then answer it alone."""
        try:
            fetched = replace(r, image=self.fetcher.fetch(r.image_url), image_url="")
            reply = self._search([fetched])[r.id]
        except FetchError as exc:
            reply = QueryReply.error(502 if exc.transient else 422, "image_url_unavailable", str(exc))
        except Exception:  # never let one request kill the thread
            log.exception("query lane: search by image_url failed")
            reply = _failed()
        try:
            self.lane.reply(self.redis, {r.id: reply})
        except redis.RedisError as exc:
            log.warning("query lane: cannot reply (%s); the API times out", exc)

    def _search(self, requests: list[QueryRequest]) -> dict[str, QueryReply]:
        t0 = time.perf_counter()
        of = {kind: [r for r in requests if r.kind == kind] for kind in SEARCHES}
        asks, replies = {}, {}
        for planned in (search_asks.by_words(self.encoder, of["text"]),
                        search_asks.by_photo(self.encoder, of["image"], self.max_image_pixels, self.budget),
                        search_asks.like(self.store, of["like"])):
            asks |= planned[0]
            replies |= planned[1]
        if not asks:
            return replies
        hits = self.store.find(list(asks.values()))
        took_ms = round((time.perf_counter() - t0) * 1000, 2)
        for rid, found in zip(asks, hits):
            replies[rid] = QueryReply(results=found, took_ms=took_ms)
        return replies

    def _product(self, r: QueryRequest) -> QueryReply:
        if r.kind == "get":
            payload = self.store.get(r.product_id, r.tenant)
            return QueryReply(product=payload) if payload else _not_found(r.product_id)
        if r.kind == "delete":
            deleted = self.store.delete(r.product_id, int(r.version), r.tenant)
            return QueryReply(deleted=r.product_id) if deleted else _not_found(r.product_id)
        if r.kind == "duplicates":
            return QueryReply(page=duplicate_pairs.page(self.store, r.cursor or None, int(r.limit), r.tenant))
        return QueryReply.error(400, "bad_request", "unknown query kind")
