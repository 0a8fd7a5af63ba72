"""The banded index of perceptual hashes: how a Hamming search becomes keyword lookups.

A stored hash is cut into ``BANDS`` bands of 16 bits; each band is a keyword of the point's
payload (``phash_bands``: ``"0:3fa1"``, ``"1:…"``, …), which a keyword index answers at once.
Pigeonhole: two hashes within Hamming distance ``d`` differ in at most ``d // BANDS`` bits in
at least one band (else every band would differ in more, and the whole in more than ``d``).
So a lookup asks, for each band, every value within ``d // BANDS`` bits of its own
(``probe_keys``): each stored hash within ``d`` holds one of those keywords, and far fewer
unrelated hashes do than in a scan. The exact distance is then checked on those candidates.
"""
from __future__ import annotations

from functools import lru_cache
from itertools import combinations

from batcher.duplicates.phash import BITS

BANDS = 4
BAND_BITS = BITS // BANDS
_MASK = (1 << BAND_BITS) - 1


def band_values(h: int) -> list[int]:
    """The hash's bands, from the high bits down."""
    return [(h >> (BITS - BAND_BITS * (i + 1))) & _MASK for i in range(BANDS)]


def key(band: int, value: int) -> str:
    return f"{band}:{value:0{BAND_BITS // 4}x}"


def band_keys(h: int) -> list[str]:
    """What a stored point holds in ``phash_bands``: one keyword per band."""
    return [key(i, v) for i, v in enumerate(band_values(h))]


@lru_cache(maxsize=8)
def _flips(radius: int) -> tuple[int, ...]:
    """Every mask of at most ``radius`` bits in a band (0 included)."""
    return tuple(sum(1 << b for b in bits) for r in range(radius + 1) for bits in combinations(range(BAND_BITS), r))


def probe_radius(max_distance: int) -> int:
    return max_distance // BANDS


def probe_keys(h: int, max_distance: int) -> list[str]:
    """The keywords a lookup for hashes within ``max_distance`` of ``h`` asks for: per band,
    every value within ``probe_radius`` bits (1 + 16 + 120 a band at radius 2)."""
    flips = _flips(probe_radius(max_distance))
    return [key(i, v ^ f) for i, v in enumerate(band_values(h)) for f in flips]
