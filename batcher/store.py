"""The vector store: vectors and payloads in Qdrant, one batched call per batch.

The point payload is built (from a job) and read (into a search result) here alone. A
point's id is the UUIDv5 of its ``product_id``: re-indexing a product, or replaying a batch
after a crash, overwrites the same point. The payload holds the job's ``version`` (given at
enqueue time): an upsert never replaces a point of a newer version, and a delete removes only
points older than its own version, whatever order the workers and the query lane run in.
Embedded local mode (``QDRANT_PATH``) lets one process open a folder, so the worker owns it;
several workers need a Qdrant server.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from batcher.queue.jobs import Job
from batcher.queue.messages import SearchResult
from batcher.store_filters import conditions, older, point_id, replaceable, same_images
from batcher.stored_images import IMAGE_FIELDS, ShaIndex, StoredImage, made_by

__all__ = ["MEMORY", "StoreLocked", "StoredImage", "VectorStore", "point_id", "point_payload"]

log = logging.getLogger(__name__)

MEMORY = ":memory:"


class StoreLocked(RuntimeError):
    """Another process holds the embedded Qdrant folder."""


def point_payload(job: Job, indexed_at: str, embedder: str = "") -> dict[str, Any]:
    """What a point carries besides its vector: the product as uploaded, where it came from, and
    which model made the vector (``embedder``: a vector is reused only by the same model)."""
    return {"product_id": job.product_id, "name": job.name, "description": job.description,
            "metadata": job.metadata, "job_id": job.job_id, "indexed_at": indexed_at,
            "image_sha256": job.image_sha256, "version": job.version, "embedder": embedder}


def search_result(score: float, payload: dict[str, Any] | None) -> SearchResult:
    p = payload or {}
    return SearchResult(product_id=p.get("product_id"), score=round(float(score), 6), name=p.get("name"),
                        description=p.get("description"), metadata=p.get("metadata") or {})


def _open_client(url: str | None, path: str, api_key: str | None) -> QdrantClient:
    if url:
        return QdrantClient(url=url, api_key=api_key, timeout=10)
    if path == MEMORY:
        return QdrantClient(location=MEMORY)
    try:
        return QdrantClient(path=path)
    except RuntimeError as exc:
        if "already accessed" not in str(exc):
            raise
        raise StoreLocked(
            f"the embedded Qdrant folder {path} is already opened by another worker. Embedded mode "
            "allows one worker per folder: to run several workers, start a Qdrant server and set "
            "QDRANT_URL for all of them."
        ) from None


class VectorStore:
    """One collection. Calls are serialised: the embedded client is not thread-safe."""

    def __init__(self, client: QdrantClient, collection: str, dim: int, server: bool, embedder: str = "") -> None:
        self.client = client
        self.collection = collection
        self.dim = dim
        self.server = server
        self.embedder = embedder  # written with every point; "" for one that must never be reused
        self._shas = ShaIndex() if embedder and not server else None  # embedded mode: we own the folder
        self._lock = threading.Lock()

    @classmethod
    def open(cls, url: str | None, path: str, collection: str, dim: int, api_key: str | None = None,
             indexed_fields: tuple[str, ...] = (), shards: int = 1, replicas: int = 1,
             embedder: str = "") -> "VectorStore":
        store = cls(_open_client(url, path, api_key), collection, dim, server=bool(url), embedder=embedder)
        store.ensure_collection(indexed_fields, shards, replicas)
        if store._shas is not None:
            store._shas.load(store.client, collection, embedder)
        return store

    def ensure_collection(self, indexed_fields: tuple[str, ...] = (), shards: int = 1, replicas: int = 1) -> None:
        if not self.client.collection_exists(self.collection):
            layout = {"shard_number": shards, "replication_factor": replicas} if self.server else {}
            try:
                self.client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(size=self.dim, distance=models.Distance.COSINE), **layout)
                log.info("created collection %s (%d-d, cosine)", self.collection, self.dim)
            except Exception:
                if not self.client.collection_exists(self.collection):
                    raise  # not a race with another worker creating it: a real failure
        else:
            size = self.client.get_collection(self.collection).config.params.vectors.size
            if size != self.dim:
                raise RuntimeError(f"collection {self.collection} holds {size}-d vectors but the model "
                                   f"makes {self.dim}-d ones: use another QDRANT_COLLECTION")
        if self.server:  # payload indexes exist only on a server; local mode scans
            for field in ("product_id", "image_sha256", *(f"metadata.{f}" for f in indexed_fields)):
                self.client.create_payload_index(self.collection, field, models.PayloadSchemaType.KEYWORD)

    def upsert(self, jobs: list[Job], vectors: np.ndarray) -> None:
        """One point per job, keyed by its product: the last upload of a product wins. A stored
        point of a newer version than the job's stays as it is. A server checks that in the
        same call (``update_filter``, against the point already there). Embedded mode has one
        writer, this one, holding the lock: it reads the stored versions first, as its filter
        would cost a check per point and per job."""
        now = datetime.now(timezone.utc).isoformat()
        with self._lock:
            if not self.server:
                keep = self._replaceable_here(jobs)
                jobs, vectors = [jobs[i] for i in keep], vectors[keep]
                if not jobs:
                    return
            points = models.Batch(ids=[point_id(j.product_id) for j in jobs],
                                  vectors=vectors.astype(np.float32).tolist(),
                                  payloads=[point_payload(j, now, self.embedder) for j in jobs])
            self.client.upsert(self.collection, points=points, wait=True,
                               update_filter=replaceable(jobs) if self.server else None)
            if self._shas is not None:
                self._shas.add((j.image_sha256, j.product_id) for j in jobs)

    def _replaceable_here(self, jobs: list[Job]) -> list[int]:
        """The indexes of the jobs whose stored point is not newer than them (or unversioned)."""
        stored = {str(p.id): (p.payload or {}).get("version") for p in
                  self.client.retrieve(self.collection, [point_id(j.product_id) for j in jobs], with_payload=["version"])}
        return [i for i, j in enumerate(jobs) if stored.get(point_id(j.product_id)) is None
                or int(stored[point_id(j.product_id)]) <= j.version]

    def images(self, product_ids: list[str], shas: list[str]) -> tuple[dict[str, StoredImage], dict[str, StoredImage]]:
        """The stored images this store's model embedded, for a batch: by product, the points of
        ``product_ids``; by sha256, for each of ``shas``, a point holding those bytes (any product).
        One call by point id (embedded mode adds the owners its ``ShaIndex`` knows); on a
        server, a second, by sha256, for the shas the first did not find."""
        wanted = {"with_payload": IMAGE_FIELDS, "with_vectors": True}
        ids = set(product_ids) | (self._shas.owners(shas) if self._shas is not None else set())
        with self._lock:
            found = made_by(self.client.retrieve(self.collection, [point_id(p) for p in ids], **wanted),
                            self.embedder)
            missing = sorted(set(shas) - {i.image_sha256 for i in found})
            if self.server and self.embedder and missing:
                more, _ = self.client.scroll(self.collection, same_images(missing, self.embedder),
                                             limit=4 * len(missing), **wanted)
                found += made_by(more, self.embedder)
        mine = set(product_ids)
        by_sha: dict[str, StoredImage] = {}
        for image in found:
            by_sha.setdefault(image.image_sha256, image)
        return {i.product_id: i for i in found if i.product_id in mine}, by_sha

    def search(self, vectors: np.ndarray, limits: list[int],
               filters: list[dict[str, Any]]) -> list[list[SearchResult]]:
        """One batched query for many vectors, each with its own limit and filter."""
        requests = [models.QueryRequest(query=v.tolist(), limit=n, filter=conditions(f), with_payload=True)
                    for v, n, f in zip(vectors.astype(np.float32), limits, filters)]
        with self._lock:
            responses = self.client.query_batch_points(self.collection, requests=requests)
        return [[search_result(p.score, p.payload) for p in r.points] for r in responses]

    def get(self, product_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self.client.retrieve(self.collection, [point_id(product_id)], with_payload=True)
        return found[0].payload if found else None

    def delete(self, product_id: str, version: int) -> bool:
        """Delete the product's point if it is older than ``version`` (the delete's own); a
        newer upload stored meanwhile stays. True when there was such a point."""
        pid = point_id(product_id)
        with self._lock:
            found = self.client.retrieve(self.collection, [pid], with_payload=["version"])
            if not found or int((found[0].payload or {}).get("version") or 0) >= version:
                return False
            # a server may take a newer upload from another worker between the two calls: it
            # checks the version again; embedded mode has one writer, this one, holding the lock
            # (and would scan every point for a filter)
            selector = (models.FilterSelector(filter=older(product_id, version)) if self.server
                        else models.PointIdsList(points=[pid]))
            self.client.delete(self.collection, points_selector=selector, wait=True)
        return True

    def close(self) -> None:
        self.client.close()
