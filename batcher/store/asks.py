"""One search as a store runs it, whatever the engine: what it scores by, its filter, its limit.

- ``vector`` alone: nearest CLIP vectors (a photo, or words in ``mode: "vector"``);
- ``words`` alone: BM25 over the products' words (``mode: "keyword"``, see ``keywords``);
- both: the two lists fused by reciprocal rank (``mode: "hybrid"``), in one query of two
  prefetches, each reading as deep as the fused page needs;
- ``like``: Qdrant's recommend query with these vectors as positives (best score), the product
  they come from (``exclude``) left out by the filter.

``limit`` counts products: the engines read pages of photos and keep each product's best
(``grouping``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batcher.queue.jobs import DEFAULT_TENANT

RRF_K = 60  # reciprocal rank fusion's constant: 1 / (k + rank), as Qdrant's default
MAX_PHOTOS = 256  # a product's photos read as the positives of a "more like this"


@dataclass(frozen=True)
class Ask:
    limit: int
    filter: dict[str, Any] = field(default_factory=dict)
    vector: list[float] | None = None
    words: str = ""
    like: tuple[list[float], ...] = ()
    exclude: str = ""  # a product_id left out
    tenant: str = DEFAULT_TENANT  # the only tenant whose points it reads (the engines' ``tenant_is``)

    @property
    def hybrid(self) -> bool:
        return self.vector is not None and bool(self.words)


def vector_asks(vectors, limits: list[int], filters: list[dict[str, Any]]) -> list[Ask]:
    """The asks of the store's ``search``: nearest CLIP vectors, each with its limit and filter."""
    return [Ask(n, f, v) for v, n, f in zip(vectors.astype("float32").tolist(), limits, filters)]
