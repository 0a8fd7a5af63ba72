"""A product's photos on Qdrant Edge: a photo set written whole, a product read and deleted whole. The
caller holds the store's lock, so nothing is written between the read and the writes."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
from qdrant_edge import EdgeShard, ScrollRequest, UpdateOperation

from batcher.queue.jobs import Job
from batcher.store.edge_filters import of_product, older, replaceable, set_members
from batcher.store.edge_queries import with_keywords_point
from batcher.store.points import PHOTOS_READ, SET_FIELDS, point_id, point_payload, product_view, write_plan


def write_sets(shard: EdgeShard, jobs: list[Job], vectors: np.ndarray, embedder: str) -> tuple[int, list[str]]:
    """One conditional upsert: Edge replaces a stored point only where ``replaceable`` holds (its
    version is not newer than the job's), and inserts the points not stored yet, each with its
    ``keywords`` vector. First the products' stored photos are read (each tenant's own): a
    stale photo set is left out; after, the photos a set dropped are deleted (``write_plan``).
    Returns the points written, and the ids of the points it may have changed (written or not)."""
    now = datetime.now(timezone.utc).isoformat()
    stored, _ = shard.scroll(ScrollRequest(limit=PHOTOS_READ * len(jobs), with_payload=SET_FIELDS, with_vector=False,
                                           filter=set_members(jobs)))
    keep, drop = write_plan(jobs, stored)
    kept = [jobs[i] for i in keep]
    ids = [point_id(j.product_id, j.photo_index, j.tenant) for j in kept]
    points = [with_keywords_point(i, v, point_payload(j, now, embedder))
              for i, j, v in zip(ids, kept, vectors[keep].astype(np.float32).tolist())]
    if points:
        shard.update(UpdateOperation.upsert_points(points, condition=replaceable(kept)))
    if drop:
        shard.update(UpdateOperation.delete_points(drop))
    return len(points), ids + [str(d) for d in drop]


def read_product(shard: EdgeShard, product_id: str, tenant: str) -> dict[str, Any] | None:
    """The tenant's product as ``GET /api/v1/products/{id}`` shows it (``points.product_view``)."""
    found, _ = shard.scroll(ScrollRequest(limit=PHOTOS_READ, with_payload=True, with_vector=False,
                                          filter=of_product(product_id, tenant)))
    return product_view([p.payload for p in found])


def delete_older(shard: EdgeShard, product_id: str, version: int, tenant: str) -> list[str]:
    """Delete the tenant's product's photos older than ``version``: the ids of those deleted."""
    stale = older(product_id, version, tenant)
    found, _ = shard.scroll(ScrollRequest(limit=PHOTOS_READ, filter=stale, with_payload=False, with_vector=False))
    if found:
        shard.update(UpdateOperation.delete_points_by_filter(stale))
    return [str(p.id) for p in found]
