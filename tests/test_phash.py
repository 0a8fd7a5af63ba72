"""The perceptual hash (pure: no Redis, no store)."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

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
