"""The query lane: searches and product reads/deletes, answered ahead of bulk indexing.

The API stays free of torch and, in embedded mode, cannot open Qdrant, so it puts each
query (``batcher.queue.messages.QueryRequest``) on ``{clipq}:requests`` and waits on its
reply key. A thread of every worker blocks on that list, takes what is waiting, embeds all
texts in one pass and all images in one pass, searches Qdrant in one batched call, and pushes
each ``QueryReply`` to its reply key with a short TTL. It runs beside the indexing loop, so a
query waits for no batch.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import redis

from batcher.decode import DecodeError, decode
from batcher.fetch import FetchError, UrlFetcher
from batcher.metrics import WorkerMetrics
from batcher.policy import Backoff
from batcher.queue.keys import Keys
from batcher.queue.messages import SEARCHES, QueryReply, QueryRequest
from batcher.store import VectorStore
from models.clip import ClipEncoder

log = logging.getLogger("clipq.queries")
REPLY_TTL_MS = 60_000


def _not_found(product_id: str) -> QueryReply:
    return QueryReply.error(404, "product_not_found", f"no product {product_id!r} in the index")


class QueryServer(threading.Thread):
    def __init__(self, client: redis.Redis, keys: Keys, encoder: ClipEncoder, store: VectorStore,
                 metrics: WorkerMetrics, max_image_pixels: int, stop: threading.Event, worker_id: str,
                 max_batch: int = 64, poll_s: float = 1.0, fetcher: UrlFetcher | None = None,
                 fetch_threads: int = 8) -> None:
        super().__init__(name="queries", daemon=True)
        self.redis, self.keys, self.encoder, self.store = client, keys, encoder, store
        self.metrics, self.max_image_pixels, self.stop_event = metrics, max_image_pixels, stop
        self.max_batch, self.poll_s = max_batch, poll_s
        self.wake_key = keys.wake(worker_id)
        self.fetcher = fetcher
        self._by_url = ThreadPoolExecutor(fetch_threads, "query-fetch")  # a slow URL holds up no other query

    def stop(self) -> None:
        """Stop after the queries in hand: wake the lane if it is waiting for more."""
        self.stop_event.set()
        try:
            self.redis.lpush(self.wake_key, 1)
            self.redis.expire(self.wake_key, 60)
        except redis.RedisError:
            pass  # it wakes by itself within poll_s
        self.join(timeout=10)
        self._by_url.shutdown(wait=False, cancel_futures=True)

    def run(self) -> None:
        backoff = Backoff(0.5, 10)
        while not self.stop_event.is_set():
            try:
                first = self.redis.blpop([self.keys.requests, self.wake_key], timeout=self.poll_s)
                if first is None or first[0].decode() == self.wake_key:
                    continue
                raw = [first[1], *(self.redis.lpop(self.keys.requests, self.max_batch - 1) or [])]
                self.answer_all(raw)
                backoff.reset()
            except redis.RedisError as exc:
                log.warning("query lane: redis unavailable (%s)", exc)
                self.stop_event.wait(backoff.next())

    def answer_all(self, raw: list[bytes]) -> None:
        requests = []
        for item in raw:
            try:
                requests.append(QueryRequest.from_json(item))
            except (ValueError, TypeError):
                log.warning("query lane: dropped a request that is not a query")
        self._send(self.answer(requests))

    def _send(self, replies: dict[str, QueryReply]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for request_id, reply in replies.items():
            key = self.keys.reply(request_id)
            pipe.lpush(key, reply.to_json())
            pipe.pexpire(key, REPLY_TTL_MS)
        pipe.execute()

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
            except Exception as exc:  # never let one request kill the lane
                log.exception("query lane: request failed")
                replies[r.id] = QueryReply.error(500, "internal_error", f"{exc.__class__.__name__}")
        if searches:
            replies |= self._search(searches)
        for r in requests:
            self.metrics.queries.labels(r.kind).inc()
        return replies

    def _answer_by_url(self, r: QueryRequest) -> None:
        """Fetch an image search's ``image_url`` (a thread of its own), then answer it alone."""
        try:
            if self.fetcher is None:
                raise FetchError("this worker does not fetch URLs")
            fetched = replace(r, image=self.fetcher.fetch(r.image_url), image_url="")
            reply = self._search([fetched])[r.id]
        except FetchError as exc:
            reply = QueryReply.error(502 if exc.transient else 422, "image_url_unavailable", str(exc))
        except Exception as exc:  # never let one request kill the thread
            log.exception("query lane: search by image_url failed")
            reply = QueryReply.error(500, "internal_error", exc.__class__.__name__)
        try:
            self._send({r.id: reply})
        except redis.RedisError as exc:
            log.warning("query lane: cannot reply (%s); the API times out", exc)

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
                pixels.append(decode(r.image, self.encoder.preprocessing, self.max_image_pixels))
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
            return QueryReply(deleted=r.product_id) if self.store.delete(r.product_id) else _not_found(r.product_id)
        return QueryReply.error(400, "bad_request", f"unknown query kind {r.kind!r}")
