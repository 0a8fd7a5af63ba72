"""A point's keywords: BM25 over the product's words, as a named sparse vector beside the CLIP one.

The text of a point is its name, its description and its metadata's values (strings and numbers,
nested objects and lists flattened; keys and booleans are not words a shopper types). Qdrant
Edge's ``Bm25`` turns it into term-frequency weights locally, with no model to download; both
engines store the same vectors and apply IDF themselves (the sparse vector's ``Idf`` modifier),
so a word rare in the catalog (a SKU, a brand) weighs more than a common one. A query is embedded
with ``embed_query``: each distinct word once.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from qdrant_edge import Bm25, Bm25Config, SparseVector

KEYWORDS = "keywords"  # the sparse vector's name, in both engines
DENSE = [""]  # the CLIP vector alone, for reads that want vectors: keywords are rebuilt from payloads
TEXT_FIELDS = ("name", "description")
# BM25's expected words per document: a product's name, description and metadata run to a few
# dozen, not the 256 of Bm25's default (made for passages), so length normalisation has effect.
# Stored vectors carry it: a change needs every point's keywords made again.
AVG_WORDS = 32


def words(payload: dict[str, Any] | None) -> str:
    """The text BM25 indexes for a point: name, description, then every metadata value."""
    p = payload or {}
    parts = [str(p[f]) for f in TEXT_FIELDS if isinstance(p.get(f), str) and p[f]]
    parts += list(_values(p.get("metadata")))
    return " ".join(parts)


def _values(value: Any):
    if isinstance(value, dict):
        for v in value.values():
            yield from _values(v)
    elif isinstance(value, list):
        for v in value:
            yield from _values(v)
    elif isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        yield str(value)


@lru_cache(maxsize=1)
def _bm25() -> Bm25:
    return Bm25(Bm25Config(avg_len=AVG_WORDS))


def document_vector(payload: dict[str, Any] | None) -> SparseVector:
    """The point's keywords vector (empty when it has no words)."""
    return _bm25().embed_document(words(payload))


def query_vector(text: str) -> SparseVector:
    return _bm25().embed_query(text)


def backfill(page: Callable[[Any], tuple[int, Any]]) -> int:
    """Run ``page`` (keywords for one page of points stored without them, from an offset: how
    many, and the next offset) to the end; the points that got keywords."""
    offset, done = None, 0
    while True:
        n, offset = page(offset)
        done += n
        if offset is None:
            return done
