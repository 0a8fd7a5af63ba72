"""The embedded store: Qdrant Edge, the server's storage engine as a library, in the worker's
process. Segments on disk with a write-ahead log, payload indexes, HNSW, conditional upserts.

One process opens a folder (``QDRANT_PATH/<collection>``): the worker owns it, and a second
process is refused (``StoreLocked``). Edge builds an HNSW index only when asked, and holds
the GIL while it does, which would pause every thread of the worker (heartbeat, query lane,
claims) for as long as the build takes. So the store keeps new points in a plain segment,
searched exactly, and builds the index of one segment at a time, when it has
``segment_points`` points: each pause is bounded by one segment's build (measured in
``python -m scripts.bench_store --stall``), whatever the size of the catalog.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_edge import CountRequest, EdgeShard, ScrollRequest, SearchParams, UpdateOperation

from batcher.queue.jobs import DEFAULT_TENANT, Job
from batcher.queue.messages import SearchResult
from batcher.store.base import StoreError
from batcher.store.config import MEMORY, StoreConfig
from batcher.store.asks import Ask, vector_asks
from batcher.store.edge_duplicates import EdgeDuplicates
from batcher.store.edge_filters import same_images, with_keywords
from batcher.store.edge_folder import (add_keywords, drop_hash_vector, ensure_indexes, has_hash_vector, has_keywords,
                                      open_shard, stored_dim)
from batcher.store.edge_queries import add_keywords_page, find_asks, product_photos, with_keywords_point
from batcher.store.edge_sets import delete_older, read_product, write_sets
from batcher.store.keywords import DENSE, backfill
from batcher.store.points import IMAGE_FIELDS, Photo, StoredImage, by_photo_and_sha, made_by, point_id

log = logging.getLogger(__name__)
FLUSH_INTERVAL_S = 1.0


class EdgeStore(EdgeDuplicates):
    engine = "edge"

    def __init__(self, shard: EdgeShard, folder: Path, config: StoreConfig, dim: int, embedder: str = "",
                 temporary: bool = False) -> None:
        self.shard, self.folder, self.config, self.dim = shard, folder, config, dim
        self.embedder = embedder
        self._temporary = temporary
        self._lock = threading.Lock()  # one call at a time: Edge takes them so, and the version rule needs it
        ensure_indexes(shard, config.indexed_fields)
        if not has_keywords(folder):
            add_keywords(shard, folder)
        if has_hash_vector(folder):
            drop_hash_vector(shard, folder)
        self._unindexed = self._count_unindexed()
        self._flushed_at = time.monotonic()
        self.params = SearchParams(hnsw_ef=config.hnsw_ef)

    @classmethod
    def open(cls, config: StoreConfig, dim: int | None, model: str = "", embedder: str = "") -> "EdgeStore":
        """``dim`` None: the store already in the folder, whatever its size (``clipq-store``)."""
        temporary = config.path == MEMORY
        if temporary and dim is None:
            raise StoreError("QDRANT_PATH=:memory: holds no store to open")
        root = Path(tempfile.mkdtemp(prefix="clipq-edge-")) if temporary else Path(config.path)
        folder = root / config.collection
        dim = dim or stored_dim(folder)
        if dim is None:
            raise StoreError(f"there is no embedded store in {folder}")
        return cls(open_shard(folder, config, dim, model), folder, config, dim, embedder, temporary)

    def _count_unindexed(self) -> int:
        """Points whose CLIP vector has no HNSW index yet. Edge counts every keywords vector as
        indexed (a sparse index is built as points come): those are taken off."""
        info = self.shard.info()
        sparse = self.shard.count(CountRequest(exact=True, filter=with_keywords()))
        return max(0, info.points_count - max(0, info.indexed_vectors_count - sparse))

    def upsert(self, jobs: list[Job], vectors: np.ndarray) -> None:
        """Each product's photo set written whole, or not at all when a newer one is stored
        (``edge_sets.write_sets``), under the store's lock."""
        with self._lock:
            written, touched = write_sets(self.shard, jobs, vectors, self.embedder)
            self._rehash(touched)
            self._written(written)

    def _written(self, points: int) -> None:
        """After a write: the update is in the write-ahead log, which the kernel holds even if this
        process is killed, and replays at the next open. Segments are flushed to disk once a
        second (a flush per batch cost 5 to 6 times the upsert), as a Qdrant server does; a
        power cut may lose that second, like Redis with ``appendfsync everysec``."""
        now = time.monotonic()
        if now - self._flushed_at >= FLUSH_INTERVAL_S:
            self.shard.flush()
            self._flushed_at = now
        self._unindexed += points
        if self._unindexed >= self.config.segment_points:
            self._build_index()

    def _build_index(self) -> None:
        """Index the full plain segment (holds the GIL: the process pauses while it runs). The
        next try comes ``segment_points`` points later, whatever this one did."""
        unindexed, self._unindexed = self._count_unindexed(), 0
        if unindexed >= self.config.segment_points:
            t0 = time.perf_counter()
            self.shard.optimize()
            log.info("built the HNSW index of %d points in %.1fs (the worker paused meanwhile)",
                     unindexed - self._count_unindexed(), time.perf_counter() - t0)

    def images(self, photos: list[Photo], shas: list[str], tenant: str = DEFAULT_TENANT
               ) -> tuple[dict[Photo, StoredImage], dict[str, StoredImage]]:
        """Two indexed reads, in the tenant: the batch's photos by point id, then the images by sha256."""
        with self._lock:
            found = made_by(self.shard.retrieve([point_id(p, i, tenant) for p, i in photos], IMAGE_FIELDS, DENSE),
                            self.embedder)
            missing = sorted(set(shas) - {i.image_sha256 for i in found})
            if self.embedder and missing:
                more, _ = self.shard.scroll(ScrollRequest(limit=4 * len(missing), with_payload=IMAGE_FIELDS,
                                                          with_vector=DENSE,
                                                          filter=same_images(missing, self.embedder, tenant)))
                found += made_by(more, self.embedder)
        return by_photo_and_sha(found, photos)

    def search(self, vectors: np.ndarray, limits: list[int],
               filters: list[dict[str, Any]]) -> list[list[SearchResult]]:
        """Nearest CLIP vectors, one batched query for many, each with its own limit and filter."""
        return self.find(vector_asks(vectors, limits, filters))

    def find(self, asks: list[Ask]) -> list[list[SearchResult]]:
        with self._lock:
            return find_asks(self.shard, asks, self.params)

    def photos(self, product_id: str, tenant: str = DEFAULT_TENANT) -> list[list[float]]:
        with self._lock:
            return product_photos(self.shard, product_id, tenant)

    def get(self, product_id: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any] | None:
        with self._lock:
            return read_product(self.shard, product_id, tenant)

    def delete(self, product_id: str, version: int, tenant: str = DEFAULT_TENANT) -> bool:
        with self._lock:  # the one writer: nothing is stored between the read and the delete
            deleted = delete_older(self.shard, product_id, version, tenant)
            if deleted:
                self._rehash(deleted)
                self._written(0)
        return bool(deleted)

    def scroll(self, offset: Any = None, limit: int = 256) -> tuple[list[Any], Any]:
        """Points in id order, with vectors and payloads: ``clipq-store export`` and the copy."""
        with self._lock:
            return self.shard.scroll(ScrollRequest(offset=offset, limit=limit, with_payload=True, with_vector=DENSE))

    def backfill_keywords(self, batch: int = 256) -> int:
        return self._backfill(add_keywords_page, batch)

    def backfill_hashes(self, batch: int = 256) -> int:
        """None to give: the lookup reads the hashes from the payloads (``hash_index``)."""
        return 0

    def _backfill(self, add_page, batch: int) -> int:
        """``add_page`` (the vectors of one page of points stored without them) to the end."""
        def page(offset: Any) -> tuple[int, Any]:
            with self._lock:
                done = add_page(self.shard, offset, batch)
                self._written(0)
            return done
        return backfill(page)

    def write(self, points: list[tuple[Any, list[float], dict[str, Any]]]) -> None:
        """Store points as they are (an import or an upgrade): no version check."""
        with self._lock:
            self.shard.update(UpdateOperation.upsert_points([with_keywords_point(i, v, p) for i, v, p in points]))
            self._rehash([str(i) for i, _, _ in points])
            self._written(len(points))

    def count(self) -> int:
        with self._lock:
            return self.shard.count(CountRequest(exact=True))

    def info(self) -> dict[str, Any]:
        with self._lock:
            info, unindexed = self.shard.info(), self._count_unindexed()
        return {"engine": "Qdrant Edge (embedded)", "folder": str(self.folder), "collection": self.config.collection,
                "points": info.points_count, "indexed_vectors": info.points_count - unindexed,
                "segments": info.segments_count, "dim": self.dim,
                "payload_indexes": {k: str(v.data_type).rsplit(".", 1)[-1] for k, v in info.payload_schema.items()},
                # blocks in use: Edge's files are sparse, their apparent size is mostly holes
                "disk_bytes": sum(f.stat().st_blocks * 512 for f in self.folder.rglob("*") if f.is_file())}

    def close(self) -> None:
        with self._lock:
            self.shard.flush()
            self.shard.close()
        if self._temporary:
            shutil.rmtree(self.folder.parent, ignore_errors=True)

