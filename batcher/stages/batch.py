"""What the stages hand each other: one batch at a time, owned by the stage that holds it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from batcher.queue.jobs import Job


@dataclass(frozen=True)
class Known:
    """A job whose image's vector the store already holds: no decode, no forward pass."""

    job: Job
    vector: np.ndarray
    kind: str  # unchanged (its own product's point) or reused (another product's)


@dataclass(frozen=True)
class Twin:
    """A job whose image bytes another job of its batch carries: that one is embedded, once."""

    job: Job
    same_as: Job


@dataclass(frozen=True)
class Batch:
    """Claim -> infer: the jobs decoded, their pixels, and the jobs that cannot be decoded."""

    jobs: list[Job]                      # decoded, to embed
    pixels: Any                          # (len(jobs), S, S, 3) uint8: a numpy array, or a tensor on the GPU
    rejected: list[tuple[Job, str]]      # permanent failures (cannot decode)
    retry: list[tuple[Job, str]] = field(default_factory=list)  # transient failures (fetching image_url)
    known: list[Known] = field(default_factory=list)  # vectors found in the store: stored as they are
    twins: list[Twin] = field(default_factory=list)  # each stored with the vector of its ``same_as`` in ``jobs``
    hashes: dict[str, int] = field(default_factory=dict)  # job id -> its photo's perceptual hash (batcher.duplicates)


@dataclass(frozen=True)
class Embedded:
    """Infer -> finish: the vectors of ``Batch.jobs``, or why there are none."""

    vectors: np.ndarray | None = None
    error: str | None = None
