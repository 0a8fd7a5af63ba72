"""The perceptual hash and its banded index (pure: no Redis, no store)."""
from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from PIL import Image

from batcher.duplicates.bands import band_keys, probe_keys
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


@pytest.mark.parametrize("max_distance", [3, 7, 10, 11])
def test_hashes_within_the_distance_always_hold_a_probed_band(max_distance):
    rng = random.Random(max_distance)
    for _ in range(300):
        a = rng.getrandbits(64)
        b = a
        for bit in rng.sample(range(64), rng.randint(0, max_distance)):
            b ^= 1 << bit
        assert set(probe_keys(a, max_distance)) & set(band_keys(b))


def test_random_far_hashes_rarely_hold_a_probed_band():
    rng = random.Random(1)
    h = rng.getrandbits(64)
    probes = set(probe_keys(h, 10))
    assert len(band_keys(h)) == 4 and len(probes) == 4 * 137
    assert sum(bool(probes & set(band_keys(rng.getrandbits(64)))) for _ in range(20_000)) < 20_000 * 0.02
    with pytest.raises(ValueError):
        probe_keys(h, 12)


def test_both_decoders_hash_each_decoded_photo_alike_and_a_broken_one_not_at_all(encoder):
    """The decode pool hashes the image it decodes; the GPU path (here on a CPU) hashes apart,
    from a JPEG's smallest DCT scale: the same picture, a few bits at most."""
    from batcher.decode import DecodeBudget, ImageDecoder
    from batcher.gpu_decode import JpegBatchDecoder

    prep = encoder.preprocessing
    cpu = ImageDecoder(prep, 40_000_000, DecodeBudget(1 << 30), 2)
    jpeg = JpegBatchDecoder(ImageDecoder(prep, 40_000_000, DecodeBudget(1 << 30), 2), "cpu", 1 << 30)
    images = [(REAL / n).read_bytes() for n in ("rocket.jpg", "flower.jpg", "astronaut.png")]
    images.append((REAL.parent / "hostile" / "truncated_jpeg.jpg").read_bytes())
    try:
        _, errors, hashes = cpu.hashed(images)
        _, jpeg_errors, jpeg_hashes = jpeg.hashed(images)
    finally:
        cpu.close()
        jpeg.close()
    assert errors[3] and jpeg_errors[3] and hashes[3] is None and jpeg_hashes[3] is None
    full = [phash(_photo(n)) for n in ("rocket.jpg", "flower.jpg", "astronaut.png")]  # from the full-size photo
    # a JPEG is decoded at a reduced DCT scale: a bit or two may move
    assert max(distance(a, b) for a, b in zip(hashes, full)) <= 2
    assert max(distance(a, b) for a, b in zip(jpeg_hashes, full)) <= 4
