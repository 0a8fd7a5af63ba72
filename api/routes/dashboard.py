"""``GET /dashboard``: a static page over the public endpoints; no build step, no CDN.

The page keeps no secret: with ``API_KEY`` set it asks for the key and keeps it in the tab's
session storage. It loads nothing from elsewhere (thumbnails from ``image_url`` aside).
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static" / "dashboard"
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
          "img-src * data: blob:; frame-ancestors 'none'")

router = APIRouter(include_in_schema=False)


@router.get("/dashboard")
async def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": POLICY,
                                                        "Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/dashboard/assets", StaticFiles(directory=STATIC), name="dashboard-assets")
