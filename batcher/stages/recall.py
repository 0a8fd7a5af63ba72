"""Recall (in the claim stage, before decoding): find the jobs whose image the store already
holds a vector for, so that they skip the decode and the model.

* ``unchanged``: the job's own product is stored with the same image bytes (sha256): a nightly
  re-sync of a catalog. Its stored vector is written back with the new payload and version.
* ``reused``: another product holds the same image bytes: its vector is copied. So does a job
  whose image bytes an earlier job of the same batch carries (a catalog's placeholder photo):
  that one is embedded, once, and its vector copied (``split_twins``).

Only vectors this worker's model made are reused (the store writes the encoder's
``fingerprint`` with every point). The lookups are batched: at most two store calls per batch.
The store stays the only truth: a failed lookup only means the batch is embedded as usual.
``WORKER_REUSE_VECTORS=false`` turns both off: every job is embedded.
"""
from __future__ import annotations

import logging
import time

from batcher.metrics import WorkerMetrics
from batcher.queue.jobs import Job
from batcher.stages.batch import Known, Twin
from batcher.store import VectorStore

log = logging.getLogger("clipq.worker")
UNCHANGED, REUSED = "unchanged", "reused"


def split_twins(jobs: list[Job]) -> tuple[list[Job], list[Twin]]:
    """(the jobs to embed, each job whose image bytes an earlier one of ``jobs`` carries)."""
    first: dict[tuple[str, str], Job] = {}  # by tenant and sha256: a tenant's twins are its own
    rest, twins = [], []
    for job in jobs:
        same = first.get((job.tenant, job.image_sha256)) if job.image_sha256 else None
        if same is not None:
            twins.append(Twin(job, same))
            continue
        if job.image_sha256:
            first[(job.tenant, job.image_sha256)] = job
        rest.append(job)
    return rest, twins


def by_tenant(jobs: list[Job]) -> dict[str, list[Job]]:
    out: dict[str, list[Job]] = {}
    for job in jobs:
        out.setdefault(job.tenant, []).append(job)
    return out


class RecallStage:
    def __init__(self, store: VectorStore, metrics: WorkerMetrics, enabled: bool = True) -> None:
        self.store, self.metrics = store, metrics
        self.twins = enabled  # the same model makes both: no fingerprint needed
        self.enabled = enabled and bool(store.embedder)

    def split(self, jobs: list[Job]) -> tuple[list[Job], list[Known], list[Twin]]:
        """(the jobs to decode and embed, the jobs whose vector the store already has, the jobs
        whose vector one of the first list will make)."""
        jobs, known = self._known(jobs)
        rest, twins = split_twins(jobs) if self.twins else (jobs, [])
        return rest, known, twins

    def _known(self, jobs: list[Job]) -> tuple[list[Job], list[Known]]:
        candidates = [j for j in jobs if j.image_sha256]
        if not self.enabled or not candidates:
            return jobs, []
        t0 = time.perf_counter()
        try:  # each tenant's own: one tenant's images never serve another's (nor say they exist)
            found = {t: self.store.images([j.product_id for j in mine], [j.image_sha256 for j in mine], t)
                     for t, mine in by_tenant(candidates).items()}
        except Exception as exc:  # the store is the truth: without it, embed as usual
            log.warning("looking up known images failed (%s: %s): embedding the batch",
                        exc.__class__.__name__, exc)
            return jobs, []
        rest, known = [], []
        for job in jobs:
            by_product, by_sha = found.get(job.tenant, ({}, {}))
            own, other = by_product.get(job.product_id), by_sha.get(job.image_sha256)
            if job.image_sha256 and own is not None and own.image_sha256 == job.image_sha256:
                known.append(Known(job, own.vector, UNCHANGED))
            elif job.image_sha256 and other is not None:
                known.append(Known(job, other.vector, REUSED))
            else:
                rest.append(job)
        self.metrics.stage.labels("recall").observe(time.perf_counter() - t0)
        return rest, known
