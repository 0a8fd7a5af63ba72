"""The pairs of near-duplicate photos, a page at a time (``GET /api/v1/duplicates``, answered
by a worker over the query lane).

A pair lives in the payload of its later photo: the ``near_duplicates`` found when it was
stored (``finder``), flagged by ``near_duplicate_count`` (indexed), so a page is one indexed
scroll in point id order, and the cursor is the next point's id. A pair is listed only while
it still holds: its photo is stored (a deleted product's point is gone; a product uploaded
again gets a fresh lookup), and the other photo too, with the hash it had then (one read by
point id for the page). So a deleted or re-uploaded product drops out of the pairs at once.
"""
from __future__ import annotations

from typing import Any

from batcher.queue.jobs import DEFAULT_TENANT
from batcher.store import VectorStore
from batcher.store.points import point_id


def _pairs(payload: dict[str, Any], current: dict[str, str], tenant: str) -> list[dict[str, Any]]:
    photo = {"product_id": payload.get("product_id"), "photo_index": int(payload.get("photo_index") or 0)}
    pairs = []
    for n in payload.get("near_duplicates") or []:
        other = {"product_id": n["product_id"], "photo_index": int(n.get("photo_index") or 0)}
        if current.get(point_id(other["product_id"], other["photo_index"], tenant)) == n.get("phash"):
            pairs.append({**photo, "duplicate_of": other, "distance": int(n["distance"])})
    return pairs


def page(store: VectorStore, cursor: str | None, limit: int, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
    """Up to ``limit`` of ``tenant``'s photos that listed near duplicates, from ``cursor`` on:
    their pairs that still hold, and the cursor of the next page (None: this was the last). A
    tenant's photos are only ever paired with its own (``finder``)."""
    points, after = store.flagged(cursor, limit, tenant)
    others = {point_id(n["product_id"], int(n.get("photo_index") or 0), tenant)
              for _, payload in points for n in payload.get("near_duplicates") or []}
    current = store.hashes(sorted(others)) if others else {}
    pairs = [pair for _, payload in points for pair in _pairs(payload, current, tenant)]
    return {"pairs": pairs, "next_cursor": after}
