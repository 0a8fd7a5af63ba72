"""Near duplicates at ingest (the finish stage, just before the upsert): for each photo of a
batch, the photos of other products already stored, or earlier in the same batch, whose
perceptual hash lies within ``max_distance`` bits of its own.

One batched store read for the whole batch: for each photo, the points whose hash vector lies
within the distance (``batcher.store.hash_vector``: one HNSW query a photo), none of the batch's
own products (their points are being replaced). The exact distance is then checked here, on
the candidates' ``phash`` payload. Run in the store thread, after
every earlier batch is stored, so that no pair between consecutive batches is missed.

What is found goes into the photo's payload (``phash``, which the store makes the hash vector
of, ``near_duplicates``,
``near_duplicate_count``: ``GET /api/v1/duplicates`` pages through those points) and into its
job's status, through the ack: one list over all the job's photos, each entry naming the job's
photo it is a near duplicate of (``of_photo``). A product's own photos never pair with each
other (neither in the batch nor in the store, where the batch's products are left out). A failed lookup stores the hash all the same and lists nothing
(``None``: unknown), the photo is stored as usual.
"""
from __future__ import annotations

import logging
from dataclasses import asdict

import numpy as np

from batcher.config import DuplicateConfig
from batcher.duplicates.confirm import confirmed
from batcher.duplicates.phash import distance, to_hex
from batcher.duplicates.photo import NearDuplicate, Photo, Probe, stored_photo
from batcher.queue.jobs import Job
from batcher.stages.batch import photo_of
from batcher.store import VectorStore

log = logging.getLogger("clipq.worker")
# read at most a photo (ids and hashes), nearest first: the store returns only hashes within the
# distance, so this bounds a photo shared by very many products (the nearest are listed); the
# HNSW query searches at least this deep
CANDIDATES_PER_PHOTO = 128


def by_job(photos: list[Job], found: list[list[NearDuplicate] | None]) -> dict[str, list[dict] | None]:
    """What each job's status lists (``photos`` one ``Job`` per photo, ``found`` theirs): the near
    duplicates of all its photos, each entry with ``of_photo``, the job's photo it pairs with;
    None when any of its photos' lookups failed."""
    listed: dict[str, list[dict] | None] = {}
    for job, near in zip(photos, found):
        before = listed.get(job.job_id, [])
        listed[job.job_id] = None if near is None or before is None else before + [n.of(job.photo_index) for n in near]
    return {j: None if near is None else sorted(near, key=lambda n: (n["of_photo"], n["distance"]))
            for j, near in listed.items()}


class DuplicateFinder:
    def __init__(self, store: VectorStore, config: DuplicateConfig) -> None:
        self.store, self.config = store, config

    def mark(self, jobs: list[Job], hashes: dict[tuple[str, int], int], vectors: np.ndarray | None = None
             ) -> dict[str, list[dict] | None]:
        """Put each hashed photo's hash and near duplicates in its point's payload (``job.extra``;
        ``jobs`` holds one ``Job`` per photo, ``hashes`` is by (job id, photo index)); by job id,
        the public list over all its photos, each entry naming its own photo (``of_photo``), or
        None when the lookup failed. ``vectors``, one a photo, are needed only to confirm by CLIP
        cosine (``WORKER_DUPLICATE_MIN_COSINE``)."""
        hashed = [(j, None if vectors is None else vectors[i]) for i, j in enumerate(jobs) if photo_of(j) in hashes]
        photos = [Photo(j.product_id, j.photo_index, hashes[photo_of(j)], v, j.tenant) for j, v in hashed]
        found = self.find(photos)
        for (job, _), photo, near in zip(hashed, photos, found):
            self.stamp(job, photo.phash, near or [])
        return by_job([j for j, _ in hashed], found)

    @staticmethod
    def stamp(job: Job, phash: int, near: list[NearDuplicate]) -> None:
        """The payload fields of a photo with this hash and these near duplicates."""
        job.extra = {"phash": to_hex(phash),
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
        found = self.store.hashed([Probe(p.phash, self.config.max_distance, p.tenant, own[p.tenant])
                                   for p in photos], max(CANDIDATES_PER_PHOTO, self.config.max_listed))
        return [[p for p in map(stored_photo, payloads) if p is not None] for payloads in found]

    def _near(self, photo: Photo, candidates: list[Photo]) -> list[NearDuplicate]:
        near = [NearDuplicate(c.product_id, c.photo_index, distance(photo.phash, c.phash), to_hex(c.phash))
                for c in candidates]
        near = [n for n in near if n.distance <= self.config.max_distance]
        return sorted(near, key=lambda n: (n.distance, n.product_id, n.photo_index))
