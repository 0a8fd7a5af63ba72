"""The job record: how a job is stored in its Redis hash and shown to clients."""
from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from batcher.queue import photos as photo_list
from batcher.queue.photos import UPLOAD, Photo

QUEUED, PROCESSING, COMPLETED, FAILED = "queued", "processing", "completed", "failed"
SUPERSEDED = "superseded"  # a newer upload or a delete of its product came after it: not stored
STATUSES = (QUEUED, PROCESSING, COMPLETED, FAILED, SUPERSEDED)
DEFAULT_TENANT = "default"  # the tenant of API_KEY, and of every job and point stored before tenants
TENANT_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
TERMINAL = frozenset({COMPLETED, FAILED, SUPERSEDED})  # a job in one of these changes no more by itself


def new_job_id(shard: int | None = None) -> str:
    """``job-`` + 128 random bits as 32 hex characters: unguessable, so a job id is a capability.
    With QUEUE_SHARDS > 1, ``-<shard>`` follows (``batcher.queue.keys.job_shard`` reads it)."""
    return "job-" + secrets.token_hex(16) + ("" if shard is None else f"-{shard}")


def iso_from_ms(ms: int | str | None) -> str | None:
    if ms in (None, ""):
        return None
    # always milliseconds: a time on the second must not lose its fraction and sort out of order
    stamp = datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclass(frozen=True)
class JobSpec:
    """What the API stores for a new job (the image bytes are stored beside it, unless the job
    has an ``image_url``). Several photos: ``photos`` lists them all (``batcher.queue.photos``);
    ``image_sha256`` and ``content_type`` are photo 0's, and the image bytes are framed."""

    product_id: str
    name: str
    description: str
    metadata: dict[str, Any]
    image_sha256: str
    content_type: str
    image_url: str = ""  # instead of image bytes: the worker fetches it (no image key is stored)
    photos: tuple[Photo, ...] = ()  # given for several photos only
    tenant: str = DEFAULT_TENANT
    callback_url: str = ""  # where the job's end is delivered (api/webhooks.py); "" for nowhere

    def __post_init__(self) -> None:
        # the scripts build the tenant's keys from its name: never let one reach them unchecked
        if not re.match(TENANT_PATTERN, self.tenant):
            raise ValueError(f"tenant {self.tenant!r} is not 1 to 64 of A-Za-z0-9_.-")

    def to_fields(self) -> dict[str, str]:
        fields = {
            "product_id": self.product_id,
            "name": self.name,
            "description": self.description,
            "metadata": json.dumps(self.metadata, separators=(",", ":")),
            "image_sha256": self.image_sha256,
            "content_type": self.content_type,
            "tenant": self.tenant,
            # the versions/deletes hash field of the product (lua/enqueue.lua, prelude.lua)
            "product_key": product_key(self.tenant, self.product_id),
        }
        if self.image_url:
            fields["image_url"] = self.image_url
        if self.callback_url:
            fields["callback_url"] = self.callback_url
        if len(self.photos) > 1:
            fields["photos"] = photo_list.dumps(list(self.photos))
        return fields


@dataclass
class Job:
    """A job as read back from Redis by a worker, with its image bytes (for an ``image_url`` job,
    the fetched bytes). The claim stage splits a job of several photos into one ``Job`` per
    photo (``batcher.stages.photos``): each with its ``photo_index``, bytes, URL and sha256."""

    job_id: str
    product_id: str
    name: str
    description: str
    metadata: dict[str, Any]
    image_sha256: str
    created_at_ms: int
    retry_count: int
    status: str = PROCESSING
    version: int = 0  # given at enqueue time; 0 for a job queued before versions existed
    image: bytes | None = field(default=None, repr=False)
    image_url: str = ""
    photos: tuple[Photo, ...] = ()  # every photo of the job, when it has several
    photo_index: int = 0
    # payload fields the worker adds to the photo's point (its hash and near duplicates)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    tenant: str = DEFAULT_TENANT

    @property
    def photo_count(self) -> int:
        return max(1, len(self.photos))

    @property
    def source(self) -> str:
        return self.image_url or UPLOAD

    @property
    def product_key(self) -> str:
        return product_key(self.tenant, self.product_id)

    @classmethod
    def from_hash(cls, h: dict[bytes, bytes], image: bytes | None) -> "Job":
        s = {k.decode(): v.decode() for k, v in h.items()}
        return cls(
            job_id=s["job_id"],
            product_id=s["product_id"],
            name=s.get("name", ""),
            description=s.get("description", ""),
            metadata=json.loads(s.get("metadata") or "{}"),
            image_sha256=s.get("image_sha256", ""),
            created_at_ms=int(s.get("created_at", 0)),
            retry_count=int(s.get("retry_count", 0)),
            status=s.get("status", ""),
            version=int(s.get("version") or 0),
            image=image,
            image_url=s.get("image_url", ""),
            photos=tuple(photo_list.loads(s["photos"])) if s.get("photos") else (),
            tenant=s.get("tenant") or DEFAULT_TENANT,
        )


def product_key(tenant: str, product_id: str) -> str:
    """A product's field in the versions and deletes hashes, and what picks its shard
    (``keys.product_shard``): its id for the default tenant (as before tenants),
    ``<tenant>/<product_id>`` for another. Also importable from ``batcher.queue.keys``."""
    return product_id if tenant == DEFAULT_TENANT else f"{tenant}/{product_id}"


def nesting(value: Any) -> int:
    """How deep objects and lists nest in ``value`` (a scalar: 0, ``{}``: 1); no recursion. The API
    refuses an upload whose metadata nests too deep; the worker checks again a job that reached
    Redis another way, rather than rely on what the store or the interpreter's limit accepts."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def public_status(h: dict[str, str]) -> dict[str, Any]:
    """The status document served by ``GET /api/v1/queue/status/{job_id}``."""
    return {
        "job_id": h["job_id"],
        "status": h["status"],
        "product_id": h.get("product_id"),
        "created_at": iso_from_ms(h.get("created_at")),
        "updated_at": iso_from_ms(h.get("updated_at")),
        "retry_count": int(h.get("retry_count", 0)),
        "version": int(h["version"]) if h.get("version") else None,
        "error_message": h.get("error_message") or None,
        # for a completed job, how its vector was found: embedded, unchanged or reused
        "outcome": h.get("outcome") or None,
        # for a completed job: the other products' photos that are the same picture (batcher.duplicates)
        "near_duplicates": json.loads(h["near_duplicates"]) if h.get("near_duplicates") else None,
    }
