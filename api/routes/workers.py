"""``GET /api/v1/workers``: the live workers, as their heartbeats describe them."""
from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api import monitor
from api.deps import KEY_REQUIRED, Queue

router = APIRouter(prefix="/api/v1", tags=["operations"])


class WorkerInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    worker_id: str
    host: str | None = None
    device: str | None = Field(None, description="`cpu`, `cuda:0`, ...")
    model: str | None = Field(None, description="The open_clip model name.")
    precision: str | None = Field(None, description="What its model runs: `fp32`, `fp16`, `bf16` or `int8`.")
    batch_ceiling: int | None = Field(None, description="Largest batch now (lowered for a while after an OOM).")
    max_batch_size: int | None = None
    jobs_per_s: float | None = Field(None, description="Jobs completed per second over the last minute.")
    query_lane_alive: bool | None = Field(None, description="Whether its search/product thread runs.")
    heartbeat_age_s: float | None = Field(None, description="Seconds since its last heartbeat.")


class WorkersResponse(BaseModel):
    workers: list[WorkerInfo]


@router.get("/workers", response_model=WorkersResponse, dependencies=KEY_REQUIRED)
async def list_workers(queue: Queue) -> dict:
    """One entry per live worker (a worker whose heartbeat has expired is left out)."""
    return {"workers": await monitor.workers(queue)}
