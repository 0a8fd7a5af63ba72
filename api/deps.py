"""Typed dependencies: the settings and the queue live on ``app.state``, made at start-up.

``async def``, all of them: FastAPI runs a plain ``def`` dependency in the thread pool, a hop
per dependency per request (three for an upload: about a fifth of its CPU).
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.queue import JobQueue
from api.waiter import JobWaiter
from api.security import api_key, optional_key, sees_totals
from api.settings import ApiSettings
from api.tenants import Caller


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
CallerOf = Annotated[Caller, Depends(api_key)]  # the key's tenant (or an admin); 401 without a key
Reader = Annotated[Caller, Depends(optional_key)]  # the same, or the default tenant without a key


async def get_scope(request: Request, caller: CallerOf) -> Caller:
    """Whose queue-wide records (failed lists, failure groups) the caller reads: every tenant's
    where it sees the whole queue (``sees_totals``: as before tenants), else its tenant's."""
    return Caller(None, caller.admin) if sees_totals(request, caller) else caller


Scope = Annotated[Caller, Depends(get_scope)]
