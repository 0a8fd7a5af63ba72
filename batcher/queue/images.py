"""What an accepted image is, judged from its first bytes and its header: torch-free, shared by
the API (before anything is queued) and the worker's decode stage.

Pillow's ``open`` is lazy: it reads the header alone, so the size of a decompression bomb is
known without decoding a pixel.
"""
from __future__ import annotations

import io

from PIL import Image

FORMATS = ("JPEG", "PNG", "WEBP")  # Pillow's names; MPO opens as JPEG


NOT_READABLE = "not a readable JPEG, PNG or WebP file"


class ImageRejected(ValueError):
    """Not an image to work on. ``code``: ``invalid_image`` or ``image_too_large``;
    ``unreadable``: the header itself could not be read."""

    def __init__(self, code: str, message: str, unreadable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.unreadable = unreadable


def sniff(data: bytes) -> str | None:
    """The content type from the magic bytes, never from a name or a Content-Type header."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def probe(data: bytes, max_pixels: int) -> Image.Image:
    """Open ``data`` lazily as an accepted format and check its size from the header alone.

    Returns the open, not yet decoded, image (the caller loads or closes it), or raises
    ``ImageRejected``.
    """
    try:
        im = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:  # Pillow's own ceiling, far above any sane limit
        raise ImageRejected("image_too_large", f"the image header claims over {max_pixels} pixels") from None
    except Image.UnidentifiedImageError:
        raise ImageRejected("invalid_image", NOT_READABLE, True) from None
    except Exception as exc:  # Pillow raises many types for hostile headers
        raise ImageRejected("invalid_image", f"{exc.__class__.__name__}: {exc}", True) from None
    width, height = im.size
    if width < 1 or height < 1:
        im.close()
        raise ImageRejected("invalid_image", f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        im.close()
        # the words api/reasons.py shows as they are (and the failure groups normalise)
        raise ImageRejected("image_too_large", f"image is {width}x{height}, over the limit of {max_pixels} pixels")
    return im
