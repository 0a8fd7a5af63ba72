"""The typed face of the queue protocol: every script call (KEYS and ARGV, in order) and reply.

Both the API and the worker build their calls here, so the order each ``.lua`` file reads
its arguments in is written down once. Run a call with ``Scripts(client).run(call)``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .config import DAY, QueueConfig
from .jobs import JobSpec
from .keys import Keys
from .scripts import ScriptCall

RECORDED = ("completed", "failed", "retried", "superseded")  # what ack.lua records; else "skipped"
UNBOUNDED = 2**53  # no byte budget (Lua numbers are doubles)


@dataclass(frozen=True)
class Quota:
    """A tenant's own bounds on what it has queued (0: none): pending jobs, and image bytes
    (queued, processing, delayed and failed); with QUEUE_SHARDS=N each shard holds 1/N."""

    max_depth: int = 0
    max_bytes: int = 0

    def per_shard(self, shards: int) -> "Quota":
        return Quota(-(-self.max_depth // shards), -(-self.max_bytes // shards))


def enqueue(k: Keys, job_id: str, spec: JobSpec, image: bytes, max_depth: int,
            max_bytes: int = UNBOUNDED, failed_image_ttl: int = DAY, quota: Quota = Quota()) -> ScriptCall:
    """``max_bytes``: the byte budget (MAX_QUEUE_BYTES); ``failed_image_ttl``: failed images
    older than that are dropped on the way (FAILED_IMAGE_TTL); ``quota``: the tenant's."""
    fields = [x for pair in spec.to_fields().items() for x in pair]
    return ScriptCall("enqueue", [k.queue, k.stats, k.job(job_id), k.image(job_id), k.image_bytes,
                                  k.failed_images, k.version_seq, k.versions, k.ring],
                      [max_depth, job_id, image, max_bytes, failed_image_ttl, k.image(""), k.job(""),
                       k.tenant_prefix, spec.tenant, quota.max_depth, quota.max_bytes, *fields])


def ask(k: Keys, request_json: str, max_pending: int, timeout_ms: int) -> ScriptCall:
    """Put a query on the query lane with its deadline; reply ``[queued (0|1), pending]``."""
    return ScriptCall("ask", [k.requests], [max_pending, timeout_ms, request_json])


def started(k: Keys, worker_id: str, job_ids: list[str]) -> ScriptCall:
    """Mark held jobs as having reached the model: only those are charged an attempt if the
    worker dies (see reap.lua)."""
    return ScriptCall("started", [k.processing(worker_id)], [k.job(""), *job_ids])


def retry(k: Keys, job_id: str) -> ScriptCall:
    return ScriptCall("retry", [k.job(job_id), k.image(job_id), k.queue, k.stats, k.failed, k.failed_images,
                                k.versions, k.ring], [job_id, k.tenant_prefix])


def tombstone(k: Keys, product_id: str) -> ScriptCall:
    """A product's delete: its new version, newer than every job of it queued so far."""
    return ScriptCall("tombstone", [k.version_seq, k.versions, k.deletes], [product_id])


def claim(k: Keys, worker_id: str, n: int, fair: bool = True) -> ScriptCall:
    """Up to ``n`` jobs, round-robin over the tenants with queued jobs (``fair``), else the
    next tenant's until its list is empty (FAIR_SCHEDULING=false)."""
    return ScriptCall("claim", [k.queue, k.processing(worker_id), k.stats, k.workers, k.ring],
                      [k.job(""), max(n, 0), worker_id, k.tenant_prefix, "1" if fair else "0"])


def promote(k: Keys, limit: int) -> ScriptCall:
    return ScriptCall("promote", [k.delayed, k.queue, k.ring], [limit, k.job(""), k.tenant_prefix])


def reap(k: Keys, s: QueueConfig, worker_id: str, mode: str, ids: tuple[str, ...] = ()) -> ScriptCall:
    """``mode``: reap, recover, release or orphans (see reap.lua)."""
    return ScriptCall(
        "reap", [k.processing(worker_id), k.queue, k.stats, k.failed, k.workers, k.heartbeat(worker_id),
                 k.image_bytes, k.failed_images, k.versions, k.deliveries, k.ring],
        [k.job(""), k.image(""), mode, worker_id, s.max_attempts, s.failed_job_ttl, s.failed_image_ttl,
         k.tenant_prefix, *ids])


def lease_deliveries(k: Keys, lease_ms: int, limit: int) -> ScriptCall:
    """Lease the webhook deliveries due (see deliveries.lua): reply ``[now_ms, id...]``."""
    return ScriptCall("deliveries", [k.deliveries, k.deliveries_leased, k.deliveries_dead, k.delivery("")],
                      ["lease", lease_ms, limit])


def settle_delivery(k: Keys, delivery_id: str, outcome: str, delay_ms: int = 0,
                    fields: dict[str, str | int] | None = None) -> ScriptCall:
    """``outcome``: delivered, retry (due after ``delay_ms``) or dead; reply ``[now_ms, settled]``."""
    pairs = [x for pair in (fields or {}).items() for x in pair]
    return ScriptCall("deliveries", [k.deliveries, k.deliveries_leased, k.deliveries_dead, k.delivery(delivery_id)],
                      ["settle", delivery_id, outcome, delay_ms, *pairs])


def requeue_delivery(k: Keys, delivery_id: str) -> ScriptCall:
    return ScriptCall("deliveries", [k.deliveries, k.deliveries_leased, k.deliveries_dead, k.delivery(delivery_id)],
                      ["requeue", delivery_id])


def expire_images(k: Keys, s: QueueConfig, limit: int) -> ScriptCall:
    return ScriptCall("expire_images", [k.image_bytes, k.failed_images],
                      [k.image(""), s.failed_image_ttl, limit, k.job(""), k.tenant_prefix])


@dataclass(frozen=True)
class Outcome:
    """What happened to one job of a batch: ``completed``, ``failed`` (permanent) or ``retry``.
    A completed job's ``kind`` says how its vector was found: ``""`` (embedded), ``unchanged``
    or ``reused`` (see ``batcher.stages.recall``), and ``near_duplicates`` the JSON list of its
    photo's near duplicates (``batcher.duplicates``; "": not looked up)."""

    job_id: str
    outcome: str
    error: str = ""
    delay_ms: int = 0
    kind: str = ""
    near_duplicates: str = ""


def ack(k: Keys, s: QueueConfig, worker_id: str, outcomes: list[Outcome]) -> ScriptCall:
    payload = json.dumps([o.__dict__ | {"id": o.job_id} for o in outcomes])
    return ScriptCall("ack", [k.processing(worker_id), k.stats, k.failed, k.delayed, k.image_bytes,
                              k.failed_images, k.versions, k.deliveries],
                      [k.job(""), k.image(""), s.job_ttl, s.failed_job_ttl, s.failed_image_ttl,
                       s.max_attempts, payload, k.finished, k.tenant_prefix])


COMPLETED_RESULTS = ("completed", "unchanged", "reused")


@dataclass(frozen=True)
class AckResult:
    """What ack.lua recorded for each outcome, in order: the truth for accounting."""

    now_ms: int
    # completed, unchanged, reused, failed, retried, superseded, or skipped (no longer ours)
    results: tuple[str, ...]
    unreplicated: int = 0  # ack calls that REDIS_WAIT_REPLICAS replicas did not confirm in time

    @classmethod
    def parse(cls, reply: list, unreplicated: int = 0) -> "AckResult":
        results = tuple(r.decode() if isinstance(r, bytes) else str(r) for r in reply[1:])
        return cls(int(reply[0]), results, unreplicated)

    def count(self, result: str) -> int:
        return self.results.count(result)

    @property
    def completed(self) -> int:
        """Completed jobs, those that skipped the model included."""
        return sum(self.count(r) for r in COMPLETED_RESULTS)

    @property
    def skipped(self) -> int:
        return self.count("skipped")
