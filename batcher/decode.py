"""Decode stage: untrusted image bytes -> a uint8 RGB array of the model's input size.

Everything here assumes hostile input. The pixel limit is checked from the header before
any pixel is decoded; EXIF orientation is applied; CMYK, greyscale, palette, 16-bit and
alpha images become plain RGB (alpha composited on white, as product photos are shown);
animations contribute their first frame. Any failure is a ``DecodeError``: a permanent
failure of that one job, never of the batch, with a short reason (the details are logged).

Memory is bounded in bytes, not only in pixels: the header gives the size, the bands and the
bit depth, so the bytes a decode will hold are known before it starts (``decode_cost``). The
decode threads share a ``DecodeBudget``: an image that needs more than all of it fails, and
large images wait for each other rather than decode all at once.
"""
from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageFile, ImageOps

from batcher.decode_budget import DecodeBudget
from batcher.duplicates.phash import SIDE, phash
from batcher.queue.images import NOT_READABLE, ImageRejected, probe
from models.preprocessing import Preprocessing

ImageFile.LOAD_TRUNCATED_IMAGES = False
Image.MAX_IMAGE_PIXELS = None  # we enforce our own limit from the header, before decoding
log = logging.getLogger("clipq.decode")
UNREADABLE = "cannot decode image: the file is corrupt, truncated or not a supported image"
_SAMPLE_BYTES = {"1": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


class DecodeError(ValueError):
    """The bytes are not an image we can use; the message says why."""


def decode_cost(im: Image.Image) -> int:
    """Peak bytes to decode ``im`` (from its header) and convert it to RGB: its own buffer,
    one working copy of it, and the RGB result."""
    sample = _SAMPLE_BYTES.get(im.mode, 1)
    return im.width * im.height * (2 * len(im.getbands()) * sample + 3)


def open_rgb(data: bytes, max_pixels: int, min_side: int | None = None,
             budget: DecodeBudget | None = None) -> Image.Image:
    """Fully decode ``data`` into an upright RGB image.

    With ``min_side``, a JPEG is decoded at the smallest DCT scale whose both sides still
    cover ``min_side`` (``Image.draft``), which is several times cheaper for photos. With a
    ``budget``, the decode holds its bytes of it, and an image larger than all of it fails.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = probe(data, max_pixels)
            if min_side and im.format in ("JPEG", "MPO"):
                im.draft("RGB", (min_side, min_side))
            if budget is None:
                return _load(im)
            cost = decode_cost(im)
            if cost > budget.total:
                raise DecodeError(f"image needs {-(-cost >> 20)} MiB to decode, over the limit of "
                                  f"{budget.total >> 20} MiB")
            budget.acquire(cost)
            try:
                return _load(im)
            finally:
                budget.release(cost)
    except DecodeError:
        raise
    except ImageRejected as exc:  # our own words, unless Pillow's text rode along on a bad header
        if exc.unreadable and str(exc) != NOT_READABLE:
            log.info("cannot decode image: %s", exc)
            raise DecodeError(UNREADABLE) from None
        raise DecodeError(f"cannot decode image: {exc}" if exc.unreadable else str(exc)) from None
    except Exception as exc:  # Pillow raises many types for hostile input: the details stay in the log
        log.info("cannot decode image: %s: %s", exc.__class__.__name__, exc)
        raise DecodeError(UNREADABLE) from None


def _load(im: Image.Image) -> Image.Image:
    im.load()
    return _to_rgb(_upright(im))


def _upright(im: Image.Image) -> Image.Image:
    try:
        ImageOps.exif_transpose(im, in_place=True)  # in place: no copy of an upright photo
    except Exception:  # a broken EXIF block is no reason to reject a photo
        pass
    return im


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16"):  # the high byte: no float copy of a 16-bit image
        im = Image.fromarray((np.asarray(im) >> 8).astype(np.uint8), "L")
    elif im.mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        top = 65535.0 if arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def fit(im: Image.Image, prep: Preprocessing) -> np.ndarray:
    """Resize the shorter side to the model size and centre-crop, as open_clip does.

    One resize of the crop's source box: the pixels of resizing the whole image and then
    cropping, without computing the pixels the crop would throw away.
    """
    size = prep.image_size
    w, h = im.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, min(w, (left + size) * sx), min(h, (top + size) * sy))
    im = im.resize((size, size), _RESAMPLE.get(prep.interpolation, Image.Resampling.BICUBIC), box=box)
    return np.asarray(im, dtype=np.uint8)


def _open(data: bytes | None, max_pixels: int, min_side: int, budget: DecodeBudget | None) -> Image.Image:
    if not data:
        raise DecodeError("cannot decode image: the image is empty or missing")
    return open_rgb(data, max_pixels, min_side=min_side, budget=budget)


def decode(data: bytes | None, prep: Preprocessing, max_pixels: int,
           budget: DecodeBudget | None = None) -> np.ndarray:
    """Image bytes -> ``(size, size, 3)`` uint8, or ``DecodeError``."""
    return fit(_open(data, max_pixels, prep.image_size, budget), prep)


def decode_hashed(data: bytes | None, prep: Preprocessing, max_pixels: int,
                  budget: DecodeBudget | None = None) -> tuple[np.ndarray, int]:
    """``decode``, and the perceptual hash of the whole decoded photo (``batcher.duplicates``)."""
    im = _open(data, max_pixels, prep.image_size, budget)
    return fit(im, prep), phash(im)


def hash_only(data: bytes | None, max_pixels: int, budget: DecodeBudget | None = None) -> int | None:
    """The perceptual hash alone (a JPEG decoded at its smallest DCT scale), None if undecodable."""
    try:
        return phash(_open(data, max_pixels, 2 * SIDE, budget))
    except DecodeError:
        return None


class ImageDecoder:
    """A batch's images decoded in a pool of threads (``WORKER_DECODE_THREADS``): the stacked
    pixels of the good ones, and for each image its error message or None."""

    def __init__(self, prep: Preprocessing, max_pixels: int, budget: DecodeBudget | None, threads: int) -> None:
        self.prep, self.max_pixels, self.budget = prep, max_pixels, budget
        self._pool = ThreadPoolExecutor(threads, "decode")

    def _one(self, data: bytes | None) -> tuple[np.ndarray, int] | DecodeError:
        try:
            return decode_hashed(data, self.prep, self.max_pixels, self.budget)
        except DecodeError as exc:
            return exc

    def __call__(self, images: list[bytes | None]) -> tuple[np.ndarray | None, list[str | None]]:
        pixels, errors, _ = self.hashed(images)
        return pixels, errors

    def hashed(self, images: list[bytes | None]) -> tuple[np.ndarray | None, list[str | None], list[int | None]]:
        """The pixels and errors of ``__call__``, and each image's perceptual hash (None: not decoded)."""
        results = list(self._pool.map(self._one, images))
        good = [r for r in results if not isinstance(r, DecodeError)]
        errors = [str(r) if isinstance(r, DecodeError) else None for r in results]
        hashes = [None if isinstance(r, DecodeError) else r[1] for r in results]
        return (np.stack([g[0] for g in good]) if good else None), errors, hashes

    def hash_only(self, images: list[bytes | None]) -> list[int | None]:
        """Each image's perceptual hash alone, in the pool (None: not decodable)."""
        return list(self._pool.map(lambda data: hash_only(data, self.max_pixels, self.budget), images))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
