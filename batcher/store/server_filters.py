"""qdrant-client filters the server store uses: search conditions, and the version checks that make
the last upload of a product win and a delete stick (see ``batcher.stages.versions``)."""
from __future__ import annotations

from typing import Any

from qdrant_client import models

from batcher.queue.jobs import Job
from batcher.store.points import point_id, set_members as members


def conditions(filters: dict[str, Any]) -> models.Filter | None:
    """Exact matches on ``product_id`` and ``metadata`` keys, evaluated by Qdrant itself."""
    must = []
    for key, value in filters.items():
        field = key if key == "product_id" else f"metadata.{key}"
        must.append(models.FieldCondition(key=field, match=models.MatchValue(value=value)))
    return models.Filter(must=must) if must else None


def unversioned() -> models.Condition:
    return models.IsEmptyCondition(is_empty=models.PayloadField(key="version"))


def replaceable(jobs: list[Job]) -> models.Filter:
    """Matches a stored point that one of ``jobs`` may replace: one of the job's product of
    no newer version than the job, or a point stored before versions existed."""
    return models.Filter(should=[
        *(models.Filter(must=[models.HasIdCondition(has_id=[point_id(j.product_id, j.photo_index)]),
                              models.FieldCondition(key="version", range=models.Range(lte=j.version))])
          for j in jobs),
        unversioned()])


def _product(product_id: str) -> models.FieldCondition:
    return models.FieldCondition(key="product_id", match=models.MatchValue(value=product_id))


def _version(**bound: int) -> models.FieldCondition:
    return models.FieldCondition(key="version", range=models.Range(**bound))


def older(product_id: str, version: int) -> models.Filter:
    """The product's points older than ``version`` (or unversioned)."""
    return models.Filter(must=[_product(product_id)], should=[_version(lt=version), unversioned()])


def newer(product_id: str, version: int) -> models.Filter:
    """The product's points newer than ``version``: a job of ``version`` is stale."""
    return models.Filter(must=[_product(product_id), _version(gt=version)])


def own(product_id: str, version: int) -> models.Filter:
    """The product's points a job of ``version`` wrote."""
    return models.Filter(must=[_product(product_id), _version(gte=version, lte=version)])


def dropped(product_id: str, count: int, version: int) -> models.Filter:
    """The product's photos past the first ``count`` that are older than ``version``: those an
    upload of ``count`` photos at ``version`` no longer has."""
    return models.Filter(must=[_product(product_id),
                               models.FieldCondition(key="photo_index", range=models.Range(gte=count))],
                         should=[_version(lt=version), unversioned()])


def set_members(jobs: list[Job]) -> models.Filter:
    """The stored points a photo set's write reads (``points.set_members``)."""
    products, photo0 = members(jobs)
    return models.Filter(must=[models.FieldCondition(key="product_id", match=models.MatchAny(any=products))],
                         should=[models.FieldCondition(key="photo_index", range=models.Range(gte=1)),
                                 *([models.HasIdCondition(has_id=photo0)] if photo0 else [])])


def of_products(product_ids: list[str]) -> models.Filter:
    """Every photo of these products."""
    return models.Filter(must=[models.FieldCondition(key="product_id", match=models.MatchAny(any=product_ids))])


def same_images(shas: list[str], embedder: str) -> models.Filter:
    """Points holding one of these images (by sha256) whose vector ``embedder`` made."""
    return models.Filter(must=[models.FieldCondition(key="image_sha256", match=models.MatchAny(any=shas)),
                               models.FieldCondition(key="embedder", match=models.MatchValue(value=embedder))])
