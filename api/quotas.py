"""A tenant's queue quotas (issue 27): what the upload route passes to ``JobQueue.enqueue``, and
the 429 that names the tenant and the quota it reached."""
from __future__ import annotations

from typing import Any

from fastapi import Request

from api.errors import ApiError
from api.queue import TenantQuotaFull
from api.security import book_of
from batcher.queue.calls import Quota

RETRY_AFTER_S = "30"


def quota_of(record: Any) -> Quota:
    """The quota of a tenant's record (``api.tenants.Tenant``: ``max_queue_depth``,
    ``max_queue_bytes``, each optional); a missing or empty one is no quota."""
    return Quota(getattr(record, "max_queue_depth", None) or 0, getattr(record, "max_queue_bytes", None) or 0)


def tenant_quota(request: Request, tenant: str) -> Quota:
    """The quota of ``tenant`` in the tenants file now in force (none for a tenant without a record)."""
    return quota_of(book_of(request).tenants.get(tenant))


def tenant_quota_error(exc: TenantQuotaFull) -> ApiError:
    """429 ``tenant_queue_full`` / ``tenant_queue_bytes_full`` with ``Retry-After``; the body
    names the tenant and its quota (``quota``: ``max_queue_depth`` or ``max_queue_bytes``)."""
    name = "max_queue_depth" if exc.code == "tenant_queue_full" else "max_queue_bytes"
    held = "jobs queued" if exc.code == "tenant_queue_full" else "bytes of images held"
    message = (f"tenant {exc.tenant!r} has {exc.held} {held}, at its quota {name}={exc.limit} "
               f"(per shard); retry later")
    return ApiError(429, exc.code, message, headers={"Retry-After": RETRY_AFTER_S},
                    extra={"tenant": exc.tenant, "quota": {"name": name, "limit": exc.limit, "held": exc.held}})
