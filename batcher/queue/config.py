"""Typed settings read from the environment.

Each process builds one settings object at start-up (never at import). Field names are the
environment variable names in lower case; unknown keyword arguments are rejected, and
environment variables that look like ours but are unknown are reported, so a typo in a
deployment manifest does not go unnoticed.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

DAY = 24 * 3600


class EnvSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Environment prefixes owned by this settings class: unknown variables with them are reported.
    owned_prefixes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any):
        environ = os.environ if environ is None else environ
        values = {name: environ[name.upper()] for name in cls.model_fields if name.upper() in environ}
        values = {k: (None if v == "" else v) for k, v in values.items()}
        known = {name.upper() for name in cls.model_fields}
        for key in environ:
            if key.startswith(cls.owned_prefixes) and key not in known:
                log.warning("unknown setting %s is ignored (known: %s)", key, ", ".join(sorted(known)))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def documentation(cls) -> dict[str, str]:
        """Environment variable -> description, for the README table and manifest checks."""
        return {name.upper(): f.description or "" for name, f in cls.model_fields.items()}


@dataclass(frozen=True)
class QueueConfig:
    """The worker's side of the queue (``JobConsumer`` and its script calls): the key
    namespace and how long and how often a job lives (``QueueSettings.queue`` builds it)."""

    namespace: str
    max_attempts: int
    job_ttl: int
    failed_job_ttl: int
    failed_image_ttl: int
    shards: int = 1  # QUEUE_SHARDS
    wait_replicas: int = 0  # REDIS_WAIT_REPLICAS
    wait_timeout_ms: int = 500  # REDIS_WAIT_TIMEOUT_MS
    fair: bool = True  # FAIR_SCHEDULING


class QueueSettings(EnvSettings):
    """Settings shared by the API and the worker."""

    redis_url: str = Field("redis://localhost:6379/0", description="Redis server URL (any node of a cluster).")
    redis_cluster: bool = Field(False, description="Speak the Redis Cluster protocol (all keys share one slot).")
    queue_namespace: str = Field(
        "clipq", pattern=r"^[A-Za-z0-9_.-]+$",
        description="Hash tag of every Redis key: `{clipq}:queue`, `{clipq}:job:<id>`, ...",
    )
    queue_shards: int = Field(
        1, ge=1, le=1024,
        description="Independent queues, each under its own hash tag (spread over the slots of a Redis Cluster); "
                    "1: the single `{clipq}` queue. Change it only with the queue drained.")
    redis_wait_replicas: int = Field(
        0, ge=0, le=16,
        description="Replicas that must confirm an upload (and a worker's ack) before it counts as done "
                    "(`WAIT k`): an upload they do not confirm within REDIS_WAIT_TIMEOUT_MS gets 503 "
                    "`not_replicated`; an ack is logged and counted. 0: off (replication stays asynchronous).")
    redis_wait_timeout_ms: int = Field(
        500, ge=1, le=60_000, description="Milliseconds the WAIT of REDIS_WAIT_REPLICAS may take.")
    fair_scheduling: bool = Field(
        True, description="Workers claim round-robin over the tenants with queued jobs; false: the next tenant's "
                          "jobs until its list is empty (first come, first served: to measure fairness against, "
                          "or an escape hatch).")
    max_attempts: int = Field(3, ge=1, le=100, description="Attempts before a job with transient failures fails.")
    job_ttl: int = Field(7 * DAY, ge=60, description="Seconds a completed job record is kept.")
    failed_job_ttl: int = Field(30 * DAY, ge=60, description="Seconds a failed job record is kept.")
    failed_image_ttl: int = Field(
        DAY, ge=0, description="Seconds a failed job's image is kept so that a manual retry can re-run it "
                               "(less when MAX_QUEUE_BYTES needs the room; 0: not kept)."
    )
    max_upload_bytes: int = Field(
        10 * 1024 * 1024, ge=1,
        description="Largest image: an upload over it gets 413, an `image_url` body over it fails the job.")
    max_metadata_depth: int = Field(
        8, ge=1, le=64, description="Deepest nesting of objects and lists in `metadata` (the API refuses an upload "
                                    "over it; the worker fails a job over it).")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest image (width x height) accepted and decoded.")
    log_level: str = Field("INFO", description="Python log level.")

    @property
    def queue(self) -> QueueConfig:
        return QueueConfig(self.queue_namespace, self.max_attempts, self.job_ttl, self.failed_job_ttl,
                           self.failed_image_ttl, self.queue_shards, self.redis_wait_replicas,
                           self.redis_wait_timeout_ms, self.fair_scheduling)
