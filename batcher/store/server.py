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

from batcher.queue.jobs import DEFAULT_TENANT, Job
from batcher.queue.messages import SearchResult
from batcher.store.base import StoreError
from batcher.store.config import StoreConfig
from batcher.store.points import (IMAGE_FIELDS, INDEXED_INTEGERS, INDEXED_KEYWORDS, TENANT, StoredImage, by_product_and_sha,
                                  made_by, point_id, point_payload)
from batcher.store.asks import Ask, vector_asks
from batcher.store.keywords import DENSE, KEYWORDS, backfill
from batcher.store.server_duplicates import ServerDuplicates
from batcher.store.server_filters import older, replaceable, same_images
from batcher.store.server_queries import (KEYWORDS_CONFIG, add_keywords_page, add_keywords_vector, find_asks,
                                          keywords_of, product_photos)

log = logging.getLogger(__name__)


class ServerStore(ServerDuplicates):
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
                    sparse_vectors_config=KEYWORDS_CONFIG,
                    hnsw_config=models.HnswConfigDiff(m=config.hnsw_m, ef_construct=config.hnsw_ef_construct),
                    quantization_config=(models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
                        type=models.ScalarType.INT8, quantile=0.99)) if config.quantization == "int8" else None))
                log.info("created collection %s (%d-d, cosine)", self.collection, self.dim)
            except Exception:
                if not self.client.collection_exists(self.collection):
                    raise  # not a race with another worker creating it: a real failure
        else:
            params = self.client.get_collection(self.collection).config.params
            if params.vectors.size != self.dim:
                raise StoreError(f"collection {self.collection} holds {params.vectors.size}-d vectors but the model "
                                   f"makes {self.dim}-d ones: use another QDRANT_COLLECTION")
            if KEYWORDS not in (params.sparse_vectors or {}):
                add_keywords_vector(self.client, self.collection)
                log.warning("collection %s had no keyword vectors: added them; run `clipq-store backfill-keywords` "
                            "so that keyword and hybrid searches find the products stored before", self.collection)
        fields = {**{f: models.PayloadSchemaType.KEYWORD for f in INDEXED_KEYWORDS},
                  **{f: models.PayloadSchemaType.INTEGER for f in INDEXED_INTEGERS},
                  **{f"metadata.{f}": models.PayloadSchemaType.KEYWORD for f in config.indexed_fields},
                  TENANT: models.KeywordIndexParams(type="keyword", is_tenant=True)}  # Qdrant's multitenancy
        for field, schema in fields.items():
            self.client.create_payload_index(self.collection, field, schema)
        self.params = models.SearchParams(hnsw_ef=config.hnsw_ef)

    def upsert(self, jobs: list[Job], vectors: np.ndarray) -> None:
        """One point per job, keyed by its product: the server replaces a stored point only where
        ``replaceable`` holds (``update_filter``, checked against the point already there)."""
        now = datetime.now(timezone.utc).isoformat()
        payloads = [point_payload(j, now, self.embedder) for j in jobs]
        points = models.Batch(ids=[point_id(j.product_id, tenant=j.tenant) for j in jobs], payloads=payloads,
                              vectors={"": vectors.astype(np.float32).tolist(), KEYWORDS: [keywords_of(p) for p in payloads]})
        with self._lock:
            self.client.upsert(self.collection, points=points, wait=True, update_filter=replaceable(jobs))

    def images(self, product_ids: list[str], shas: list[str], tenant: str = DEFAULT_TENANT
               ) -> tuple[dict[str, StoredImage], dict[str, StoredImage]]:
        """Two indexed reads, in the tenant: the batch's products by point id, then the images by sha256."""
        wanted = {"with_payload": IMAGE_FIELDS, "with_vectors": DENSE}
        with self._lock:
            found = made_by(self.client.retrieve(self.collection, [point_id(p, tenant=tenant) for p in product_ids],
                                                 **wanted), self.embedder)
            missing = sorted(set(shas) - {i.image_sha256 for i in found})
            if self.embedder and missing:
                more, _ = self.client.scroll(self.collection, same_images(missing, self.embedder, tenant),
                                             limit=4 * len(missing), **wanted)
                found += made_by(more, self.embedder)
        return by_product_and_sha(found, product_ids)

    def search(self, vectors: np.ndarray, limits: list[int],
               filters: list[dict[str, Any]]) -> list[list[SearchResult]]:
        """Nearest CLIP vectors, one batched query for many, each with its own limit and filter."""
        return self.find(vector_asks(vectors, limits, filters))

    def find(self, asks: list[Ask]) -> list[list[SearchResult]]:
        with self._lock:
            return find_asks(self.client, self.collection, asks, self.params)

    def photos(self, product_id: str, tenant: str = DEFAULT_TENANT) -> list[list[float]]:
        with self._lock:
            return product_photos(self.client, self.collection, product_id, tenant)

    def backfill_keywords(self, batch: int = 256) -> int:
        def page(offset: Any) -> tuple[int, Any]:
            with self._lock:
                return add_keywords_page(self.client, self.collection, offset, batch)
        return backfill(page)

    def get(self, product_id: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any] | None:
        with self._lock:
            found = self.client.retrieve(self.collection, [point_id(product_id, tenant=tenant)], with_payload=True)
        return found[0].payload if found else None

    def delete(self, product_id: str, version: int, tenant: str = DEFAULT_TENANT) -> bool:
        """Delete the product's point if it is older than ``version`` (the delete's own); a
        newer upload stored meanwhile stays. True when there was such a point."""
        with self._lock:
            found = self.client.retrieve(self.collection, [point_id(product_id, tenant=tenant)],
                                         with_payload=["version"])
            if not found or int((found[0].payload or {}).get("version") or 0) >= version:
                return False
            # another worker may store a newer upload between the two calls: the filter checks again
            stale = models.FilterSelector(filter=older(product_id, version, tenant))
            self.client.delete(self.collection, points_selector=stale, wait=True)
        return True

    def scroll(self, offset: Any = None, limit: int = 256) -> tuple[list[Any], Any]:
        with self._lock:
            return self.client.scroll(self.collection, offset=offset, limit=limit, with_payload=True,
                                      with_vectors=DENSE)

    def write(self, points: list[tuple[Any, list[float], dict[str, Any]]]) -> None:
        """Store points as they are (an import or a copy): no version check."""
        with self._lock:
            self.client.upsert(self.collection, wait=True, points=[
                models.PointStruct(id=str(i), vector={"": v, KEYWORDS: keywords_of(p)}, payload=p) for i, v, p in points])

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

