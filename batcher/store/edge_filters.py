"""Qdrant Edge filters the embedded store uses: search conditions, and the version checks that
make the last upload of a product win and a delete stick (see ``batcher.stages.versions``).
The same rules as ``server_filters``, in Edge's types."""
from __future__ import annotations

from typing import Any

from qdrant_edge import FieldCondition, Filter, HasIdCondition, IsEmptyCondition, MatchAny, MatchValue, RangeFloat

from batcher.queue.jobs import Job
from batcher.store.points import point_id, set_members as members


def conditions(filters: dict[str, Any]) -> tuple[Filter | None, dict[str, bool]]:
    """Exact matches on ``product_id`` and ``metadata`` keys, and apart, the ``true``/``false``
    ones: Edge 0.9's Python binding turns a bool into an integer match (Python's bool is an
    int), which no stored ``true`` matches, so the store checks those itself (``has_flags``)."""
    must = [FieldCondition(key=key if key == "product_id" else f"metadata.{key}", match=MatchValue(value))
            for key, value in filters.items() if not isinstance(value, bool)]
    flags = {key: value for key, value in filters.items() if isinstance(value, bool)}
    return (Filter(must=must) if must else None), flags


def has_flags(payload: dict[str, Any] | None, flags: dict[str, bool]) -> bool:
    """Whether the point's metadata holds each of ``flags`` (dotted keys reach into objects)."""
    for key, wanted in flags.items():
        value: Any = (payload or {}).get("metadata") or {}
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not wanted:
            return False
    return True


def replaceable(jobs: list[Job]) -> Filter:
    """Matches a stored point that one of ``jobs`` may replace: its product's, of no newer version
    than the job, or a point stored before versions existed. A point not stored yet is inserted
    whatever the condition says."""
    return Filter(should=[
        *(Filter(must=[HasIdCondition({point_id(j.product_id, j.photo_index)}),
                       FieldCondition(key="version", range=RangeFloat(lte=j.version))]) for j in jobs),
        IsEmptyCondition("version")])


def _product(product_id: str) -> FieldCondition:
    return FieldCondition(key="product_id", match=MatchValue(product_id))


def older(product_id: str, version: int) -> Filter:
    """The product's points older than ``version`` (or unversioned)."""
    return Filter(must=[_product(product_id)],
                  should=[FieldCondition(key="version", range=RangeFloat(lt=version)), IsEmptyCondition("version")])


def of_products(product_ids: list[str]) -> Filter:
    """Every photo of these products."""
    return Filter(must=[FieldCondition(key="product_id", match=MatchAny(product_ids))])


def set_members(jobs: list[Job]) -> Filter:
    """The stored points a photo set's write reads (``points.set_members``)."""
    products, photo0 = members(jobs)
    return Filter(must=[FieldCondition(key="product_id", match=MatchAny(products))],
                  should=[FieldCondition(key="photo_index", range=RangeFloat(gte=1)),
                          *([HasIdCondition(set(photo0))] if photo0 else [])])


def same_images(shas: list[str], embedder: str) -> Filter:
    """Points holding one of these images (by sha256) whose vector ``embedder`` made."""
    return Filter(must=[FieldCondition(key="image_sha256", match=MatchAny(shas)),
                        FieldCondition(key="embedder", match=MatchValue(embedder))])


def page_size(limit: int, flags: dict[str, bool]) -> int:
    """Points a query reads at a time: more than its limit when the store checks flags itself."""
    return max(4 * limit, 64) if flags else limit
