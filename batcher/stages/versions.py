"""Last upload wins, and a delete sticks: how the finish stage stores a batch.

Every upload of a product gets a version at enqueue time (``lua/enqueue.lua``), and so does
every delete (``lua/tombstone.lua``), from one counter that only grows. ``{clipq}:versions``
holds each product's newest version, ``{clipq}:deletes`` the version of its last delete.

* Before the upsert: a job older than its product's newest version is not stored.
* The upsert is conditional: a stored point of a newer version is never replaced
  (``VectorStore.upsert``), whatever order the workers finish in.
* After the upsert: a delete newer than a job of the batch may have run between the check
  and the upsert, found no point, and been undone by it. The delete is done again here, for
  points older than it only, before the ack. Either the delete's tombstone was written before
  this read (then this removes the point), or after it, and so after the upsert (then the
  query lane's delete, which comes after its tombstone, removes the point).

The ack script checks the versions once more and records every job older than its
product's newest version as ``superseded``: the truth for the counters and the ledger.
"""
from __future__ import annotations

import logging

import numpy as np

from batcher.queue.consumer import JobConsumer
from batcher.queue.jobs import Job
from batcher.store import VectorStore

log = logging.getLogger("clipq.worker")


class VersionedStore:
    def __init__(self, consumer: JobConsumer, store: VectorStore) -> None:
        self.consumer, self.store = consumer, store

    def upsert(self, jobs: list[Job], vectors: np.ndarray) -> None:
        """Store the jobs that are still their product's newest; undo what a delete undid."""
        newest = self.consumer.versions(j.product_key for j in jobs)
        fresh = [i for i, j in enumerate(jobs) if j.version >= newest.get(j.product_key, 0)]
        if fresh:
            self.store.upsert([jobs[i] for i in fresh], vectors[fresh])
        if len(fresh) < len(jobs):
            log.info("%d jobs of a batch superseded by a newer upload or a delete: not stored",
                     len(jobs) - len(fresh))
        self.redo_deletes(jobs)

    def redo_deletes(self, jobs: list[Job]) -> None:
        deleted = self.consumer.versions((j.product_key for j in jobs), deletes=True)
        for key, version in deleted.items():
            job = next((j for j in jobs if j.product_key == key and j.version < version), None)
            if job is not None and self.store.delete(job.product_id, version, job.tenant):
                log.info("product %s was deleted while its job was stored: deleted again", key)
