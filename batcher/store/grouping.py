"""One result per product: a product with several photos has a point per photo, and a search
returns it once, at its best photo's rank and score.

Neither Edge nor qdrant-client's batched query groups by a payload field, so both engines read
the best points (a few per product asked for), keep each product's first (best) point, and, while
too few distinct products came back and the store had more, read again from the top, twice as
deep. Not the next page by offset: the engines give no stable order among equal scores, and a
product's photos all score the same by keywords, so a product tied across two pages could be
read in neither. Reading from the top costs at most as much again as the last read.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

# (which query, how many of its best points) for each read wanted -> the points, best first
Run = Callable[[list[tuple[int, int]]], list[list[Any]]]
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
    read for all, then deeper reads, one query at a time, for those that need them."""
    sizes = [page_size(n) for n in limits]
    first = run([(i, size) for i, size in enumerate(sizes)])
    return [_fill(run, i, limit, size, points, keep) for i, (limit, size, points) in enumerate(zip(limits, sizes, first))]


def _fill(run: Run, i: int, limit: int, size: int, points: list[Any], keep: Keep | None) -> list[Any]:
    while True:
        best: dict[str, Any] = {}
        best_per_product(points, best, lambda payload: keep is None or keep(i, payload))
        if len(best) >= limit or len(points) < size:
            return list(best.values())[:limit]
        size *= 2
        (points,) = run([(i, size)])
