"""qdrant-client filters the server store uses: search conditions, and the version checks that make
the last upload of a product win and a delete stick (see ``batcher.stages.versions``)."""
from __future__ import annotations

from typing import Any

from qdrant_client import models

from batcher.duplicates.photo import Probe
from batcher.queue.jobs import DEFAULT_TENANT, Job
from batcher.store.hash_vector import PHASH
from batcher.store.keywords import KEYWORDS
from batcher.store.points import TENANT, point_id, set_members as members


def tenant_is(tenant: str) -> models.Filter:
    """The tenant's points; the default tenant's include those stored before tenants (no ``tenant``)."""
    match = models.FieldCondition(key=TENANT, match=models.MatchValue(value=tenant))
    if tenant == DEFAULT_TENANT:
        return models.Filter(should=[match, models.IsEmptyCondition(is_empty=models.PayloadField(key=TENANT))])
    return models.Filter(must=[match])


def conditions(filters: dict[str, Any], exclude: str = "", tenant: str = DEFAULT_TENANT) -> models.Filter:
    """Exact matches on ``product_id`` and ``metadata`` keys, evaluated by Qdrant itself;
    ``exclude``: a product left out (a "more like this" search leaves out its own). Always within
    ``tenant`` (a ``tenant`` key of ``filters`` is a metadata key, as any other)."""
    must: list = [tenant_is(tenant)]
    for key, value in filters.items():
        field = key if key == "product_id" else f"metadata.{key}"
        must.append(models.FieldCondition(key=field, match=models.MatchValue(value=value)))
    must_not = [of_product(exclude)] if exclude else []
    return models.Filter(must=must, must_not=must_not or None)


def of_product(product_id: str) -> models.FieldCondition:
    return models.FieldCondition(key="product_id", match=models.MatchValue(value=product_id))


def without_keywords() -> models.Filter:
    """Points stored before keyword search: no keywords vector yet."""
    return models.Filter(must_not=[models.HasVectorCondition(has_vector=KEYWORDS)])


def unversioned() -> models.Condition:
    return models.IsEmptyCondition(is_empty=models.PayloadField(key="version"))


def replaceable(jobs: list[Job]) -> models.Filter:
    """Matches a stored point that one of ``jobs`` may replace: one of the job's product of
    no newer version than the job, or a point stored before versions existed."""
    return models.Filter(should=[
        *(models.Filter(must=[models.HasIdCondition(has_id=[point_id(j.product_id, j.photo_index, j.tenant)]),
                              models.FieldCondition(key="version", range=models.Range(lte=j.version))])
          for j in jobs),
        unversioned()])


def _product(product_id: str, tenant: str) -> models.Filter:
    """Every photo of the tenant's product."""
    return models.Filter(must=[of_product(product_id), tenant_is(tenant)])


def _version(**bound: int) -> models.FieldCondition:
    return models.FieldCondition(key="version", range=models.Range(**bound))


def older(product_id: str, version: int, tenant: str = DEFAULT_TENANT) -> models.Filter:
    """The tenant's product's points (every photo) older than ``version`` (or unversioned)."""
    return models.Filter(must=[_product(product_id, tenant)], should=[_version(lt=version), unversioned()])


def newer(product_id: str, version: int, tenant: str) -> models.Filter:
    """The tenant's product's points newer than ``version``: a job of ``version`` is stale."""
    return models.Filter(must=[_product(product_id, tenant), _version(gt=version)])


def own(product_id: str, version: int, tenant: str) -> models.Filter:
    """The tenant's product's points a job of ``version`` wrote."""
    return models.Filter(must=[_product(product_id, tenant), _version(gte=version, lte=version)])


def dropped(product_id: str, count: int, version: int, tenant: str) -> models.Filter:
    """The tenant's product's photos past the first ``count`` that are older than ``version``:
    those an upload of ``count`` photos at ``version`` no longer has."""
    return models.Filter(must=[_product(product_id, tenant),
                               models.FieldCondition(key="photo_index", range=models.Range(gte=count))],
                         should=[_version(lt=version), unversioned()])


def set_members(jobs: list[Job]) -> models.Filter:
    """The stored points a photo set's write reads (``points.set_members``), each tenant's own."""
    return models.Filter(should=[
        models.Filter(must=[models.FieldCondition(key="product_id", match=models.MatchAny(any=products)),
                            tenant_is(t)],
                      should=[models.FieldCondition(key="photo_index", range=models.Range(gte=1)),
                              *([models.HasIdCondition(has_id=photo0)] if photo0 else [])])
        for t, (products, photo0) in members(jobs).items()])


def same_images(shas: list[str], embedder: str, tenant: str = DEFAULT_TENANT) -> models.Filter:
    """The tenant's points holding one of these images (by sha256) whose vector ``embedder`` made."""
    return models.Filter(must=[models.FieldCondition(key="image_sha256", match=models.MatchAny(any=shas)),
                               models.FieldCondition(key="embedder", match=models.MatchValue(value=embedder)),
                               tenant_is(tenant)])


def hash_neighbours(probe: Probe) -> models.Filter:
    """What a probe's hash-vector query may return: its tenant's points, except those of the
    products it excludes (batcher.store.hash_vector)."""
    return models.Filter(
        must=[tenant_is(probe.tenant)],
        must_not=[models.FieldCondition(key="product_id", match=models.MatchAny(any=probe.exclude))]
        if probe.exclude else None)


def hashes_without_vector() -> models.Filter:
    """Points stored with a ``phash`` before the hash vector existed: no ``phash`` vector yet."""
    return models.Filter(must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=PHASH)),
                                   models.HasVectorCondition(has_vector=PHASH)])


def with_near_duplicates(tenant: str = DEFAULT_TENANT) -> models.Filter:
    """The tenant's points that listed near duplicates when they were stored."""
    return models.Filter(must=[models.FieldCondition(key="near_duplicate_count", range=models.Range(gte=1)),
                               tenant_is(tenant)])
