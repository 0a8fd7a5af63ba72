"""What a stored point is, whatever the engine holds it: its id, its payload, how it reads back.

A point's id is the UUIDv5 of its ``product_id`` (for a tenant other than the default,
``<tenant>/<product_id>``: the same id in two tenants is two products): re-indexing a product, or replaying a batch
after a crash, overwrites the same point. The payload holds the job's ``version`` (given at
enqueue time), which the engines' conditional writes compare, and the ``embedder`` that made
the vector (a vector is reused only by the same model), and its ``tenant``: every search and
read filters by it (``tenant_is`` of each engine's filters). A point stored before tenants has
none: it is the default tenant's.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from batcher.queue.jobs import DEFAULT_TENANT, Job
from batcher.queue.messages import SearchResult

POINT_NAMESPACE = uuid.UUID("6f1c3a52-2b0e-5c39-9f39-3c1f4a6c9e10")
IMAGE_FIELDS = ["product_id", "image_sha256", "embedder"]
# payload fields every engine indexes: the version checks, the image lookups, the product filter
INDEXED_KEYWORDS = ("product_id", "image_sha256", "embedder", "phash_bands")
INDEXED_INTEGERS = ("version", "photo_index", "near_duplicate_count")
# what the near-duplicate lookups read of a point (batcher.duplicates): who it is, its hash, its pairs
HASH_FIELDS = ["product_id", "photo_index", "phash"]
PAIR_FIELDS = [*HASH_FIELDS, "near_duplicates"]
TENANT = "tenant"  # indexed as a keyword, marked as the tenant key (Qdrant's multitenancy)


def point_id(product_id: str, photo_index: int = 0, tenant: str = DEFAULT_TENANT) -> str:
    """Photo 0 keeps the id of a product's only point (catalogs stored before photos need no
    migration); photo i > 0 is ``uuid5(NS, "<product_id>#<i>")``. Another tenant than the
    default: ``<tenant>/<product_id>`` instead of ``<product_id>`` (stored catalogs keep their ids)."""
    name = product_id if tenant == DEFAULT_TENANT else f"{tenant}/{product_id}"
    return str(uuid.uuid5(POINT_NAMESPACE, name if photo_index == 0 else f"{name}#{photo_index}"))


def point_payload(job: Job, indexed_at: str, embedder: str = "") -> dict[str, Any]:
    """What a point carries besides its vector: the product as uploaded, where it came from, and
    which model made the vector (``embedder``)."""
    return {"product_id": job.product_id, "name": job.name, "description": job.description,
            "metadata": job.metadata, "job_id": job.job_id, "indexed_at": indexed_at,
            "image_sha256": job.image_sha256, "version": job.version, "embedder": embedder,
            TENANT: job.tenant, **job.extra}


def search_result(score: float, payload: dict[str, Any] | None) -> SearchResult:
    p = payload or {}
    return SearchResult(product_id=p.get("product_id"), score=round(float(score), 6), name=p.get("name"),
                        description=p.get("description"), metadata=p.get("metadata") or {},
                        photo_index=int(p.get("photo_index") or 0))


@dataclass(frozen=True)
class StoredImage:
    """A stored point's image: which product holds it, its bytes' sha256, its vector."""

    product_id: str
    image_sha256: str
    vector: np.ndarray


def made_by(points, embedder: str) -> list[StoredImage]:
    """The images among ``points`` (records read with their vectors, of either engine) whose
    vector ``embedder`` made."""
    return [StoredImage(p.payload["product_id"], p.payload["image_sha256"], np.asarray(p.vector, np.float32))
            for p in points
            if embedder and p.payload and p.payload.get("embedder") == embedder
            and p.payload.get("image_sha256") and p.payload.get("product_id") and p.vector is not None]


def by_product_and_sha(found: list[StoredImage], product_ids: list[str]
                       ) -> tuple[dict[str, StoredImage], dict[str, StoredImage]]:
    """``found`` as the recall stage reads it: the batch's own products, and one image per sha256."""
    mine = set(product_ids)
    by_sha: dict[str, StoredImage] = {}
    for image in found:
        by_sha.setdefault(image.image_sha256, image)
    return {i.product_id: i for i in found if i.product_id in mine}, by_sha
