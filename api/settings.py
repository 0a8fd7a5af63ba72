"""API settings, read once when the app is built."""
from __future__ import annotations

from pydantic import Field

from batcher.queue.config import QueueSettings


class ApiSettings(QueueSettings):
    owned_prefixes = ("API_", "MAX_", "SEARCH_", "CORS_")

    api_key: str | None = Field(
        None, description="Key(s) required in `X-API-Key` for writes and searches, comma-separated. Unset: open.")
    cors_origins: str | None = Field(None, description="Comma-separated origins allowed by CORS. Unset: CORS off.")
    max_queue_depth: int = Field(10_000, ge=1, description="Queued jobs beyond which uploads get 429.")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1, description="Largest image upload; larger gets 413.")
    max_metadata_bytes: int = Field(16 * 1024, ge=2, description="Largest `metadata` JSON object.")
    search_timeout: float = Field(5.0, gt=0, le=120, description="Seconds a search waits for a worker; then 504.")
    redis_timeout: float = Field(1.5, gt=0, le=30, description="Seconds per Redis call before the API answers 503.")

    @property
    def api_keys(self) -> list[str]:
        return [k.strip() for k in (self.api_key or "").split(",") if k.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in (self.cors_origins or "").split(",") if o.strip()]
