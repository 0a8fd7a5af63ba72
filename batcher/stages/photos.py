"""A job of several photos through the stages: split into one ``Job`` per photo after the claim,
each decoded, recalled and embedded like a job of one photo; joined again into one outcome
per job before the ack.

A job is one photo set: it fails as a whole when any of its photos fails (its error names the
photo), retries as a whole when any must retry, and its photos are stored together or not at
all, so one bad photo leaves every point of the product as it was.
"""
from __future__ import annotations

import json
from dataclasses import replace

from batcher.queue import photos as photo_list
from batcher.queue.calls import Outcome
from batcher.queue.jobs import Job

EMBEDDED, UNCHANGED, REUSED = "", "unchanged", "reused"


def split(job: Job) -> list[Job]:
    """One ``Job`` per photo of ``job`` (itself when it has one), or ``FramingError`` when its
    image key does not hold its uploaded photos."""
    if len(job.photos) <= 1:
        return [job]
    uploaded = photo_list.unpack(job.image)
    expected = sum(not p.url for p in job.photos)
    if len(uploaded) != expected:
        raise photo_list.FramingError(f"the job lists {expected} uploaded photos; its image holds {len(uploaded)}")
    files = iter(uploaded)
    return [replace(job, photo_index=p.index, image=None if p.url else next(files), image_url=p.url,
                    image_sha256=p.image_sha256, extra={}) for p in job.photos]


def named(job: Job, error: str) -> str:
    """The error of one photo of ``job``, naming that photo when the job has several."""
    return error if len(job.photos) <= 1 else f"{photo_list.label(list(job.photos), job.photo_index)}: {error}"


def kind(kinds: list[str]) -> str:
    """A job's outcome from its photos': embedded if any was, else reused if any was, else unchanged."""
    for k in (EMBEDDED, REUSED):
        if k in kinds:
            return k
    return UNCHANGED


class Outcomes:
    """Each photo's result, joined into one ``Outcome`` per job: failed wins over retry, retry
    over completed."""

    def __init__(self) -> None:
        self.first: dict[str, Job] = {}
        self.failed: dict[str, str] = {}
        self.retry: dict[str, str] = {}
        self.kinds: dict[str, list[str]] = {}
        self.near: dict[str, list[dict] | None] = {}  # by job id: its photos' near duplicates (None: unknown)

    def _see(self, job: Job) -> None:
        self.first.setdefault(job.job_id, job)

    def fail(self, job: Job, error: str) -> None:
        self._see(job)
        self.failed.setdefault(job.job_id, named(job, error))

    def again(self, job: Job, error: str, of_photo: bool = True) -> None:
        """``of_photo`` False: the error is the batch's (the model's, the store's), not the photo's."""
        self._see(job)
        self.retry.setdefault(job.job_id, named(job, error) if of_photo else error)

    def done(self, job: Job, how: str) -> None:
        self._see(job)
        self.kinds.setdefault(job.job_id, []).append(how)

    def settled(self, job: Job) -> bool:
        """Whether the job of this photo failed or must retry already: none of its photos is stored."""
        return job.job_id in self.failed or job.job_id in self.retry

    def _listed(self, job_id: str) -> str:
        """The job's near duplicates as its status shows them ("": not looked up)."""
        near = self.near.get(job_id)
        return "" if near is None else json.dumps(near, separators=(",", ":"))

    def joined(self, retry) -> tuple[list[Job], list[Outcome]]:
        """(one photo of each job, its job's outcome); ``retry(job, error)`` makes a retry's."""
        jobs, outcomes = [], []
        for job_id, job in self.first.items():
            jobs.append(job)
            if job_id in self.failed:
                outcomes.append(Outcome(job_id, "failed", self.failed[job_id]))
            elif job_id in self.retry:
                outcomes.append(retry(job, self.retry[job_id]))
            else:
                outcomes.append(Outcome(job_id, "completed", kind=kind(self.kinds[job_id]),
                                        near_duplicates=self._listed(job_id)))
        return jobs, outcomes
