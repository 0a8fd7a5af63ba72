"""Qdrant Edge filters the embedded store uses: search conditions, and the version checks that
make the last upload of a product win and a delete stick (see ``batcher.stages.versions``).
The same rules as ``server_filters``, in Edge's types."""
from __future__ import annotations

from typing import Any

from qdrant_edge import (FieldCondition, Filter, HasIdCondition, HasVectorCondition, IsEmptyCondition, MatchAny,
                         MatchValue, RangeFloat)

from batcher.queue.jobs import DEFAULT_TENANT, Job
from batcher.store.keywords import KEYWORDS
from batcher.store.points import TENANT, point_id, set_members as members


def tenant_is(tenant: str) -> Filter:
    """The tenant's points; the default tenant's include those stored before tenants (no ``tenant``)."""
    if tenant == DEFAULT_TENANT:
        return Filter(should=[FieldCondition(key=TENANT, match=MatchValue(tenant)), IsEmptyCondition(TENANT)])
    return Filter(must=[FieldCondition(key=TENANT, match=MatchValue(tenant))])


def conditions(filters: dict[str, Any], exclude: str = "", tenant: str = DEFAULT_TENANT
               ) -> tuple[Filter | None, dict[str, bool]]:
    """Exact matches on ``product_id`` and ``metadata`` keys, and apart, the ``true``/``false``
    ones: Edge 0.9's Python binding turns a bool into an integer match (Python's bool is an
    int), which no stored ``true`` matches, so the store checks those itself (``has_flags``).
    ``exclude``: a product left out (a "more like this" search leaves out its own). Always within
    ``tenant`` (a ``tenant`` key of ``filters`` is a metadata key, as any other)."""
    must = [tenant_is(tenant), *(FieldCondition(key=key if key == "product_id" else f"metadata.{key}",
                                                match=MatchValue(value))
                                 for key, value in filters.items() if not isinstance(value, bool))]
    must_not = [FieldCondition(key="product_id", match=MatchValue(exclude))] if exclude else []
    flags = {key: value for key, value in filters.items() if isinstance(value, bool)}
    return Filter(must=must, must_not=must_not or None), flags


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
        *(Filter(must=[HasIdCondition({point_id(j.product_id, j.photo_index, j.tenant)}),
                       FieldCondition(key="version", range=RangeFloat(lte=j.version))]) for j in jobs),
        IsEmptyCondition("version")])


def _product(product_id: str) -> FieldCondition:
    return FieldCondition(key="product_id", match=MatchValue(product_id))


def older(product_id: str, version: int, tenant: str = DEFAULT_TENANT) -> Filter:
    """The tenant's product's points (every photo) older than ``version`` (or unversioned)."""
    return Filter(must=[_product(product_id), tenant_is(tenant)],
                  should=[FieldCondition(key="version", range=RangeFloat(lt=version)), IsEmptyCondition("version")])


def set_members(jobs: list[Job]) -> Filter:
    """The stored points a photo set's write reads (``points.set_members``), each tenant's own."""
    return Filter(should=[Filter(must=[FieldCondition(key="product_id", match=MatchAny(products)), tenant_is(t)],
                                 should=[FieldCondition(key="photo_index", range=RangeFloat(gte=1)),
                                         *([HasIdCondition(set(photo0))] if photo0 else [])])
                          for t, (products, photo0) in members(jobs).items()])


def same_images(shas: list[str], embedder: str, tenant: str = DEFAULT_TENANT) -> Filter:
    """The tenant's points holding one of these images (by sha256) whose vector ``embedder`` made."""
    return Filter(must=[FieldCondition(key="image_sha256", match=MatchAny(shas)),
                        FieldCondition(key="embedder", match=MatchValue(embedder)), tenant_is(tenant)])


def of_product(product_id: str, tenant: str = DEFAULT_TENANT) -> Filter:
    """Every photo of the tenant's product."""
    return Filter(must=[_product(product_id), tenant_is(tenant)])


def with_keywords() -> Filter:
    return Filter(must=[HasVectorCondition(KEYWORDS)])


def without_keywords() -> Filter:
    """Points stored before keyword search: no keywords vector yet."""
    return Filter(must_not=[HasVectorCondition(KEYWORDS)])


def with_near_duplicates(tenant: str = DEFAULT_TENANT) -> Filter:
    """The tenant's points that listed near duplicates when they were stored."""
    return Filter(must=[FieldCondition(key="near_duplicate_count", range=RangeFloat(gte=1)), tenant_is(tenant)])
