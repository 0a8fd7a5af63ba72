"""Every Redis key clipq uses, in one place.

All keys of one queue share one hash tag (``{clipq}`` by default) so that every multi-key Lua
script also runs on Redis Cluster: a queue lives in one slot. With QUEUE_SHARDS=N > 1 there are
N queues (shards), each under its own tag (``shard_tag``), chosen so that shard i lands in the
i-th N-th of the slot space; a product always goes to one shard (``product_shard``) and a job id
names its shard (``job_shard``). The query lane and the ``finished`` channel keep the namespace's
own tag: they are shared by every shard.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from redis.crc import key_slot

from .jobs import DEFAULT_TENANT, product_key  # noqa: F401  (product_key: defined beside the job)

DEFAULT_NAMESPACE = "clipq"
SLOTS = 16384
_SHARD_SUFFIX = re.compile(r"^job-[0-9a-f]+-(\d+)$")


def shard_tag(namespace: str, index: int, count: int) -> str:
    """The hash tag (without braces) of shard ``index`` of ``count``: the namespace itself for a
    single shard (today's keys), else the first ``<namespace>:<index>:<k>`` (k = 0, 1, ...) whose
    slot lies in the ``index``-th ``count``-th of the 16,384 slots, so that N shards spread evenly
    over any equal split of the slots between masters."""
    if count == 1:
        return namespace
    if not 0 <= index < count <= SLOTS:
        raise ValueError(f"no shard {index} of {count}")
    low, high = index * SLOTS // count, (index + 1) * SLOTS // count
    k = 0
    while not low <= key_slot(f"{namespace}:{index}:{k}".encode()) < high:
        k += 1
    return f"{namespace}:{index}:{k}"


def shard_keys(namespace: str, count: int) -> list["Keys"]:
    """The keys of every shard, shard 0 first (one shard: ``[Keys(namespace)]``)."""
    return [Keys(namespace, shard_tag(namespace, i, count) if count > 1 else "") for i in range(count)]


def product_shard(product_id: str, count: int) -> int:
    """The shard of a product: CRC-32 of its id, modulo the shard count (stable across processes)."""
    return zlib.crc32(product_id.encode()) % count if count > 1 else 0


def job_shard(job_id: str, count: int) -> int:
    """The shard a job id names (``job-<hex>-<shard>``); an id without one is shard 0's."""
    found = _SHARD_SUFFIX.match(job_id) if count > 1 else None
    return int(found.group(1)) % count if found else 0


@dataclass(frozen=True)
class Keys:
    namespace: str = DEFAULT_NAMESPACE
    hashtag: str = ""  # a shard's own tag (``shard_tag``); "": the namespace's

    @property
    def tag(self) -> str:
        return "{" + (self.hashtag or self.namespace) + "}"

    @property
    def shared_tag(self) -> str:
        """The namespace's tag, for what every shard shares: the query lane, ``finished``."""
        return "{" + self.namespace + "}"

    # -- the job queue ---------------------------------------------------------------
    @property
    def queue(self) -> str:
        """The default tenant's pending list: the API LPUSHes job ids, workers move them from the right."""
        return f"{self.tag}:queue"

    # tenants: a pending list each, the ring of those with queued jobs (claims go round-robin over it)
    def pending(self, tenant: str = DEFAULT_TENANT) -> str:
        """A tenant's pending list; the default tenant's is ``queue`` (no migration)."""
        return self.queue if tenant == DEFAULT_TENANT else f"{self.tenant_prefix}{tenant}:queue"

    def pending_lists(self, ring: list[bytes | str]) -> list[str]:
        """A shard's pending lists: the default tenant's (on ``ring`` or not) and those on ``ring``."""
        tenants = {t.decode() if isinstance(t, bytes) else t for t in ring} - {DEFAULT_TENANT}
        return [self.queue] + [self.pending(t) for t in sorted(tenants)]

    @property
    def ring(self) -> str:
        return f"{self.tag}:ring"

    @property
    def tenant_prefix(self) -> str:
        return f"{self.tag}:tenant:"

    def tenant_stats(self, tenant: str) -> str:  # the fields of ``stats``, for one tenant
        return f"{self.tenant_prefix}{tenant}:stats"

    def tenant_bytes(self, tenant: str) -> str:  # the tenant's part of ``image_bytes``
        return f"{self.tenant_prefix}{tenant}:image_bytes"

    @property
    def delayed(self) -> str:
        """Sorted set of job ids waiting for a retry, scored by due time in ms (Redis time)."""
        return f"{self.tag}:delayed"

    @property
    def failed(self) -> str:
        """Sorted set of finally failed job ids, scored by failure time in ms."""
        return f"{self.tag}:failed"

    @property
    def failed_images(self) -> str:
        """Sorted set of failed job ids whose image is still kept (for a manual retry), scored by
        failure time in ms: dropped oldest first, after FAILED_IMAGE_TTL or sooner when uploads
        need the room (the byte budget, ``lua/prelude.lua``)."""
        return f"{self.tag}:failed_images"

    @property
    def image_bytes(self) -> str:
        """Bytes of every image key that exists (queued, processing, delayed, failed): the
        counter of the byte budget (MAX_QUEUE_BYTES), changed only inside Lua scripts."""
        return f"{self.tag}:image_bytes"

    @property
    def stats(self) -> str:
        """Hash of counters by status plus ``total``; changed only inside Lua scripts."""
        return f"{self.tag}:stats"

    @property
    def workers(self) -> str:
        """Set of worker ids that may own a processing list (the reaper's work list)."""
        return f"{self.tag}:workers"

    @property
    def history(self) -> str:
        """List of queue samples (JSON, newest first) for the dashboard's sparklines; bounded
        in length, with a TTL, written by the workers' heartbeats (``lua/sample.lua``)."""
        return f"{self.tag}:history"

    @property
    def finished(self) -> str:
        """Pub/sub channel: a worker publishes the ids (space-separated) whose outcome it has
        just recorded, so status long-polls (``?wait=``) answer at once."""
        return f"{self.shared_tag}:finished"

    # -- versions: the last upload of a product wins, a delete sticks -----------------
    @property
    def version_seq(self) -> str:
        """The last version given, to an upload or a delete of any product (only grows)."""
        return f"{self.tag}:version"

    @property
    def versions(self) -> str:
        """Hash: product id -> its newest version (its last upload or delete); never expires."""
        return f"{self.tag}:versions"

    @property
    def deletes(self) -> str:
        """Hash: product id -> the version of its last delete (a tombstone); never expires."""
        return f"{self.tag}:deletes"

    # -- webhooks (api/webhooks.py): sorted sets of delivery ids (``<job id>.<ended ms>``) ----
    @property
    def deliveries(self) -> str:
        """Due deliveries, by due time in ms: ack.lua and reap.lua add one as they end a job that
        has a callback_url. ``deliveries_leased``: being sent, by lease end (one that runs out is
        due again); ``deliveries_dead``: dead-lettered, by time of death; ``delivery(id)``: a hash."""
        return f"{self.tag}:deliveries"

    deliveries_leased = property(lambda self: f"{self.tag}:deliveries_leased")
    deliveries_dead = property(lambda self: f"{self.tag}:deliveries_dead")

    def delivery(self, delivery_id: str) -> str:
        return f"{self.tag}:delivery:{delivery_id}"

    def job(self, job_id: str) -> str:
        return f"{self.tag}:job:{job_id}"

    def image(self, job_id: str) -> str:
        return f"{self.tag}:image:{job_id}"

    def processing(self, worker_id: str) -> str:
        return f"{self.tag}:processing:{worker_id}"

    def heartbeat(self, worker_id: str) -> str:
        """The worker's status (JSON, see ``batcher/status.py``) with a TTL: alive while it exists."""
        return f"{self.tag}:heartbeat:{worker_id}"

    # -- the query lane (search, product get/delete) --------------------------------
    @property
    def requests(self) -> str:
        """List of query requests (JSON) that workers answer ahead of bulk indexing."""
        return f"{self.shared_tag}:requests"

    def reply(self, request_id: str) -> str:
        return f"{self.shared_tag}:reply:{request_id}"

    def wake(self, worker_id: str) -> str:
        """Pushed to by a worker stopping itself, so its query lane stops waiting at once."""
        return f"{self.shared_tag}:wake:{worker_id}"
