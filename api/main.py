"""Build the FastAPI app. ``uvicorn api.main:app``.

Settings are read when the app is built; Redis clients are created in ``lifespan`` (at
start-up), never at import of a route module.
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api import docs, errors
from api.lane import DirectRoute
from api.limits import BodyLimits
from api.metrics import ApiMetrics
from api.queue import JobQueue
from api.waiter import JobWaiter
from api.routes import dashboard, failures, health, jobs, search, uploads, workers
from api.security import require_api_key
from api.settings import ApiSettings
from batcher.queue.connect import async_client

log = logging.getLogger("clipq.api")
CLUSTER_POOL = 100  # redis-py's default pool per cluster node


def _bounded_client(settings: ApiSettings, size: int, wait_s: float | None, **options) -> aioredis.Redis:
    """Up to ``size`` connections; a call beyond them waits for a free one, at most ``wait_s``
    (None: as long as the caller's own time-out lets it).
    redis-py's default pool (100) fails such a call at once ("Too many connections", a 503):
    1,000 status long-polls re-reading together did that, and so did 101 waiting searches."""
    if settings.redis_cluster:
        # The cluster client's pool per node cannot queue: a call beyond it fails at once
        # (MaxConnectionsError, a 503), at redis-py's default of 100 too: 150 waiting searches
        # got 50 503s. So ``size`` (searches: MAX_PENDING_QUERIES, bounded by the lane), never
        # below that default (short calls: REDIS_MAX_CONNECTIONS cannot make them wait here).
        return async_client(settings.redis_url, True, max_connections=max(size, CLUSTER_POOL), **options)
    pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, max_connections=size, timeout=wait_s, **options)
    client = aioredis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # aclose() closes the pool too, as from_url's clients do
    return client


def _clients(settings: ApiSettings) -> tuple[aioredis.Redis, aioredis.Redis]:
    """Short calls share ``REDIS_MAX_CONNECTIONS``. A search holds a connection of its own while
    it waits for its answer (BLPOP): up to ``MAX_PENDING_QUERIES`` of them, the lane's own bound
    on searches not yet taken by a worker; one beyond them (the lane full of searches the workers
    are answering) waits for a free connection, within its ``SEARCH_TIMEOUT`` (then 504).

    A pooled connection opened before a Redis restart fails once: retry such a call once,
    at once (every write the API makes is idempotent: enqueue, retry, query)."""
    t = settings.redis_timeout
    options = {"socket_connect_timeout": t,
               "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))}
    fast = _bounded_client(settings, settings.redis_max_connections, t, socket_timeout=t, **options)
    blocking = _bounded_client(settings, settings.max_pending_queries, None,  # JobQueue.ask bounds each wait
                               socket_timeout=settings.search_timeout + t, **options)
    return fast, blocking


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: ApiSettings = app.state.settings
    if refusal := settings.refusal():
        log.error("refusing to start: %s", refusal)
        raise RuntimeError(f"refusing to start: {refusal}")
    if not settings.api_keys:
        log.warning("ALLOW_ANONYMOUS=true: anyone who reaches this API can upload, search and delete")
    fast, blocking = _clients(settings)
    app.state.queue = JobQueue(fast, blocking, settings.queue_namespace, settings.max_queue_depth,
                               max_bytes=settings.max_queue_bytes, failed_image_ttl=settings.failed_image_ttl,
                               max_pending_queries=settings.max_pending_queries)
    # the listener blocks for as long as no job finishes: a client with no read time-out
    listener = async_client(settings.redis_url, settings.redis_cluster, socket_connect_timeout=settings.redis_timeout)
    app.state.waiter = JobWaiter(listener, app.state.queue.keys.finished, app.state.queue.settled)
    app.state.waiter.start()
    try:
        yield
    finally:
        await app.state.waiter.stop()
        errors.refusals.flush()  # the 503s not logged yet
        for client in (fast, blocking, listener):
            await client.aclose()


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings.from_env()
    logging.basicConfig(level=settings.log_level.upper())
    app = FastAPI(title="clipq", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Product photos in, searchable CLIP vectors out, behind a Redis queue.")
    app.state.settings = settings
    app.state.metrics = ApiMetrics()
    errors.install(app)
    for module in (uploads, jobs, failures, workers, search, health):
        app.include_router(module.router)
    docs.install(app)
    dashboard.install(app)
    # added first: the innermost layer, inside CORS, the body limits and the metrics
    app.add_middleware(DirectRoute, method="POST", path=uploads.PATH, endpoint=uploads.index_product,
                       guards=[require_api_key])
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["X-API-Key", "Content-Type"])
    # added last: the outermost layer, which also times every answer for the metrics
    app.add_middleware(BodyLimits, max_bytes=settings.max_upload_bytes,
                       read_timeout_s=settings.upload_read_timeout, observe=app.state.metrics.record)
    return app


app = create_app()
