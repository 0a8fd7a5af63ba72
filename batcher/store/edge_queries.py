"""The embedded store's reads for search (``asks``) in Edge's types: one batched query for many
searches of any kind, a product's photos for "more like this", the points with keywords.
``EdgeStore`` calls these holding its lock."""
from __future__ import annotations

from typing import Any

from qdrant_edge import (EdgeShard, Fusion, Point, PointVectors, Prefetch, Query, QueryBatchRequest, QueryRequest,
                         RecommendQuery, ScrollRequest, SearchParams, UpdateOperation)

from batcher.queue.messages import SearchResult
from batcher.store.asks import MAX_PHOTOS, RRF_K, Ask
from batcher.store.edge_filters import conditions, has_flags, of_product, without_keywords
from batcher.store.grouping import per_product
from batcher.store.keywords import DENSE, KEYWORDS, document_vector, query_vector
from batcher.store.points import search_result


def find_asks(shard: EdgeShard, asks: list[Ask], params: SearchParams) -> list[list[SearchResult]]:
    """One planned batch, then more pages for the queries that need them: ``limit`` distinct
    products (``grouping``), and points holding a query's true/false filters, which the store
    checks itself (see ``edge_filters.conditions``)."""
    planned = [(a, *conditions(a.filter, a.exclude, a.tenant)) for a in asks]

    def run(pages: list[tuple[int, int, int]]) -> list[list]:
        return shard.query_batch(QueryBatchRequest([request(planned[i][0], planned[i][1], n, params)
                                                    for i, n in pages]))

    found = per_product(run, [a.limit for a in asks], lambda i, payload: has_flags(payload, planned[i][2]))
    return [[search_result(p.score, p.payload) for p in points] for points in found]


def request(ask: Ask, flt, limit: int, params: SearchParams) -> QueryRequest:
    prefetches, query = None, None
    if ask.like:
        query = Query.RecommendBestScore(RecommendQuery(list(ask.like), []))
    elif ask.hybrid:  # each list as deep as the fused read
        prefetches = [Prefetch(limit, Query.Nearest(ask.vector), params=params),
                      Prefetch(limit, Query.Nearest(query_vector(ask.words), using=KEYWORDS))]
        query = Fusion.Rrf(k=RRF_K)
    elif ask.words:
        query = Query.Nearest(query_vector(ask.words), using=KEYWORDS)
    else:
        query = Query.Nearest(ask.vector)
    return QueryRequest(limit=limit, query=query, prefetches=prefetches, filter=flt,
                        with_payload=True, params=params)


def product_photos(shard: EdgeShard, product_id: str, tenant: str) -> list[list[float]]:
    points, _ = shard.scroll(ScrollRequest(limit=MAX_PHOTOS, filter=of_product(product_id, tenant),
                                           with_payload=False, with_vector=DENSE))
    return [list(p.vector) for p in points if p.vector is not None]


def add_keywords_page(shard: EdgeShard, offset: Any, batch: int) -> tuple[int, Any]:
    """Keywords for one page of the points stored without them: (how many, the next page)."""
    points, offset = shard.scroll(ScrollRequest(offset=offset, limit=batch, with_payload=True, with_vector=False,
                                                filter=without_keywords()))
    if points:
        shard.update(UpdateOperation.update_vectors([PointVectors(p.id, {KEYWORDS: document_vector(p.payload)})
                                                     for p in points]))
    return len(points), offset


def with_keywords_point(pid: Any, vector: list[float], payload: dict[str, Any]) -> Point:
    """A point with its CLIP vector and its keywords, made from its payload."""
    return Point(pid, {"": vector, KEYWORDS: document_vector(payload)}, payload)
