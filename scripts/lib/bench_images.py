"""Product-sized JPEGs for the worker benchmarks, derived from real photos.

From the ``index`` photos of the corpus (tests/data/corpus; CLIPQ_CORPUS picks another) and the
sample photos (scripts/samples), by cropping, flipping and resizing, so that every job has
distinct bytes (about 1000 px on the long side, quality 90).
"""
from __future__ import annotations

import hashlib
import io
import os
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps

from scripts.lib.photos import CORPUS, SAMPLES, corpus_files, sample_photos


def source_photos(min_side: int = 224) -> list[tuple[str, Image.Image]]:
    """The real photos to derive product images from: opaque, at least ``min_side`` px."""
    paths = corpus_files("index") + sample_photos()
    photos = []
    for p in paths:
        try:
            im = Image.open(p)
            im.load()
            im = ImageOps.exif_transpose(im)
        except Exception:
            continue
        if im.mode in ("RGBA", "LA", "PA", "P") or "transparency" in im.info or min(im.size) < min_side:
            continue  # logos, icons and thumbnails are not product photos
        if im.mode.startswith("I") or im.mode == "F":
            continue
        im = im.convert("RGB")
        if len(product_jpeg(im, random.Random(0))) < 60_000:
            continue  # blurred or flat: compresses far below a product photo's 100-200 KB
        photos.append((p.name, im))
    if not photos:
        sys.exit(f"no photos of at least {min_side} px found in {CORPUS} or {SAMPLES}")
    return photos


def product_jpeg(photo: Image.Image, rng: random.Random, long_side: int = 1000, quality: int = 90) -> bytes:
    """A distinct product-sized JPEG from ``photo``: random crop (75-100% a side), flip, resize."""
    w, h = photo.size
    cw, ch = round(w * rng.uniform(0.75, 1.0)), round(h * rng.uniform(0.75, 1.0))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    im = photo.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    target = round(long_side * rng.uniform(0.96, 1.04))
    scale = target / max(cw, ch)
    im = im.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    return out.getvalue()


def make_images(n: int, seed: int = 0) -> tuple[list[bytes], dict]:
    photos = source_photos()

    def one(i: int) -> bytes:  # its own generator: the same bytes whatever the thread order
        return product_jpeg(photos[i % len(photos)][1], random.Random(seed * 1_000_003 + i))

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # Pillow releases the GIL here
        images = list(pool.map(one, range(n)))
    sizes = sorted(len(b) for b in images)
    dims = [Image.open(io.BytesIO(b)).size for b in images[: min(n, 32)]]
    info = {"count": n, "sources": [name for name, _ in photos], "format": "JPEG q90",
            "long_side_px": [min(max(d) for d in dims), max(max(d) for d in dims)],
            "kb_min": round(sizes[0] / 1024), "kb_median": round(sizes[len(sizes) // 2] / 1024),
            "kb_max": round(sizes[-1] / 1024), "distinct": len({hashlib.sha256(b).digest() for b in images})}
    return images, info


def cached_images(n: int, path: str | None) -> tuple[list[bytes], dict]:
    """``make_images(n)``, kept in ``path`` when given (a pickle of this script's own making)."""
    import pickle

    if path and Path(path).is_file():
        images, info = pickle.loads(Path(path).read_bytes())
        if len(images) >= n:
            return images[:n], info | {"count": n}
    images, info = make_images(n)
    if path:
        Path(path).write_bytes(pickle.dumps((images, info)))
    return images, info
