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
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from batcher.queue.jobs import DEFAULT_TENANT, Job
from batcher.queue.messages import SearchResult
from batcher.store.base import StoreError
from batcher.store.config import StoreConfig
from batcher.store.asks import Ask, vector_asks
from batcher.store.hash_vector import PHASH
from batcher.store.keywords import DENSE, KEYWORDS, backfill
from batcher.store.points import (IMAGE_FIELDS, INDEXED_INTEGERS, INDEXED_KEYWORDS, TENANT, Photo, StoredImage,
                                  by_photo_and_sha, made_by, point_id)
from batcher.store.server_duplicates import ServerDuplicates
from batcher.store.server_filters import older, same_images
from batcher.store.server_hashes import HASH_VECTOR, add_hash_vector, add_hashes_page, clip_size, point_vectors
from batcher.store.server_queries import (KEYWORDS_CONFIG, add_keywords_page, add_keywords_vector, find_asks,
                                          product_photos)
from batcher.store.server_sets import delete_where, read_product, write_sets

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
            dim = clip_size(client.get_collection(config.collection).config.params.vectors)
        store = cls(client, config.collection, dim, embedder)
        store.ensure_collection(config)
        return store

    def ensure_collection(self, config: StoreConfig) -> None:
        if not self.client.collection_exists(self.collection):
            try:
                self.client.create_collection(
                    self.collection, shard_number=config.shards, replication_factor=config.replicas,
                    vectors_config={"": models.VectorParams(size=self.dim, distance=models.Distance.COSINE),
                                    PHASH: HASH_VECTOR},
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
            if (size := clip_size(params.vectors)) != self.dim:
                raise StoreError(f"collection {self.collection} holds {size}-d vectors but the model "
                                   f"makes {self.dim}-d ones: use another QDRANT_COLLECTION")
            if KEYWORDS not in (params.sparse_vectors or {}):
                add_keywords_vector(self.client, self.collection)
                log.warning("collection %s had no keyword vectors: added them; run `clipq-store backfill-keywords` "
                            "so that keyword and hybrid searches find the products stored before", self.collection)
            if not isinstance(params.vectors, dict) or PHASH not in params.vectors:
                add_hash_vector(self.client, self.collection)
        fields = {**{f: models.PayloadSchemaType.KEYWORD for f in INDEXED_KEYWORDS},
                  **{f: models.PayloadSchemaType.INTEGER for f in INDEXED_INTEGERS},
                  **{f"metadata.{f}": models.PayloadSchemaType.KEYWORD for f in config.indexed_fields},
                  TENANT: models.KeywordIndexParams(type="keyword", is_tenant=True)}  # Qdrant's multitenancy
        for field, schema in fields.items():
            self.client.create_payload_index(self.collection, field, schema)
        self.params = models.SearchParams(hnsw_ef=config.hnsw_ef)

    def upsert(self, jobs: list[Job], vectors: np.ndarray) -> None:
        """Each product's photo set written whole, or not at all when a newer one is stored
        (``server_sets.write_sets``)."""
        with self._lock:
            write_sets(self.client, self.collection, jobs, vectors, self.embedder)

    def images(self, photos: list[Photo], shas: list[str], tenant: str = DEFAULT_TENANT
               ) -> tuple[dict[Photo, StoredImage], dict[str, StoredImage]]:
        """Two indexed reads, in the tenant: the batch's photos by point id, then the images by sha256."""
        wanted = {"with_payload": IMAGE_FIELDS, "with_vectors": DENSE}
        with self._lock:
            found = made_by(self.client.retrieve(self.collection, [point_id(p, i, tenant) for p, i in photos],
                                                 **wanted), self.embedder)
            missing = sorted(set(shas) - {i.image_sha256 for i in found})
            if self.embedder and missing:
                more, _ = self.client.scroll(self.collection, same_images(missing, self.embedder, tenant),
                                             limit=4 * len(missing), **wanted)
                found += made_by(more, self.embedder)
        return by_photo_and_sha(found, photos)

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
        return self._backfill(add_keywords_page, batch)

    def backfill_hashes(self, batch: int = 256) -> int:
        return self._backfill(add_hashes_page, batch)

    def _backfill(self, add_page, batch: int) -> int:
        """``add_page`` (the vectors of one page of points stored without them) to the end."""
        def page(offset: Any) -> tuple[int, Any]:
            with self._lock:
                return add_page(self.client, self.collection, offset, batch)
        return backfill(page)

    def get(self, product_id: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any] | None:
        with self._lock:
            return read_product(self.client, self.collection, product_id, tenant)

    def delete(self, product_id: str, version: int, tenant: str = DEFAULT_TENANT) -> bool:
        """Delete the tenant's product's photos older than ``version`` (the delete's own); a newer
        upload stored meanwhile stays. True when there was such a point."""
        stale = older(product_id, version, tenant)
        with self._lock:
            if not self.client.count(self.collection, count_filter=stale, exact=True).count:
                return False
            # another worker may store a newer upload between the two calls: the filter checks again
            delete_where(self.client, self.collection, stale)
        return True

    def scroll(self, offset: Any = None, limit: int = 256) -> tuple[list[Any], Any]:
        with self._lock:
            return self.client.scroll(self.collection, offset=offset, limit=limit, with_payload=True,
                                      with_vectors=DENSE)

    def write(self, points: list[tuple[Any, list[float], dict[str, Any]]]) -> None:
        """Store points as they are (an import or a copy): no version check."""
        with self._lock:
            self.client.upsert(self.collection, wait=True, points=[
                models.PointStruct(id=str(i), vector=point_vectors(v, p), payload=p) for i, v, p in points])

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

