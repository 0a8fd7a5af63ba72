"""The vector store's interface: what the worker's stages and the query lane call.

Two engines implement it, each in its own module: ``EdgeStore`` (Qdrant Edge, in the
worker's process, the embedded default) and ``ServerStore`` (qdrant-client against a Qdrant
server, ``QDRANT_URL``). Both keep the same rules: the last upload of a product wins, a
delete sticks, and a stale retry never rolls a product back (``batcher.stages.versions``).
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from batcher.duplicates.photo import Probe
from batcher.queue.jobs import DEFAULT_TENANT, Job
from batcher.queue.messages import SearchResult
from batcher.store.asks import Ask
from batcher.store.points import Photo, StoredImage


class StoreError(RuntimeError):
    """The store cannot be opened; the message says why and what to do."""


class StoreLocked(StoreError):
    """Another process holds the embedded store's folder."""


class VectorStore(Protocol):
    engine: str  # "edge" or "server"
    dim: int
    embedder: str  # written with every point; "" for vectors that must never be reused

    def upsert(self, jobs: list[Job], vectors: np.ndarray) -> None:
        """One point per job (one photo of a product), keyed by its product and photo index. A
        stored point of a newer version than the job's stays as it is, checked by the engine in
        the same write where it can; a job older than a stored point of its product writes
        nothing, and the product's photos past the job's count and older than it are deleted."""

    def images(self, photos: list[Photo], shas: list[str], tenant: str = DEFAULT_TENANT
               ) -> tuple[dict[Photo, StoredImage], dict[str, StoredImage]]:
        """The stored images of the tenant this store's model embedded, for a batch: by (product,
        photo index), the points of ``photos``; by sha256, for each of ``shas``, a point holding
        those bytes."""

    def search(self, vectors: np.ndarray, limits: list[int],
               filters: list[dict[str, Any]]) -> list[list[SearchResult]]:
        """Nearest CLIP vectors (of the default tenant): ``find`` with one ``Ask(limit, filter, vector)`` each."""

    def find(self, asks: list[Ask]) -> list[list[SearchResult]]:
        """One batched query for many searches (by vector, keywords, both fused, or like stored
        photos), each returning up to its ``limit`` of distinct products, at their best photo."""

    def photos(self, product_id: str, tenant: str = DEFAULT_TENANT) -> list[list[float]]:
        """The stored vectors of the product's photos; none when there is no such product."""

    def backfill_keywords(self, batch: int = 256) -> int:
        """Keywords for the points stored without them, from their payloads (CLIP vectors untouched)."""

    def backfill_hashes(self, batch: int = 256) -> int:
        """Hash vectors for the points stored with a ``phash`` but without one, from their
        payloads (a server's; the embedded store's lookup reads the payloads: none to give)."""

    def warm(self) -> None:
        """Read now what the store's lookups keep in memory (the worker, at start-up)."""

    def get(self, product_id: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any] | None:
        """The tenant's product: photo 0's payload, with ``photos``: each photo's index, sha256
        and source."""

    def delete(self, product_id: str, version: int, tenant: str = DEFAULT_TENANT) -> bool:
        """Delete the tenant's product's photos older than ``version`` (the delete's own); a newer
        upload stored meanwhile stays. True when there was such a point."""

    def hashed(self, probes: list[Probe], limit: int) -> list[list[dict[str, Any]]]:
        """For each probe, the payloads (``HASH_FIELDS``) of at most ``limit`` of its tenant's
        points whose hash lies within its distance, nearest first, of no product it excludes:
        embedded, every stored hash compared in memory (exact, ``hash_index``); on a server, one
        batched query through the hash vector's HNSW index (approximate, ``hash_vector``)."""

    def flagged(self, offset: str | None, limit: int, tenant: str = DEFAULT_TENANT
                ) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
        """A page of the tenant's points that listed near duplicates, in point id order from
        ``offset``: (point id, payload of ``PAIR_FIELDS``) each, and the next page's offset
        (None: the last)."""

    def hashes(self, point_ids: list[str]) -> dict[str, str]:
        """The ``phash`` of each of these points still stored (and holding one)."""

    def vectors(self, point_ids: list[str]) -> dict[str, np.ndarray]:
        """The CLIP vector of each of these points still stored."""

    def info(self) -> dict[str, Any]:
        """Engine, collection, points, payload indexes, size on disk where known."""

    def close(self) -> None: ...
