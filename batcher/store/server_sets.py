"""A product's photos on a Qdrant server: a photo set written whole, and a product read whole.
``ServerStore`` calls these holding its lock; other workers may write meanwhile, so every write
checks the version again in the same call."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from batcher.queue.jobs import Job
from batcher.store.points import (PHOTOS_READ, SET_FIELDS, photo_sets, point_id, point_payload, product_view,
                                  write_plan)
from batcher.store.server_filters import dropped, newer, of_product, own, replaceable, set_members, tenant_is
from batcher.store.server_hashes import point_vectors


def delete_where(client: QdrantClient, collection: str, selector: models.Filter) -> None:
    client.delete(collection, points_selector=models.FilterSelector(filter=selector), wait=True)


def write_sets(client: QdrantClient, collection: str, jobs: list[Job], vectors: np.ndarray, embedder: str) -> None:
    """One point per job (a photo), with its ``keywords`` vector: the server replaces a stored
    point only where ``replaceable`` holds (``update_filter``, checked against the point already
    there). Before, the products' stored photos are read (``write_plan``, each tenant's own): a
    stale photo set is left out, and the photos a set drops are deleted after it, by a filter that
    checks their version again. A newer set stored by another worker between the read and the
    upsert is found after it, and this job's own points are deleted again. Four calls a batch:
    the read, the upsert, one delete, one count (more only after such a race)."""
    now = datetime.now(timezone.utc).isoformat()
    stored, _ = client.scroll(collection, set_members(jobs), limit=PHOTOS_READ * len(jobs), with_payload=SET_FIELDS)
    keep, _ = write_plan(jobs, stored)
    kept = [jobs[i] for i in keep]
    if not kept:
        return
    payloads = [point_payload(j, now, embedder) for j in kept]
    client.upsert(collection, wait=True, update_filter=replaceable(kept), points=[
        models.PointStruct(id=point_id(j.product_id, j.photo_index, j.tenant), vector=point_vectors(v, p), payload=p)
        for j, v, p in zip(kept, vectors[keep].astype(np.float32).tolist(), payloads)])
    sets = photo_sets(kept)
    delete_where(client, collection, models.Filter(should=[dropped(p, n, v, t) for t, p, v, n in sets]))
    if client.count(collection, count_filter=models.Filter(should=[newer(p, v, t) for t, p, v, _ in sets]),
                    exact=True).count:
        for tenant, product_id, version, _ in sets:
            if client.count(collection, count_filter=newer(product_id, version, tenant)).count:
                delete_where(client, collection, own(product_id, version, tenant))


def read_product(client: QdrantClient, collection: str, product_id: str, tenant: str) -> dict[str, Any] | None:
    """The tenant's product as ``GET /api/v1/products/{id}`` shows it (``points.product_view``)."""
    found, _ = client.scroll(collection, models.Filter(must=[of_product(product_id), tenant_is(tenant)]),
                             limit=PHOTOS_READ, with_payload=True)
    return product_view([p.payload for p in found])
