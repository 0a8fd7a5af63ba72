"""Typed dependencies: the settings and the queue live on ``app.state``, made at start-up.

``async def``, all of them: FastAPI runs a plain ``def`` dependency in the thread pool, a hop
per dependency per request (three for an upload: about a fifth of its CPU).
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.queue import JobQueue
from api.waiter import JobWaiter
from api.security import api_key
from api.settings import ApiSettings


async def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


async def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue


async def get_waiter(request: Request) -> JobWaiter:
    return request.app.state.waiter


Settings = Annotated[ApiSettings, Depends(get_settings)]
Queue = Annotated[JobQueue, Depends(get_queue)]
Waiter = Annotated[JobWaiter, Depends(get_waiter)]
KEY_REQUIRED = [Depends(api_key)]
