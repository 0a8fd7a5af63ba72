"""A photo as the near-duplicate lookup sees it, and one of its near duplicates."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from batcher.duplicates.phash import from_hex
from batcher.queue.jobs import DEFAULT_TENANT


@dataclass(frozen=True)
class Photo:
    product_id: str
    photo_index: int
    phash: int
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)  # its CLIP vector, when known
    tenant: str = DEFAULT_TENANT  # a photo is only ever paired with its own tenant's


@dataclass(frozen=True)
class Probe:
    """One photo's lookup: the stored hashes within ``max_distance`` bits of ``phash``, within
    its tenant, none of ``exclude`` (that tenant's products of the batch, whose points are being
    replaced)."""

    phash: int
    max_distance: int
    tenant: str
    exclude: list[str]


@dataclass(frozen=True)
class NearDuplicate:
    product_id: str
    photo_index: int
    distance: int
    phash: str  # the other photo's hash when found: a pair whose photo changed since is dropped

    def public(self) -> dict:
        return {"product_id": self.product_id, "photo_index": self.photo_index, "distance": self.distance}

    def of(self, photo_index: int) -> dict:
        """As a job's status lists it: which of the job's photos it is a near duplicate of."""
        return {"of_photo": photo_index, **self.public()}


def stored_photo(payload: dict) -> Photo | None:
    """A stored point's photo, or None for one without a readable hash."""
    try:
        return Photo(str(payload["product_id"]), int(payload.get("photo_index") or 0), from_hex(payload["phash"]),
                     tenant=str(payload.get("tenant") or DEFAULT_TENANT))
    except (KeyError, TypeError, ValueError):
        return None
