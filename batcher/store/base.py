"""The vector store's interface: what the worker's stages and the query lane call.

Two engines implement it, each in its own module: ``EdgeStore`` (Qdrant Edge, in the
worker's process, the embedded default) and ``ServerStore`` (qdrant-client against a Qdrant
server, ``QDRANT_URL``). Both keep the same rules: the last upload of a product wins, a
delete sticks, and a stale retry never rolls a product back (``batcher.stages.versions``).
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from batcher.queue.jobs import Job
from batcher.queue.messages import SearchResult
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

    def images(self, photos: list[Photo], shas: list[str]
               ) -> tuple[dict[Photo, StoredImage], dict[str, StoredImage]]:
        """The stored images this store's model embedded, for a batch: by (product, photo index),
        the points of ``photos``; by sha256, for each of ``shas``, a point holding those bytes."""

    def search(self, vectors: np.ndarray, limits: list[int],
               filters: list[dict[str, Any]]) -> list[list[SearchResult]]:
        """One batched query for many vectors, each with its own limit and filter."""

    def get(self, product_id: str) -> dict[str, Any] | None:
        """Photo 0's payload, with ``photos``: each photo's index, sha256 and source."""

    def delete(self, product_id: str, version: int) -> bool:
        """Delete the product's photos older than ``version`` (the delete's own); a newer upload
        stored meanwhile stays. True when there was such a point."""

    def info(self) -> dict[str, Any]:
        """Engine, collection, points, payload indexes, size on disk where known."""

    def close(self) -> None: ...
