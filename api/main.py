"""Build the FastAPI app. ``uvicorn api.main:app``.

Settings are read when the app is built; Redis clients are created in ``lifespan`` (at
start-up, by ``api.queue``, the one module that touches them), never at import of a route module.
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api import docs, errors
from api.callbacks import hooks_of
from api.lane import DirectRoute
from api.limits import BodyLimits
from api.metrics import ApiMetrics
from api.queue import Connections, DeliveryStore, JobQueue
from api.webhooks import Deliverer
from batcher.queue.durable import Durability
from api.waiter import JobWaiter
from api.routes import dashboard, duplicates, failures, health, jobs, search, uploads, webhooks, whoami, workers
from api.settings import ApiSettings
from api.tenant_source import TenantSource, install_sighup, remove_sighup

log = logging.getLogger("clipq.api")


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: ApiSettings = app.state.settings
    if refusal := settings.refusal():
        log.error("refusing to start: %s", refusal)
        raise RuntimeError(f"refusing to start: {refusal}")
    app.state.tenants = tenants = TenantSource(settings.tenants_file, settings.api_keys, settings.admin_keys)
    if install_sighup(tenants):
        log.info("SIGHUP rereads the tenants file")
    if tenants.book.open:
        log.warning("ALLOW_ANONYMOUS=true: anyone who reaches this API can upload, search and delete")
    connections = Connections.open(settings)
    app.state.queue = queue = JobQueue(connections, settings.queue_namespace, settings.max_queue_depth,
                                       max_bytes=settings.max_queue_bytes, failed_image_ttl=settings.failed_image_ttl,
                                       max_pending_queries=settings.max_pending_queries,
                                       shards=settings.queue_shards,
                                       durability=Durability(settings.redis_wait_replicas,
                                                             settings.redis_wait_timeout_ms))
    finished = (lambda: connections.announcements(queue.keys.finished)) if connections.can_subscribe else None
    app.state.waiter = JobWaiter(finished, queue.settled)
    app.state.waiter.start()
    app.state.deliveries = DeliveryStore(connections, settings.queue_namespace, settings.queue_shards)
    deliverer = None
    if settings.webhook_secret or settings.tenants_file:  # without a secret no upload asks for a webhook (422)
        deliverer = Deliverer(app.state.deliveries, settings.webhooks, app.state.metrics,
                              f"clipq-webhooks/{app.version}",
                              lambda tenant: hooks_of(tenants.current(), settings, tenant))
        deliverer.start()
        app.state.waiter.listeners.append(deliverer.nudge)  # a job just ended: its delivery is due
    try:
        yield
    finally:
        remove_sighup()
        if deliverer is not None:
            await deliverer.stop()
        await app.state.waiter.stop()
        errors.refusals.flush()  # the 503s not logged yet
        await connections.aclose()


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings.from_env()
    logging.basicConfig(level=settings.log_level.upper())
    app = FastAPI(title="clipq", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Product photos in, searchable CLIP vectors out, behind a Redis queue.")
    app.state.settings = settings
    app.state.metrics = ApiMetrics()
    errors.install(app)
    for module in (uploads, jobs, failures, workers, search, duplicates, health, whoami, webhooks):
        app.include_router(module.router)
    docs.install(app)
    dashboard.install(app)
    # added first: the innermost layer, inside CORS, the body limits and the metrics
    app.add_middleware(DirectRoute, **uploads.LANE)
    if settings.cors_origin_list:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["X-API-Key", "Content-Type"])
    # added last: the outermost layer, which also times every answer for the metrics
    app.add_middleware(BodyLimits, max_bytes=settings.max_upload_bytes * settings.max_photos_per_product,
                       read_timeout_s=settings.upload_read_timeout, observe=app.state.metrics.record)
    return app


app = create_app()
