"""Near duplicates at ingest (the finish stage, just before the upsert): for each photo of a
batch, the photos of other products already stored, or earlier in the same batch, whose
perceptual hash lies within ``max_distance`` bits of its own.

One batched store read for the whole batch: for each photo, the points sharing enough of its
band keywords to lie within the distance (``bands``), none of the batch's own products (their
points are being replaced). The exact distance is then checked here. Run in the store thread, after
every earlier batch is stored, so that no pair between consecutive batches is missed.

What is found goes into the photo's payload (``phash``, ``phash_bands``, ``near_duplicates``,
``near_duplicate_count``: ``GET /api/v1/duplicates`` pages through those points) and into its
job's status, through the ack. A failed lookup stores the hash all the same and lists nothing
(``None``: unknown), the photo is stored as usual.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from batcher.config import DuplicateConfig
from batcher.duplicates.bands import band_keys, probe_keys
from batcher.duplicates.phash import distance, from_hex, to_hex
from batcher.queue.jobs import Job
from batcher.store import VectorStore

log = logging.getLogger("clipq.worker")
# read at most a photo (ids and hashes): about 1 point in 120 at distance 10, so the lookup misses
# nothing up to 2 million points; beyond, or for a photo shared by more products, the first found
CANDIDATES_PER_PHOTO = 16_384


@dataclass(frozen=True)
class Photo:
    product_id: str
    photo_index: int
    phash: int


@dataclass(frozen=True)
class NearDuplicate:
    product_id: str
    photo_index: int
    distance: int
    phash: str  # the other photo's hash when found: a pair whose photo changed since is dropped

    def public(self) -> dict:
        return {"product_id": self.product_id, "photo_index": self.photo_index, "distance": self.distance}


def stored_photo(payload: dict) -> Photo | None:
    """A stored point's photo, or None for one without a readable hash."""
    try:
        return Photo(str(payload["product_id"]), int(payload.get("photo_index") or 0), from_hex(payload["phash"]))
    except (KeyError, TypeError, ValueError):
        return None


class DuplicateFinder:
    def __init__(self, store: VectorStore, config: DuplicateConfig) -> None:
        self.store, self.config = store, config

    def mark(self, jobs: list[Job], hashes: dict[str, int]) -> dict[str, list[NearDuplicate] | None]:
        """Put each hashed job's photo hash and near duplicates in its point's payload
        (``job.extra``); by job id, what was found (None: the lookup failed)."""
        hashed = [j for j in jobs if j.job_id in hashes]
        photos = [Photo(j.product_id, 0, hashes[j.job_id]) for j in hashed]  # one photo a job, index 0
        found = self.find(photos)
        for job, photo, near in zip(hashed, photos, found):
            self.stamp(job, photo.phash, near or [])
        return {j.job_id: near for j, near in zip(hashed, found)}

    @staticmethod
    def stamp(job: Job, phash: int, near: list[NearDuplicate]) -> None:
        """The payload fields of a photo with this hash and these near duplicates."""
        job.extra = {"phash": to_hex(phash), "phash_bands": band_keys(phash),
                     "near_duplicates": [asdict(n) for n in near], "near_duplicate_count": len(near)}

    def find(self, photos: list[Photo]) -> list[list[NearDuplicate] | None]:
        if not self.config.max_listed:  # WORKER_DUPLICATE_MAX_LISTED=0: no lookup, nothing known
            return [None for _ in photos]
        try:
            stored = self._stored(photos)
        except Exception as exc:  # the store is checked again by the upsert: only this lookup is lost
            log.warning("near-duplicate lookup failed (%s: %s): the batch lists none", exc.__class__.__name__, exc)
            return [None for _ in photos]
        return [self._near(p, stored[i] + [q for q in photos[:i] if q.product_id != p.product_id])
                for i, p in enumerate(photos)]

    def _stored(self, photos: list[Photo]) -> list[list[Photo]]:
        found = self.store.hashed([probe_keys(p.phash, self.config.max_distance) for p in photos],
                                  sorted({p.product_id for p in photos}), CANDIDATES_PER_PHOTO)
        return [[p for p in map(stored_photo, payloads) if p is not None] for payloads in found]

    def _near(self, photo: Photo, candidates: list[Photo]) -> list[NearDuplicate]:
        near = [NearDuplicate(c.product_id, c.photo_index, distance(photo.phash, c.phash), to_hex(c.phash))
                for c in candidates]
        near = [n for n in near if n.distance <= self.config.max_distance]
        return sorted(near, key=lambda n: (n.distance, n.product_id, n.photo_index))[:self.config.max_listed]
