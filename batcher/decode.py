"""Decode stage: untrusted image bytes -> a uint8 RGB array of the model's input size.

Everything here assumes hostile input. The pixel limit is checked from the header before
any pixel is decoded; EXIF orientation is applied; CMYK, greyscale, palette, 16-bit and
alpha images become plain RGB (alpha composited on white, as product photos are shown);
animations contribute their first frame. Any failure is a ``DecodeError``: a permanent
failure of that one job, never of the batch.
"""
from __future__ import annotations

import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps

from batcher.queue.images import ImageRejected, probe
from models.preprocessing import Preprocessing

ImageFile.LOAD_TRUNCATED_IMAGES = False
Image.MAX_IMAGE_PIXELS = None  # we enforce our own limit from the header, before decoding
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


class DecodeError(ValueError):
    """The bytes are not an image we can use; the message says why."""


def open_rgb(data: bytes, max_pixels: int, min_side: int | None = None) -> Image.Image:
    """Fully decode ``data`` into an upright RGB image.

    With ``min_side``, a JPEG is decoded at the smallest DCT scale whose both sides still
    cover ``min_side`` (``Image.draft``), which is several times cheaper for photos.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = probe(data, max_pixels)
            if min_side and im.format in ("JPEG", "MPO"):
                im.draft("RGB", (min_side, min_side))
            im.load()
            return _to_rgb(_upright(im))
    except ImageRejected as exc:
        raise DecodeError(f"cannot decode image: {exc}" if exc.unreadable else str(exc)) from None
    except Exception as exc:  # Pillow raises many types for hostile input
        raise DecodeError(f"cannot decode image: {exc.__class__.__name__}: {exc}") from None


def _upright(im: Image.Image) -> Image.Image:
    try:
        ImageOps.exif_transpose(im, in_place=True)  # in place: no copy of an upright photo
    except Exception:  # a broken EXIF block is no reason to reject a photo
        pass
    return im


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
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


def decode(data: bytes | None, prep: Preprocessing, max_pixels: int) -> np.ndarray:
    """Image bytes -> ``(size, size, 3)`` uint8, or ``DecodeError``."""
    if not data:
        raise DecodeError("cannot decode image: the image is empty or missing")
    return fit(open_rgb(data, max_pixels, min_side=prep.image_size), prep)
