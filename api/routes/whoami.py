"""``GET /api/v1/whoami``: whose key this is (the dashboard shows it)."""
from __future__ import annotations

from fastapi import APIRouter

from api.deps import Reader

router = APIRouter(prefix="/api/v1", tags=["operations"])


@router.get("/whoami")
async def whoami(caller: Reader) -> dict:
    """The caller's tenant (``null``: an admin looking at every tenant) and whether it is an admin.
    Without a key: the default tenant, as every endpoint that needs no key sees it."""
    return {"tenant": caller.tenant, "admin": caller.admin}
