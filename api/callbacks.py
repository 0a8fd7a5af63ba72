"""Where and how a tenant's webhooks go: the upload's ``callback_url`` (api/webhooks.py sends it).

A tenant's ``webhook_secret`` signs its deliveries and its ``webhook_url`` receives the end of
its uploads without ``callback_url``. The tenant ``default`` falls back to WEBHOOK_SECRET and
WEBHOOK_URL for the fields its record (if any) leaves out.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from api.errors import ApiError
from api.tenants import TenantBook
from batcher.queue.addresses import UrlRefused, parse_networks, parse_url, refusal
from batcher.queue.jobs import DEFAULT_TENANT


@dataclass(frozen=True)
class TenantHooks:
    secret: str  # "" for none: the tenant has no webhooks
    url: str  # its default callback, "" for none


NO_HOOKS = TenantHooks("", "")

def hooks_of(book: TenantBook, settings, tenant: str) -> TenantHooks | None:
    """The tenant's webhook secret and default URL, or None when it is not a tenant (any more)."""
    record = book.tenants.get(tenant)
    if tenant == DEFAULT_TENANT:
        secret = (record and record.webhook_secret) or settings.webhook_secret or ""
        return TenantHooks(secret, (record and record.webhook_url) or settings.webhook_url or "")
    if record is None:
        return None
    return TenantHooks(record.webhook_secret or "", record.webhook_url or "")


def check_callback_url(value: str | None, settings) -> str | None:
    """The ``image_url`` policy with WEBHOOK_ALLOWED_NETWORKS: an address literal is checked here
    (422), a host name when its addresses are resolved at send time (DNS rebinding)."""
    if not value:
        return None
    try:
        host = parse_url(value).host
    except UrlRefused as exc:
        raise ApiError(422, "invalid_field", f"callback_url: {exc}", "callback_url") from None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return value  # a name
    if why := refusal(address, parse_networks(settings.webhook_allowed_networks)):
        raise ApiError(422, "invalid_field", f"callback_url: the address is not allowed ({why}; see "
                       "WEBHOOK_ALLOWED_NETWORKS)", "callback_url")
    return value


def callback_for(value: str | None, hooks: TenantHooks, tenant: str, settings) -> str:
    """The URL the job's end goes to: ``callback_url``, else the tenant's webhook_url, else ``""``."""
    if value and not hooks.secret:
        where = "WEBHOOK_SECRET" if tenant == DEFAULT_TENANT else "webhook_secret in TENANTS_FILE"
        raise ApiError(422, "webhooks_off", f"callback_url needs webhooks on: the tenant {tenant!r} has no "
                       f"{where} to sign them with", "callback_url")
    return check_callback_url(value, settings) or hooks.url
