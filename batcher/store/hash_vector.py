"""A photo's perceptual hash (``batcher.duplicates.phash``) as a named dense vector beside the
CLIP one, on a Qdrant server: there the near-duplicate lookup is one nearest-neighbour query
through an HNSW index. (The embedded store compares the hashes in memory: ``hash_index``.)

Bit ``b`` of the hash becomes +1 or -1: for two hashes at Hamming distance ``h`` the dot product
is ``64 - 2h``, so "within ``d`` bits" is "score at least ``64 - 2d``" (``min_score``), checked
by the store itself (``score_threshold``). HNSW is approximate: the query searches deeper than
the store's default (``HASH_EF``), measured against the exact answer by
``python -m scripts.bench_duplicates`` (scripts/README.md). Points stored before the vector
existed keep their ``phash`` payload, from which ``clipq-store backfill-hashes`` makes theirs.
"""
from __future__ import annotations

from typing import Any

from batcher.duplicates.phash import BITS, from_hex

PHASH = "phash"  # the vector's name, in both engines; the payload field of the same name holds the hex
# how deep a lookup searches each HNSW graph: 256 found every planted hash at 100,000 and
# 1,000,000 stored ones (an embedded store with the vector, before hash_index); the cost grows
# with it, and with the number of segments
HASH_EF = 256
# a segment's hashes are searched through its graph from this size on (4,000 hashes), not read
# one by one: the default 10,000 KB would scan segments of 20,000 points whole
HASH_FULL_SCAN_KB = 1_000


def hash_vector(phash: int) -> list[float]:
    """+1 for each set bit of the hash, -1 for each clear one, from the high bit down."""
    return [1.0 if phash >> (BITS - 1 - b) & 1 else -1.0 for b in range(BITS)]


def payload_vector(payload: dict[str, Any] | None) -> list[float] | None:
    """The vector of a stored point's ``phash`` payload; None when it holds no readable hash."""
    try:
        return hash_vector(from_hex((payload or {})[PHASH]))
    except (KeyError, TypeError, ValueError):
        return None


def min_score(max_distance: int) -> float:
    """The lowest dot product of two hashes within ``max_distance`` bits (a half below, for
    float sums)."""
    return BITS - 2 * max_distance - 0.5
