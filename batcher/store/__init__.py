"""The vector store: vectors and payloads in Qdrant, one batched call per batch.

``open_store`` picks the engine: a Qdrant server when ``QDRANT_URL`` is set (``server``),
else Qdrant Edge in the folder ``QDRANT_PATH`` (``edge``), after converting a folder written
by release 0.1 (qdrant-client's local mode) if it finds one (``upgrade``). Both engines
implement ``base.VectorStore``; the point's id and payload are built in ``points`` alone.
"""
from __future__ import annotations

from batcher.store.base import StoreError, StoreLocked, VectorStore
from batcher.store.config import MEMORY, StoreConfig
from batcher.store.points import StoredImage, point_id, point_payload

__all__ = ["MEMORY", "StoreConfig", "StoreError", "StoreLocked", "StoredImage", "VectorStore", "open_store",
           "point_id", "point_payload"]


def open_store(config: StoreConfig, dim: int, model: str = "", embedder: str = "") -> VectorStore:
    """The store the worker writes: ``model`` names the vectors' model (an embedded folder made
    for another is refused), ``embedder`` is written with every point (see ``points``)."""
    if not config.embedded:
        from batcher.store.server import ServerStore
        return ServerStore.open(config, dim, embedder)
    from batcher.store.edge import EdgeStore
    if config.path != MEMORY:
        from batcher.store.upgrade import upgrade_local_folder
        upgrade_local_folder(config, dim, model)
    return EdgeStore.open(config, dim, model, embedder)
