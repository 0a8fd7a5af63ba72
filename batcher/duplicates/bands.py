"""The banded index of perceptual hashes: how a Hamming search becomes keyword lookups.

A stored hash is cut into ``BANDS`` bands of 4 bits; each band is a keyword of the point's
payload (``phash_bands``: ``"0:3"``, ``"1:f"``, …, ``"15:a"``), which a keyword index answers
at once. Pigeonhole: a bit that differs spoils one band only, so two hashes within Hamming
distance ``d`` share at least ``BANDS - d`` bands exactly (``min_shared``). A lookup asks the
store for the points sharing that many of the photo's 16 band keywords (a ``min_should``
filter), and checks the exact distance on those candidates. Two unrelated (random) hashes
share a band with probability 1/16, so at distance 10 (6 bands shared) about 1 point in 4,000
is a candidate.
"""
from __future__ import annotations

from batcher.duplicates.phash import BITS

BANDS = 16
BAND_BITS = BITS // BANDS
MAX_DISTANCE = BANDS - 4  # beyond it, too many unrelated points share the few bands required
_MASK = (1 << BAND_BITS) - 1


def band_values(h: int) -> list[int]:
    """The hash's bands, from the high bits down."""
    return [(h >> (BITS - BAND_BITS * (i + 1))) & _MASK for i in range(BANDS)]


def band_keys(h: int) -> list[str]:
    """What a stored point holds in ``phash_bands``, and what a lookup asks for: one keyword a band."""
    return [f"{i}:{v:x}" for i, v in enumerate(band_values(h))]


def min_shared(max_distance: int) -> int:
    """How many bands a hash within ``max_distance`` shares with the photo's, at least."""
    if not 0 <= max_distance <= MAX_DISTANCE:
        raise ValueError(f"the distance must lie between 0 and {MAX_DISTANCE}")
    return BANDS - max_distance
