"""The webhooks' settings group (WEBHOOK_*), built by ``ApiSettings.webhooks``, and the pure
parts of a delivery: its signature (Stripe's scheme) and its retry schedule. No I/O."""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from batcher.queue.addresses import Network

SIGNATURE_HEADER = "X-Clipq-Signature"
DELIVERY_HEADER = "X-Clipq-Delivery"
TOLERANCE_S = 300  # how old a signature's t a receiver should accept (the README's snippet)


@dataclass(frozen=True)
class WebhookConfig:
    """How deliveries are sent; whose secret signs them and where they go: ``api.callbacks``
    (per tenant; WEBHOOK_SECRET and WEBHOOK_URL are the tenant ``default``'s)."""

    allowed: tuple[Network, ...]  # WEBHOOK_ALLOWED_NETWORKS
    max_attempts: int
    backoff_s: float
    backoff_max_s: float
    concurrency: int
    timeout_s: float

    def delay_s(self, attempts: int) -> float:
        """The wait after the ``attempts``-th failed attempt: WEBHOOK_BACKOFF_S doubling, capped."""
        return min(self.backoff_s * 2 ** (attempts - 1), self.backoff_max_s)


def sign(secret: str, body: bytes, t: int) -> str:
    """The ``X-Clipq-Signature`` value: ``t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``."""
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secret: str, body: bytes, header: str, now: float, tolerance_s: float = TOLERANCE_S) -> bool:
    """Whether ``header`` signs ``body`` with ``secret``, at most ``tolerance_s`` from ``now``."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs(now - t) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, t), f"t={t},v1={parts.get('v1', '')}")


RETRYABLE = frozenset({408, 429})


def retryable(status: int) -> bool:
    """Whether an answer deserves another attempt: 408, 429 and 5xx; any other non-2xx is final."""
    return status in RETRYABLE or status >= 500
