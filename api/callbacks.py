"""The upload's ``callback_url``: where the job's end is delivered (api/webhooks.py)."""
from __future__ import annotations

import ipaddress

from api.errors import ApiError
from batcher.queue.addresses import UrlRefused, parse_networks, parse_url, refusal


def check_callback_url(value: str | None, settings) -> str:
    """The URL the job's end goes to: ``callback_url``, else WEBHOOK_URL, else ``""`` (none).
    The ``image_url`` policy with WEBHOOK_ALLOWED_NETWORKS: an address literal is checked here
    (422), a host name when its addresses are resolved at send time (DNS rebinding)."""
    if not value:
        return settings.webhook_url or ""
    if not settings.webhook_secret:
        raise ApiError(422, "webhooks_off", "callback_url needs webhooks on: the server has no WEBHOOK_SECRET "
                       "to sign them with", "callback_url")
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
