"""The server store's hash vectors (``batcher.store.hash_vector``) in qdrant-client's types: the
vector's parameters, a point's vectors, its creation on an older collection and the backfill of
the points stored before it. ``ServerStore`` calls these holding its lock."""
from __future__ import annotations

import logging
from typing import Any

from qdrant_client import QdrantClient, models

from batcher.duplicates.phash import BITS
from batcher.store.base import StoreError
from batcher.store.hash_vector import HASH_FULL_SCAN_KB, PHASH, payload_vector
from batcher.store.keywords import KEYWORDS
from batcher.store.server_filters import hashes_without_vector
from batcher.store.server_queries import keywords_of

log = logging.getLogger(__name__)
HASH_VECTOR = models.VectorParams(size=BITS, distance=models.Distance.DOT,
                                  hnsw_config=models.HnswConfigDiff(full_scan_threshold=HASH_FULL_SCAN_KB))


def clip_size(vectors: Any) -> int:
    """The CLIP vector's size of a collection's vectors config: the one unnamed vector of a
    collection made before the hash vector, or the "" of its named vectors."""
    return (vectors[""] if isinstance(vectors, dict) else vectors).size


def point_vectors(vector: list[float], payload: dict[str, Any]) -> dict[str, Any]:
    """A point's CLIP vector, keywords, and hash vector (a photo with a ``phash``)."""
    vectors = {"": vector, KEYWORDS: keywords_of(payload)}
    if hashed := payload_vector(payload):
        vectors[PHASH] = hashed
    return vectors


def add_hash_vector(client: QdrantClient, collection: str) -> None:
    """Give a collection made before the hash vector its ``phash`` vector; the photos already
    there get theirs from ``clipq-store backfill-hashes``."""
    try:
        client.create_vector_name(collection, PHASH, models.DenseVectorNameConfig(
            dense=models.DenseVectorConfig(size=BITS, distance=models.Distance.DOT)))
    except Exception as exc:
        vectors = client.get_collection(collection).config.params.vectors
        if not isinstance(vectors, dict) or PHASH not in vectors:
            raise StoreError(f"cannot add the perceptual-hash vector to collection {collection} ({exc}): "
                             "this Qdrant server may be too old to add a vector to a collection") from None
    log.warning(
        "collection %s had no perceptual-hash vectors: added them; run `clipq-store backfill-hashes` so that the "
        "near-duplicate lookup finds the photos stored before", collection)


def add_hashes_page(client: QdrantClient, collection: str, offset: Any, batch: int) -> tuple[int, Any]:
    """Hash vectors for one page of the points stored with a ``phash`` but without one."""
    points, offset = client.scroll(collection, hashes_without_vector(), limit=batch, offset=offset,
                                   with_payload=[PHASH], with_vectors=False)
    vectors = [models.PointVectors(id=p.id, vector={PHASH: v}) for p in points if (v := payload_vector(p.payload))]
    if vectors:
        client.update_vectors(collection, wait=True, points=vectors)
    return len(vectors), offset
