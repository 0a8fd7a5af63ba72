"""What a stored point is, whatever the engine holds it: its id, its payload, how it reads back.

A point is one photo of a product. Its id is the UUIDv5 of its ``product_id`` for photo 0 (the
id of a product before photos existed: no migration), of ``<product_id>#<i>`` for photo i > 0;
for a tenant other than the default, ``<tenant>/<product_id>`` stands for ``<product_id>`` (the
same id in two tenants is two products). Re-indexing a product, or replaying a batch after a
crash, overwrites the same points. Every photo's point carries the product's fields, and its own
``photo_index``, ``image_sha256`` and ``source`` (``upload`` or the URL it was fetched from); a
point without ``photo_index`` is photo 0. The payload holds the job's ``version`` (given at
enqueue time), which the engines' conditional writes compare, the ``embedder`` that made the
vector (a vector is reused only by the same model), and its ``tenant``: every search, read,
write plan and delete filters by it (``tenant_is`` of each engine's filters). A point stored
before tenants has none: it is the default tenant's.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from batcher.queue.jobs import DEFAULT_TENANT, Job
from batcher.queue.messages import SearchResult

POINT_NAMESPACE = uuid.UUID("6f1c3a52-2b0e-5c39-9f39-3c1f4a6c9e10")
IMAGE_FIELDS = ["product_id", "image_sha256", "embedder", "photo_index"]
# payload fields every engine indexes: the version checks, the image lookups, the product filter
INDEXED_KEYWORDS = ("product_id", "image_sha256", "embedder")
INDEXED_INTEGERS = ("version", "photo_index", "near_duplicate_count")
# what the near-duplicate lookups read of a point (batcher.duplicates): who it is, its hash, its pairs
HASH_FIELDS = ["product_id", "photo_index", "phash"]
PAIR_FIELDS = [*HASH_FIELDS, "near_duplicates"]
TENANT = "tenant"  # indexed as a keyword, marked as the tenant key (Qdrant's multitenancy)
PHOTOS_READ = 1024  # points a product read takes at most (MAX_PHOTOS_PER_PRODUCT is far below)


def point_id(product_id: str, photo_index: int = 0, tenant: str = DEFAULT_TENANT) -> str:
    """Photo 0 keeps the id of a product's only point (catalogs stored before photos need no
    migration); photo i > 0 is ``uuid5(NS, "<product_id>#<i>")``. Another tenant than the
    default: ``<tenant>/<product_id>`` instead of ``<product_id>`` (stored catalogs keep their ids)."""
    name = product_id if tenant == DEFAULT_TENANT else f"{tenant}/{product_id}"
    return str(uuid.uuid5(POINT_NAMESPACE, name if photo_index == 0 else f"{name}#{photo_index}"))


def tenant_of(payload: dict[str, Any] | None) -> str:
    """A stored point's tenant (one stored before tenants is the default tenant's)."""
    return (payload or {}).get(TENANT) or DEFAULT_TENANT


def photo_sets(jobs: list[Job]) -> list[tuple[str, str, int, int]]:
    """(tenant, product_id, version, photo count) of each job among ``jobs`` (one entry per photo)."""
    return sorted({(j.tenant, j.product_id, j.version, j.photo_count) for j in jobs})


def product_view(payloads: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A product as ``GET /api/v1/products/{id}`` shows it, from its points' payloads (one
    tenant's): photo 0's payload, and ``photos``, each photo's index, sha256 and source, in order."""
    if not payloads:
        return None
    payloads = sorted(payloads, key=lambda p: int(p.get("photo_index") or 0))
    photos = [{"index": int(p.get("photo_index") or 0), "image_sha256": p.get("image_sha256", ""),
               "source": p.get("source") or "upload"} for p in payloads]
    return {**payloads[0], "photos": photos}


def point_payload(job: Job, indexed_at: str, embedder: str = "") -> dict[str, Any]:
    """What a point carries besides its vector: the product as uploaded, where it came from, and
    which model made the vector (``embedder``)."""
    return {"product_id": job.product_id, "name": job.name, "description": job.description,
            "metadata": job.metadata, "job_id": job.job_id, "indexed_at": indexed_at,
            "image_sha256": job.image_sha256, "version": job.version, "embedder": embedder,
            "photo_index": job.photo_index, "source": job.source, TENANT: job.tenant, **job.extra}


def search_result(score: float, payload: dict[str, Any] | None) -> SearchResult:
    p = payload or {}
    return SearchResult(product_id=p.get("product_id"), score=round(float(score), 6), name=p.get("name"),
                        description=p.get("description"), metadata=p.get("metadata") or {},
                        photo_index=int(p.get("photo_index") or 0))


@dataclass(frozen=True)
class StoredImage:
    """A stored point's image: which product (and photo) holds it, its bytes' sha256, its vector."""

    product_id: str
    image_sha256: str
    vector: np.ndarray
    photo_index: int = 0


def made_by(points, embedder: str) -> list[StoredImage]:
    """The images among ``points`` (records read with their vectors, of either engine) whose
    vector ``embedder`` made."""
    return [StoredImage(p.payload["product_id"], p.payload["image_sha256"], np.asarray(p.vector, np.float32),
                        int(p.payload.get("photo_index") or 0))
            for p in points
            if embedder and p.payload and p.payload.get("embedder") == embedder
            and p.payload.get("image_sha256") and p.payload.get("product_id") and p.vector is not None]


Photo = tuple[str, int]  # (product_id, photo_index): which point


def by_photo_and_sha(found: list[StoredImage], photos: list[Photo]
                     ) -> tuple[dict[Photo, StoredImage], dict[str, StoredImage]]:
    """``found`` as the recall stage reads it: the batch's own photos, and one image per sha256."""
    mine = set(photos)
    by_sha: dict[str, StoredImage] = {}
    for image in found:
        by_sha.setdefault(image.image_sha256, image)
    return {(i.product_id, i.photo_index): i for i in found if (i.product_id, i.photo_index) in mine}, by_sha


SET_FIELDS = ["product_id", "version", "photo_index", TENANT]  # what ``write_plan`` reads of stored points


def set_members(jobs: list[Job]) -> dict[str, tuple[list[str], list[str]]]:
    """What a photo set's write must read of its products' stored points (``write_plan``), by
    tenant: (the products, the ids of photo 0 to read too): their photos past photo 0 (those a
    set may drop), and photo 0 of the products a job of several photos writes (the newest set's
    version: a stale set would insert photos a newer one dropped). A job of one photo needs no
    more: every set has a photo 0, which the conditional upsert keeps from an older job. So a
    catalog of single photos reads nothing back."""
    return {t: (sorted({j.product_id for j in jobs if j.tenant == t}),
                sorted({point_id(j.product_id, 0, t) for j in jobs if j.tenant == t and j.photo_count > 1}))
            for t in sorted({j.tenant for j in jobs})}


def write_plan(jobs: list[Job], stored) -> tuple[list[int], list[Any]]:
    """Which of ``jobs`` (one per photo) to write, and which stored points to delete, given the
    points already stored for their products (records with ``SET_FIELDS``, of either engine).
    A product is a tenant's: (tenant, product_id).

    A photo set is written whole or not at all: only the newest job of each product in the
    batch, and only if no stored point of the product is newer. The conditional upsert refuses
    to replace a newer point, but a photo index the newer upload dropped is absent: a stale
    job would insert it again. Then the product's photos past the set's count and older than it
    are deleted: those the upload dropped."""
    newest: dict[tuple[str, str], int] = {}
    for r in stored:
        key = (tenant_of(r.payload), (r.payload or {}).get("product_id"))
        newest[key] = max(newest.get(key, 0), int((r.payload or {}).get("version") or 0))
    for j in jobs:
        newest[(j.tenant, j.product_id)] = max(newest.get((j.tenant, j.product_id), 0), j.version)
    keep = [i for i, j in enumerate(jobs) if j.version == newest[(j.tenant, j.product_id)]]
    sets = {(jobs[i].tenant, jobs[i].product_id): (jobs[i].version, jobs[i].photo_count) for i in keep}
    drop = [r.id for r in stored if _dropped(r.payload or {}, sets)]
    return keep, drop


def _dropped(payload: dict[str, Any], sets: dict[tuple[str, str], tuple[int, int]]) -> bool:
    """Whether a stored photo is one a set written now drops: past its count, older than it."""
    written = sets.get((tenant_of(payload), payload.get("product_id")))
    return (written is not None and int(payload.get("photo_index") or 0) >= written[1]
            and int(payload.get("version") or 0) < written[0])
