"""The perceptual hash of a photo: 64 bits that stay close when the same picture is resized,
re-encoded, lightly cropped or rotated, and differ in about half their bits between unrelated
photos. Pure (Pillow and numpy), no torch.

DCT pHash: the photo in grey, shrunk to 32x32 (a box filter: every pixel counts), its 2-D DCT
(a matrix product, no scipy), and of the 8x8 lowest frequencies, without the constant term,
one bit each: above their median or not. The measurements that chose it and the distance
threshold: ``python -m scripts.bench_duplicates`` (scripts/README.md).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

SIDE = 32  # the grey thumbnail the DCT reads
LOW = 8  # the LOW x LOW lowest frequencies give the 64 bits
BITS = LOW * LOW
HEX_DIGITS = BITS // 4


@lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    """The orthonormal DCT-II of length ``SIDE``, its first ``LOW`` rows: ``D @ x @ D.T``."""
    k = np.arange(LOW)[:, None]
    n = np.arange(SIDE)[None, :]
    d = np.cos(np.pi * (2 * n + 1) * k / (2 * SIDE)) * np.sqrt(2 / SIDE)
    d[0] /= np.sqrt(2)
    return d


def phash(im: Image.Image) -> int:
    """The 64-bit hash of an image (any mode, any size)."""
    grey = np.asarray(im.convert("L").resize((SIDE, SIDE), Image.Resampling.BOX), dtype=np.float64)
    d = _dct_matrix()
    low = (d @ grey @ d.T).ravel()
    bits = low > np.median(low[1:])
    bits[0] = False  # the constant term says how bright the photo is, not what it shows
    return int("".join("1" if b else "0" for b in bits), 2)


def distance(a: int, b: int) -> int:
    """Hamming distance between two hashes: how many of the 64 bits differ."""
    return (a ^ b).bit_count()


def to_hex(h: int) -> str:
    return f"{h:0{HEX_DIGITS}x}"


def from_hex(text: str) -> int:
    """A hash stored as hex; ``ValueError`` for anything else."""
    if len(text) != HEX_DIGITS:
        raise ValueError(f"a perceptual hash is {HEX_DIGITS} hex digits")
    return int(text, 16)
