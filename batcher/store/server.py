"""A Qdrant server's store: qdrant-client over HTTP (``QDRANT_URL``), for several workers.

Every write checks the version in the same call: an upsert carries ``update_filter`` (a stored
point is replaced only where it is not newer than the job), a delete removes only points
older than its own version. The lookups go through the payload indexes made at start-up.

The tests run this code path on qdrant-client's in-process modes (``client=``), since no
Qdrant server can run here; they evaluate the same filters.
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
from batcher.store.base import StoreError
from batcher.store.config import StoreConfig
from batcher.store.points import (IMAGE_FIELDS, INDEXED_INTEGERS, INDEXED_KEYWORDS, PHOTOS_READ, SET_FIELDS, Photo,
                                  StoredImage, by_photo_and_sha, made_by, photo_sets, point_id, point_payload,
                                  product_view, search_result, write_plan)
from batcher.store.server_filters import (conditions, dropped, newer, of_products, older, own, replaceable,
                                          same_images, set_members)

log = logging.getLogger(__name__)


class ServerStore:
    """One collection of a Qdrant server (or of qdrant-client's in-process modes, in tests)."""

    engine = "server"

    def __init__(self, client: QdrantClient, collection: str, dim: int, embedder: str = "") -> None:
        self.client = client
        self.collection = collection
        self.dim = dim
        self.embedder = embedder  # written with every point; "" for one that must never be reused
        self._lock = threading.Lock()  # qdrant-client's in-process modes are not thread-safe

    @classmethod
    def open(cls, config: StoreConfig, dim: int | None, embedder: str = "", client: QdrantClient | None = None
             ) -> "ServerStore":
        """``dim`` None: the collection already there, whatever its size (``clipq-store``)."""
        client = client or QdrantClient(url=config.url, api_key=config.api_key, timeout=10)
        if dim is None:
            if not client.collection_exists(config.collection):
                raise StoreError(f"the Qdrant server has no collection {config.collection}")
            dim = client.get_collection(config.collection).config.params.vectors.size
        store = cls(client, config.collection, dim, embedder)
        store.ensure_collection(config)
        return store

    def ensure_collection(self, config: StoreConfig) -> None:
        if not self.client.collection_exists(self.collection):
            try:
                self.client.create_collection(
                    self.collection, shard_number=config.shards, replication_factor=config.replicas,
                    vectors_config=models.VectorParams(size=self.dim, distance=models.Distance.COSINE),
                    hnsw_config=models.HnswConfigDiff(m=config.hnsw_m, ef_construct=config.hnsw_ef_construct),
                    quantization_config=(models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
                        type=models.ScalarType.INT8, quantile=0.99)) if config.quantization == "int8" else None))
                log.info("created collection %s (%d-d, cosine)", self.collection, self.dim)
            except Exception:
                if not self.client.collection_exists(self.collection):
                    raise  # not a race with another worker creating it: a real failure
        else:
            size = self.client.get_collection(self.collection).config.params.vectors.size
            if size != self.dim:
                raise StoreError(f"collection {self.collection} holds {size}-d vectors but the model "
                                   f"makes {self.dim}-d ones: use another QDRANT_COLLECTION")
        fields = {**{f: models.PayloadSchemaType.KEYWORD for f in INDEXED_KEYWORDS},
                  **{f: models.PayloadSchemaType.INTEGER for f in INDEXED_INTEGERS},
                  **{f"metadata.{f}": models.PayloadSchemaType.KEYWORD for f in config.indexed_fields}}
        for field, schema in fields.items():
            self.client.create_payload_index(self.collection, field, schema)
        self.params = models.SearchParams(hnsw_ef=config.hnsw_ef)

    def upsert(self, jobs: list[Job], vectors: np.ndarray) -> None:
        """One point per job (a photo), keyed by its product and photo index: the server replaces a
        stored point only where ``replaceable`` holds (``update_filter``, checked against the point
        already there). Before, the products' stored photos are read (``write_plan``): a stale
        photo set is left out, and the photos a set drops are deleted after it, by a filter that
        checks their version again. Other workers write meanwhile: a newer set stored between the
        read and the upsert is found after it, and this job's own points are deleted again. Four
        calls a batch: the read, the upsert, one delete, one count (more only after such a race)."""
        now = datetime.now(timezone.utc).isoformat()
        with self._lock:
            stored, _ = self.client.scroll(self.collection, set_members(jobs), limit=PHOTOS_READ * len(jobs),
                                           with_payload=SET_FIELDS)
            keep, _ = write_plan(jobs, stored)
            kept = [jobs[i] for i in keep]
            if not kept:
                return
            self.client.upsert(self.collection, wait=True, update_filter=replaceable(kept), points=models.Batch(
                ids=[point_id(j.product_id, j.photo_index) for j in kept],
                vectors=vectors[keep].astype(np.float32).tolist(),
                payloads=[point_payload(j, now, self.embedder) for j in kept]))
            sets = photo_sets(kept)
            self._delete(models.Filter(should=[dropped(p, n, v) for p, v, n in sets]))  # one call for the batch
            if self.client.count(self.collection, count_filter=models.Filter(
                    should=[newer(p, v) for p, v, _ in sets]), exact=True).count:
                for product_id, version, _ in sets:
                    if self.client.count(self.collection, count_filter=newer(product_id, version)).count:
                        self._delete(own(product_id, version))

    def _delete(self, selector: models.Filter) -> None:
        self.client.delete(self.collection, points_selector=models.FilterSelector(filter=selector), wait=True)

    def images(self, photos: list[Photo], shas: list[str]
               ) -> tuple[dict[Photo, StoredImage], dict[str, StoredImage]]:
        """Two indexed reads: the batch's photos by point id, then the images by sha256."""
        wanted = {"with_payload": IMAGE_FIELDS, "with_vectors": True}
        with self._lock:
            found = made_by(self.client.retrieve(self.collection, [point_id(*p) for p in photos], **wanted),
                            self.embedder)
            missing = sorted(set(shas) - {i.image_sha256 for i in found})
            if self.embedder and missing:
                more, _ = self.client.scroll(self.collection, same_images(missing, self.embedder),
                                             limit=4 * len(missing), **wanted)
                found += made_by(more, self.embedder)
        return by_photo_and_sha(found, photos)

    def search(self, vectors: np.ndarray, limits: list[int],
               filters: list[dict[str, Any]]) -> list[list[SearchResult]]:
        """One batched query for many vectors, each with its own limit and filter."""
        requests = [models.QueryRequest(query=v.tolist(), limit=n, filter=conditions(f), with_payload=True,
                                        params=self.params)
                    for v, n, f in zip(vectors.astype(np.float32), limits, filters)]
        with self._lock:
            responses = self.client.query_batch_points(self.collection, requests=requests)
        return [[search_result(p.score, p.payload) for p in r.points] for r in responses]

    def get(self, product_id: str) -> dict[str, Any] | None:
        with self._lock:
            found, _ = self.client.scroll(self.collection, of_products([product_id]), limit=PHOTOS_READ,
                                          with_payload=True)
        return product_view([p.payload for p in found])

    def delete(self, product_id: str, version: int) -> bool:
        """Delete the product's photos older than ``version`` (the delete's own); a newer upload
        stored meanwhile stays. True when there was such a point."""
        with self._lock:
            if not self.client.count(self.collection, count_filter=older(product_id, version), exact=True).count:
                return False
            # another worker may store a newer upload between the two calls: the filter checks again
            self._delete(older(product_id, version))
        return True

    def scroll(self, offset: Any = None, limit: int = 256) -> tuple[list[Any], Any]:
        with self._lock:
            return self.client.scroll(self.collection, offset=offset, limit=limit, with_payload=True,
                                      with_vectors=True)

    def write(self, points: list[tuple[Any, list[float], dict[str, Any]]]) -> None:
        """Store points as they are (an import or a copy): no version check."""
        with self._lock:
            self.client.upsert(self.collection, wait=True, points=[
                models.PointStruct(id=str(i), vector=v, payload=p) for i, v, p in points])

    def count(self) -> int:
        with self._lock:
            return self.client.count(self.collection, exact=True).count

    def info(self) -> dict[str, Any]:
        with self._lock:
            info = self.client.get_collection(self.collection)
        return {"engine": "Qdrant server", "collection": self.collection, "points": info.points_count,
                "indexed_vectors": info.indexed_vectors_count, "segments": info.segments_count, "dim": self.dim,
                "payload_indexes": {k: str(v.data_type.value) for k, v in (info.payload_schema or {}).items()}}

    def close(self) -> None:
        self.client.close()
