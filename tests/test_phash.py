"""The perceptual hash and its banded index (pure: no Redis, no store)."""
from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from PIL import Image

from batcher.duplicates.bands import BANDS, band_keys, min_shared
from batcher.duplicates.phash import distance, from_hex, phash, to_hex

REAL = Path(__file__).parent / "data" / "corpus" / "real"


def _photo(name: str) -> Image.Image:
    return Image.open(REAL / name).convert("RGB")


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    return Image.open(io.BytesIO(out.getvalue()))


@pytest.mark.parametrize("name", ["astronaut.png", "chelsea.png", "flower.jpg"])
def test_the_same_picture_resized_reencoded_cropped_or_rotated_stays_close(name):
    im = _photo(name)
    w, h = im.size
    h0 = phash(im)
    assert distance(h0, phash(im.resize((w // 2, h // 2)))) <= 2
    assert distance(h0, phash(_jpeg(im, 40))) <= 2
    assert distance(h0, phash(im.crop((w // 40, h // 40, w - w // 40, h - h // 40)))) <= 10
    assert distance(h0, phash(im.rotate(2, Image.Resampling.BICUBIC, fillcolor=(255, 255, 255)))) <= 10


def test_unrelated_photos_are_far_apart():
    names = ["astronaut.png", "chelsea.png", "coffee.png", "camera.png", "rocket.jpg", "hopper.jpg"]
    hashes = [phash(_photo(n)) for n in names]
    assert min(distance(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]) >= 20


def test_hex_round_trip_and_bad_hex():
    h = phash(_photo("coffee.png"))
    assert from_hex(to_hex(h)) == h and len(to_hex(h)) == 16
    with pytest.raises(ValueError):
        from_hex("xyz")


@pytest.mark.parametrize("max_distance", [3, 7, 10, 12])
def test_hashes_within_the_distance_always_share_enough_bands(max_distance):
    rng = random.Random(max_distance)
    for _ in range(300):
        a = rng.getrandbits(64)
        b = a
        for bit in rng.sample(range(64), rng.randint(0, max_distance)):
            b ^= 1 << bit
        assert len(set(band_keys(a)) & set(band_keys(b))) >= min_shared(max_distance)


def test_a_random_far_hash_rarely_shares_enough_bands():
    rng = random.Random(1)
    keys = set(band_keys(rng.getrandbits(64)))
    shared = sum(len(keys & set(band_keys(rng.getrandbits(64)))) >= min_shared(10) for _ in range(20_000))
    assert len(keys) == BANDS
    assert shared <= 20  # about 1 in 4,000 (binomial: 6 or more of 16 bands at 1/16 each)
    with pytest.raises(ValueError):
        min_shared(13)
