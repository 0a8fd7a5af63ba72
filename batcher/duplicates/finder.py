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
from dataclasses import asdict

import numpy as np

from batcher.config import DuplicateConfig
from batcher.duplicates.bands import band_keys, probe_keys
from batcher.duplicates.confirm import confirmed
from batcher.duplicates.phash import distance, to_hex
from batcher.duplicates.photo import NearDuplicate, Photo, Probe, stored_photo
from batcher.queue.jobs import Job
from batcher.store import VectorStore

log = logging.getLogger("clipq.worker")
# read at most a photo (ids and hashes): about 1 point in 120 at distance 10, so the lookup misses
# nothing up to 2 million points; beyond, or for a photo shared by more products, the first found
CANDIDATES_PER_PHOTO = 16_384


class DuplicateFinder:
    def __init__(self, store: VectorStore, config: DuplicateConfig) -> None:
        self.store, self.config = store, config

    def mark(self, jobs: list[Job], hashes: dict[str, int], vectors: np.ndarray | None = None
             ) -> dict[str, list[NearDuplicate] | None]:
        """Put each hashed job's photo hash and near duplicates in its point's payload
        (``job.extra``); by job id, what was found (None: the lookup failed). ``vectors``, one
        a job, are needed only to confirm by CLIP cosine (``WORKER_DUPLICATE_MIN_COSINE``)."""
        hashed = [(j, None if vectors is None else vectors[i]) for i, j in enumerate(jobs) if j.job_id in hashes]
        photos = [Photo(j.product_id, 0, hashes[j.job_id], v, j.tenant) for j, v in hashed]  # one photo a job, index 0
        hashed = [j for j, _ in hashed]
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
            near = self._look_up(photos)
        except Exception as exc:  # the store is checked again by the upsert: only this lookup is lost
            log.warning("near-duplicate lookup failed (%s: %s): the batch lists none", exc.__class__.__name__, exc)
            return [None for _ in photos]
        return [n[:self.config.max_listed] for n in near]

    def _look_up(self, photos: list[Photo]) -> list[list[NearDuplicate]]:
        stored = self._stored(photos)
        near = [self._near(p, stored[i] + [q for q in photos[:i] if q.tenant == p.tenant and q.product_id != p.product_id])
                for i, p in enumerate(photos)]
        return confirmed(self.store, photos, near, self.config.min_cosine) if self.config.min_cosine else near

    def _stored(self, photos: list[Photo]) -> list[list[Photo]]:
        own = {t: sorted({p.product_id for p in photos if p.tenant == t}) for t in {p.tenant for p in photos}}
        found = self.store.hashed([Probe(probe_keys(p.phash, self.config.max_distance), p.tenant, own[p.tenant])
                                   for p in photos], CANDIDATES_PER_PHOTO)
        return [[p for p in map(stored_photo, payloads) if p is not None] for payloads in found]

    def _near(self, photo: Photo, candidates: list[Photo]) -> list[NearDuplicate]:
        near = [NearDuplicate(c.product_id, c.photo_index, distance(photo.phash, c.phash), to_hex(c.phash))
                for c in candidates]
        near = [n for n in near if n.distance <= self.config.max_distance]
        return sorted(near, key=lambda n: (n.distance, n.product_id, n.photo_index))
