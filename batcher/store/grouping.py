"""One result per product: a product with several photos has a point per photo, and a search
returns it once, at its best photo's rank and score.

Neither Edge nor qdrant-client's batched query groups by a payload field, so both engines read
a page of points (a few per product asked for), keep each product's first (best) point, and read
the next page only while too few distinct products came back and the last page was full.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

# (which query, how many points, from which rank) for each page wanted -> the points, best first
Run = Callable[[list[tuple[int, int, int]]], list[list[Any]]]
Keep = Callable[[int, dict[str, Any] | None], bool]
PHOTOS_PER_PRODUCT = 4  # points read per product asked for: most products have a few photos


def page_size(limit: int) -> int:
    return max(PHOTOS_PER_PRODUCT * limit, 32)


def best_per_product(points: list[Any], best: dict[str, Any], keep: Callable[[dict | None], bool]) -> None:
    """Add to ``best`` the first point of each product not in it yet (``points`` best first)."""
    for p in points:
        product = (p.payload or {}).get("product_id")
        if product is not None and product not in best and keep(p.payload):
            best[product] = p


def per_product(run: Run, limits: list[int], keep: Keep | None = None) -> list[list[Any]]:
    """Each query's best point of up to ``limit`` distinct products, best first: one batched
    page for all, then more pages, one query at a time, for those that need them."""
    sizes = [page_size(n) for n in limits]
    first = run([(i, size, 0) for i, size in enumerate(sizes)])
    return [_fill(run, i, limit, size, points, keep) for i, (limit, size, points) in enumerate(zip(limits, sizes, first))]


def _fill(run: Run, i: int, limit: int, size: int, points: list[Any], keep: Keep | None) -> list[Any]:
    best: dict[str, Any] = {}
    read = 0
    while True:
        best_per_product(points, best, lambda payload: keep is None or keep(i, payload))
        read += len(points)
        if len(best) >= limit or len(points) < size:
            return list(best.values())[:limit]
        (points,) = run([(i, size, read)])
