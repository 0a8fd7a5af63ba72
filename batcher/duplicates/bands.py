"""The former banded index of perceptual hashes: how a Hamming search becomes keyword lookups.
The worker now asks the hash vector instead (``batcher.store.hash_vector``), which does not read
more candidates as the catalog grows; this stays for ``scripts.bench_duplicates``'s comparison.

A stored hash is cut into four 16-bit blocks, each a keyword of the point's ``phash_bands``
(``"0:3fa1"``, …, ``"3:…"``), which a keyword index answers at once. Pigeonhole: two hashes
within Hamming distance ``d`` differ in at most ``d // 4`` bits in one of the blocks at least
(else they would differ in more than ``d`` bits in all). So a lookup asks for any block value
within that many bits of the photo's own (``probe_keys``: 1 + 16 + 120 values a block at
distance 8 to 11): every hash within ``d`` holds one of them, and about 1 random hash in 120
does at distance 10 (1 in 1,000 at 4 to 7). The exact distance is checked on those candidates.

(Qdrant's ``min_should``, which could also require the 16 - d of sixteen 4-bit nibbles that a
hash within ``d`` shares, is not planned through the index: 4 s a batch at 20,000 points on
Edge, against 2 ms a photo for the keyword probes alone.)
"""
from __future__ import annotations

from functools import lru_cache
from itertools import combinations

from batcher.duplicates.phash import BITS

BANDS, BAND_BITS = 4, 16
MAX_DISTANCE = 11  # at 12 a band's probes grow from 137 values to 697


def band_values(h: int) -> list[int]:
    """The hash's bands, from the high bits down."""
    return [(h >> (BITS - BAND_BITS * (i + 1))) & ((1 << BAND_BITS) - 1) for i in range(BANDS)]


def band_keys(h: int) -> list[str]:
    """What a stored point holds in ``phash_bands``: one keyword a band."""
    return [f"{i}:{v:04x}" for i, v in enumerate(band_values(h))]


@lru_cache(maxsize=8)
def _flips(radius: int) -> tuple[int, ...]:
    """Every mask of at most ``radius`` bits in a band (0 included)."""
    return tuple(sum(1 << b for b in bits) for r in range(radius + 1) for bits in combinations(range(BAND_BITS), r))


def probe_keys(h: int, max_distance: int) -> list[str]:
    """The band keywords of which every hash within ``max_distance`` of ``h`` holds one."""
    if not 0 <= max_distance <= MAX_DISTANCE:
        raise ValueError(f"the distance must lie between 0 and {MAX_DISTANCE}")
    flips = _flips(max_distance // BANDS)
    return [f"{i}:{v ^ f:04x}" for i, v in enumerate(band_values(h)) for f in flips]
