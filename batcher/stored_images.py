"""Which stored points hold which image bytes: the lookups behind ``batcher.stages.recall``.

A Qdrant server finds points by ``image_sha256`` through a payload index. The embedded store
would scan every point for it, so the one process that owns an embedded folder keeps the map
sha256 -> product in memory instead (``ShaIndex``): read once at start-up, updated with every
upsert. It is only a hint: a point found through it is used only if its payload, read in the
same call as the batch's own points, still holds those bytes.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from qdrant_client import QdrantClient

log = logging.getLogger(__name__)
IMAGE_FIELDS = ["product_id", "image_sha256", "embedder"]


@dataclass(frozen=True)
class StoredImage:
    """A stored point's image: which product holds it, its bytes' sha256, its vector."""

    product_id: str
    image_sha256: str
    vector: np.ndarray


def made_by(points, embedder: str) -> list[StoredImage]:
    """The images among ``points`` (read with their vectors) whose vector ``embedder`` made."""
    return [StoredImage(p.payload["product_id"], p.payload["image_sha256"], np.asarray(p.vector, np.float32))
            for p in points
            if embedder and p.payload and p.payload.get("embedder") == embedder
            and p.payload.get("image_sha256") and p.payload.get("product_id") and p.vector is not None]


class ShaIndex:
    """sha256 -> the product last stored with those bytes, for an embedded store's owner."""

    def __init__(self) -> None:
        self._owner: dict[str, str] = {}

    def load(self, client: QdrantClient, collection: str, embedder: str) -> None:
        t0, offset = time.perf_counter(), None
        while True:
            points, offset = client.scroll(collection, limit=1024, offset=offset, with_payload=IMAGE_FIELDS)
            for p in points:
                if p.payload and p.payload.get("embedder") == embedder and p.payload.get("image_sha256"):
                    self._owner[p.payload["image_sha256"]] = p.payload.get("product_id", "")
            if offset is None:
                break
        log.info("indexed the image hashes of %d stored products in %.1fs", len(self._owner), time.perf_counter() - t0)

    def add(self, pairs) -> None:
        """``(sha256, product_id)`` pairs just stored."""
        self._owner.update({sha: pid for sha, pid in pairs if sha})

    def owners(self, shas) -> set[str]:
        return {self._owner[s] for s in shas if s in self._owner}
