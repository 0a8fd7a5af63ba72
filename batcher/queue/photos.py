"""A product's photos in a job: how several are framed in the job's one image key, and how the
job's record lists them.

The queue stores a job's image bytes under ONE key, whose length its byte budget counts
(``lua/enqueue.lua``): so the uploaded photos of a job are framed into that one value. One
photo stays its raw bytes (a job queued before photos existed reads the same); several are
``MAGIC`` followed by, for each, its length (4 bytes, big-endian) and its bytes. No image
starts with ``MAGIC`` (the API accepts JPEG, PNG and WebP only, judged by their first bytes).

The record's ``photos`` field lists every photo in order, uploaded files first, then URLs:
``[{"index", "image_sha256", "source", "content_type"}]``, ``source`` being ``upload`` or the
URL the worker fetches (its sha256 is known once fetched). A record without it (one photo)
reads its ``image_sha256`` and ``image_url`` fields as before.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

MAGIC = b"CLQ\x00photos\x01"
UPLOAD = "upload"  # the source of an uploaded photo; else its URL
_LENGTH = 4


class FramingError(ValueError):
    """An image key whose frames do not add up."""


def pack(images: list[bytes]) -> bytes:
    """The one value stored for these images: b"" for none, the raw bytes for one."""
    if len(images) <= 1:
        return images[0] if images else b""
    return MAGIC + b"".join(len(i).to_bytes(_LENGTH, "big") + i for i in images)


def unpack(blob: bytes | None) -> list[bytes]:
    """The images ``pack`` framed, in order."""
    if not blob:
        return []
    if not blob.startswith(MAGIC):
        return [blob]
    images, at = [], len(MAGIC)
    while at < len(blob):
        size = int.from_bytes(blob[at:at + _LENGTH], "big")
        at += _LENGTH
        if at + size > len(blob):
            raise FramingError(f"photo {len(images)} is cut off ({len(blob) - at} of {size} bytes)")
        images.append(blob[at:at + size])
        at += size
    return images


@dataclass(frozen=True)
class Photo:
    index: int
    image_sha256: str  # "" for a URL not fetched yet
    source: str = UPLOAD  # "upload", or the URL to fetch
    content_type: str = ""

    @property
    def url(self) -> str:
        return "" if self.source == UPLOAD else self.source


def dumps(photos: list[Photo]) -> str:
    return json.dumps([asdict(p) for p in photos], separators=(",", ":"))


def loads(raw: str) -> list[Photo]:
    return [Photo(int(p["index"]), p.get("image_sha256", ""), p.get("source", UPLOAD), p.get("content_type", ""))
            for p in json.loads(raw)]


def label(photos: list[Photo], index: int) -> str:
    """How an error names a photo: ``photo 2 (image_file #3)``, counting each field from 1."""
    photo = photos[index]
    same_kind = [p for p in photos if (p.source == UPLOAD) == (photo.source == UPLOAD)]
    field = "image_file" if photo.source == UPLOAD else "image_url"
    return f"photo {index} ({field} #{same_kind.index(photo) + 1})"
