"""The server store's reads for search (``asks``) in qdrant-client's types: one batched query
for many searches of any kind, a product's photos for "more like this", the keywords' sparse
vector and its creation on an older collection. ``ServerStore`` calls these holding its lock."""
from __future__ import annotations

from typing import Any

from qdrant_client import QdrantClient, models

from batcher.queue.messages import SearchResult
from batcher.store.asks import MAX_PHOTOS, RRF_K, Ask
from batcher.store.base import StoreError
from batcher.store.grouping import per_product
from batcher.store.keywords import DENSE, KEYWORDS, document_vector, query_vector
from batcher.store.points import search_result
from batcher.store.server_filters import conditions, of_product, tenant_is, without_keywords

KEYWORDS_CONFIG = {KEYWORDS: models.SparseVectorParams(modifier=models.Modifier.IDF)}


def find_asks(client: QdrantClient, collection: str, asks: list[Ask], params: models.SearchParams
              ) -> list[list[SearchResult]]:
    """One batched query, then more pages for the queries that need them to reach ``limit``
    distinct products (``grouping``)."""
    flts = [conditions(a.filter, a.exclude, a.tenant) for a in asks]

    def run(pages: list[tuple[int, int, int]]) -> list[list]:
        requests = [request(asks[i], flts[i], n, offset, params) for i, n, offset in pages]
        return [r.points for r in client.query_batch_points(collection, requests=requests)]

    found = per_product(run, [a.limit for a in asks])
    return [[search_result(p.score, p.payload) for p in points] for points in found]


def request(ask: Ask, flt: models.Filter | None, limit: int, offset: int, params: models.SearchParams
            ) -> models.QueryRequest:
    common = {"limit": limit, "offset": offset, "filter": flt, "with_payload": True, "params": params}
    if ask.like:
        return models.QueryRequest(query=models.RecommendQuery(recommend=models.RecommendInput(
            positive=list(ask.like), strategy=models.RecommendStrategy.BEST_SCORE)), **common)
    if ask.hybrid:  # each list as deep as the fused page: its ranks are the same at every page
        return models.QueryRequest(prefetch=[
            models.Prefetch(query=ask.vector, limit=offset + limit, params=params),
            models.Prefetch(query=sparse(query_vector(ask.words)), using=KEYWORDS, limit=offset + limit)],
            query=models.RrfQuery(rrf=models.Rrf(k=RRF_K)), **common)
    if ask.words:
        return models.QueryRequest(query=sparse(query_vector(ask.words)), using=KEYWORDS, **common)
    return models.QueryRequest(query=ask.vector, **common)


def product_photos(client: QdrantClient, collection: str, product_id: str, tenant: str) -> list[list[float]]:
    points, _ = client.scroll(collection, models.Filter(must=[of_product(product_id), tenant_is(tenant)]),
                              limit=MAX_PHOTOS, with_payload=False, with_vectors=DENSE)
    return [list(p.vector) for p in points if p.vector is not None]


def add_keywords_page(client: QdrantClient, collection: str, offset: Any, batch: int) -> tuple[int, Any]:
    """Keywords for one page of the points stored without them: (how many, the next page)."""
    points, offset = client.scroll(collection, without_keywords(), limit=batch, offset=offset, with_payload=True,
                                   with_vectors=False)
    if points:
        client.update_vectors(collection, wait=True, points=[
            models.PointVectors(id=p.id, vector={KEYWORDS: keywords_of(p.payload)}) for p in points])
    return len(points), offset


def add_keywords_vector(client: QdrantClient, collection: str) -> None:
    """Give a collection made before keyword search its sparse vector (Qdrant's create-vector
    API); the points already there get theirs from ``clipq-store backfill-keywords``."""
    try:
        client.create_vector_name(collection, KEYWORDS, models.SparseVectorNameConfig(
            sparse=models.SparseVectorConfig(modifier=models.Modifier.IDF)))
    except Exception as exc:
        if KEYWORDS not in (client.get_collection(collection).config.params.sparse_vectors or {}):
            raise StoreError(f"cannot add the keywords sparse vector to collection {collection} ({exc}): "
                             "this Qdrant server may be too old to add a vector to a collection") from None


def keywords_of(payload: dict[str, Any] | None) -> models.SparseVector:
    """The point's keywords (``document_vector``, the embedded store's very vectors)."""
    return sparse(document_vector(payload))


def sparse(v) -> models.SparseVector:
    return models.SparseVector(indices=v.indices, values=v.values)
