"""The vector store's settings, as one group: ``WorkerSettings.store`` builds it from the
``QDRANT_*`` variables, and the store, its upgrade and ``clipq-store`` take nothing else."""
from __future__ import annotations

from dataclasses import dataclass

MEMORY = ":memory:"


@dataclass(frozen=True)
class StoreConfig:
    url: str | None = None  # a Qdrant server; None: the embedded store in ``path``
    path: str = "./data/qdrant"
    collection: str = "products"
    api_key: str | None = None
    indexed_fields: tuple[str, ...] = ()  # metadata keys filtered on
    shards: int = 1  # a new collection on a server
    replicas: int = 1
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    hnsw_ef: int = 128
    segment_points: int = 20_000  # embedded: a plain segment gets its HNSW index at this size
    vectors_on_disk: bool = False
    quantization: str = "none"  # or "int8": scalar quantization, 4x less memory for vectors

    @property
    def embedded(self) -> bool:
        return not self.url
