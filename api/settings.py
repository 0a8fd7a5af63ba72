"""API settings, read once when the app is built."""
from __future__ import annotations

import re

from pydantic import Field, field_validator

from api.tenant_source import read_book
from api.tenants import TenantsError
from api.webhook_config import WebhookConfig
from batcher.queue.addresses import parse_networks, parse_url
from batcher.queue.config import QueueSettings

PLACEHOLDER = re.compile(r"change[-_ ]?me", re.I)  # what the shipped manifests hold instead of a key


class ApiSettings(QueueSettings):
    owned_prefixes = ("API_", "MAX_", "SEARCH_", "CORS_", "UPLOAD_", "ALLOW_", "TENANTS_", "ADMIN_", "WEBHOOK_")

    api_key: str | None = Field(
        None, description="Key(s) required in `X-API-Key` for writes and searches, comma-separated. "
                          "Unset: the API refuses to start unless ALLOW_ANONYMOUS=true.")
    tenants_file: str | None = Field(
        None, description="JSON file of tenants and their keys (api/README.md#tenants); reread when it changes "
                          "and on SIGHUP. API_KEY's keys are the tenant `default`'s.")
    admin_api_key: str | None = Field(
        None, description="Key(s) that see every tenant (the dashboard, operations), comma-separated.")
    allow_anonymous: bool = Field(
        False, description="Start without API_KEY on purpose: anyone who reaches the API may use it.")
    cors_origins: str | None = Field(None, description="Comma-separated origins allowed by CORS. Unset: CORS off.")
    max_queue_depth: int = Field(10_000, ge=1, description="Queued jobs beyond which uploads get 429 (with QUEUE_SHARDS=N, "
                                                                "each shard holds 1/N of it).")
    max_queue_bytes: int = Field(
        1024**3, ge=1, description="Image bytes the queue may hold (queued, processing, delayed and failed) "
                                   "beyond which uploads get 429; failed images are dropped first, oldest first. "
                                   "With QUEUE_SHARDS=N, each shard holds 1/N of it.")
    max_metadata_bytes: int = Field(16 * 1024, ge=2, description="Largest `metadata` JSON object.")
    max_photos_per_product: int = Field(
        10, ge=1, le=100, description="Photos one upload may carry (`image_file` and `image_url` fields together); "
                                      "more get 413. Each obeys MAX_UPLOAD_BYTES; a request body may hold this "
                                      "many times MAX_UPLOAD_BYTES.")
    upload_read_timeout: float = Field(
        60.0, gt=0, le=3600, description="Seconds a request body may take to arrive; a slower one gets 408.")
    max_pending_queries: int = Field(
        1000, ge=1, description="Searches and product reads waiting for a worker beyond which the API answers 503. "
        "A search holds a Redis connection while it waits: each API process keeps up to this many for them.")
    search_timeout: float = Field(5.0, gt=0, le=120, description="Seconds a search waits for a worker; then 504.")
    redis_timeout: float = Field(1.5, gt=0, le=30, description="Seconds per Redis call before the API answers 503.")
    redis_max_connections: int = Field(
        64, ge=1, description="Redis connections of each API process for its short calls (searches waiting for a "
                              "worker use others, up to MAX_PENDING_QUERIES); a call beyond them waits for a free one, "
                              "up to REDIS_TIMEOUT.")
    webhook_secret: str | None = Field(
        None, repr=False, description="The key of the HMAC-SHA256 signature (`X-Clipq-Signature`) of the tenant "
                                      "`default`'s webhooks (other tenants: `webhook_secret` in TENANTS_FILE); never "
                                      "logged. Unset: its uploads with `callback_url` get 422.")
    webhook_url: str | None = Field(
        None, description="Where the end of a job of the tenant `default` is delivered when its upload has no "
                          "`callback_url` (other tenants: `webhook_url` in TENANTS_FILE). Unset: only uploads "
                          "with `callback_url` are delivered. Needs WEBHOOK_SECRET.")
    webhook_allowed_networks: str | None = Field(
        None, description="Comma-separated CIDR networks a webhook may reach although private, loopback or "
                          "link-local (the `image_url` policy, with its own list).")
    webhook_max_attempts: int = Field(8, ge=1, le=100, description="Attempts of a delivery before it is "
                                                                   "dead-lettered.")
    webhook_backoff_s: float = Field(1.0, gt=0, le=3600, description="Seconds before the second attempt; "
                                                                     "doubled after each failed one.")
    webhook_backoff_max_s: float = Field(3600.0, gt=0, description="Longest wait between two attempts, in seconds.")
    webhook_concurrency: int = Field(8, ge=1, le=1000, description="Deliveries each API process sends at once.")
    webhook_timeout_s: float = Field(10.0, gt=0, le=300, description="Seconds one attempt may take, "
                                                                     "connection included.")

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _webhook_networks(cls, value: str | None) -> str | None:
        parse_networks(value)  # a ValueError naming the bad entry
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value:
            parse_url(value)  # UrlRefused (a ValueError) saying what is wrong
        return value

    @property
    def webhooks(self) -> WebhookConfig:
        return WebhookConfig(parse_networks(self.webhook_allowed_networks), self.webhook_max_attempts,
                             self.webhook_backoff_s, self.webhook_backoff_max_s, self.webhook_concurrency,
                             self.webhook_timeout_s)

    @property
    def api_keys(self) -> list[str]:
        return _keys(self.api_key)

    @property
    def admin_keys(self) -> list[str]:
        return _keys(self.admin_api_key)

    def refusal(self) -> str | None:
        """Why the API must not start with these settings (secure by default), or None."""
        for name, keys in (("API_KEY", self.api_keys), ("ADMIN_API_KEY", self.admin_keys)):
            if any(PLACEHOLDER.search(k) for k in keys):
                return f"{name} holds a placeholder (CHANGE-ME): set a real key"
        if not (self.api_keys or self.admin_keys or self.tenants_file) and not self.allow_anonymous:
            return ("API_KEY is not set: set it (or TENANTS_FILE), or set ALLOW_ANONYMOUS=true to let anyone "
                    "who reaches this API upload, search and delete")
        try:
            read_book(self.tenants_file, self.api_keys, self.admin_keys)
        except TenantsError as exc:
            return f"TENANTS_FILE: {exc}"
        if self.webhook_url and not self.webhook_secret:
            return "WEBHOOK_URL is set but WEBHOOK_SECRET is not: webhooks are always signed"
        return None

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in (self.cors_origins or "").split(",") if o.strip()]


def _keys(value: str | None) -> list[str]:
    return [k.strip() for k in (value or "").split(",") if k.strip()]


if __name__ == "__main__":  # the container's pre-flight (`python -m api.settings`): exit 1 with the reason
    raise SystemExit(ApiSettings.from_env().refusal())
