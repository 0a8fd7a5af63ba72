"""The embedded store's reads for near-duplicate photos (``batcher.duplicates``): the lookup at
ingest (a query on the hash vector, ``batcher.store.hash_vector``), the pairs' pages, the hashes
of given points. Mixed into ``EdgeStore``."""
from __future__ import annotations

import threading
from typing import Any

import numpy as np
from qdrant_edge import EdgeShard, Query, QueryBatchRequest, QueryRequest, ScrollRequest, SearchParams

from batcher.store.edge_filters import hash_neighbours, with_near_duplicates
from batcher.duplicates.photo import Probe
from batcher.queue.jobs import DEFAULT_TENANT
from batcher.store.hash_vector import HASH_EF, PHASH, hash_vector, min_score
from batcher.store.keywords import DENSE
from batcher.store.points import HASH_FIELDS, PAIR_FIELDS


class EdgeDuplicates:
    shard: EdgeShard
    _lock: threading.Lock

    def hashed(self, probes: list[Probe], limit: int) -> list[list[dict[str, Any]]]:
        params = SearchParams(hnsw_ef=HASH_EF)
        requests = [QueryRequest(limit=limit, query=Query.Nearest(hash_vector(p.phash), using=PHASH),
                                 filter=hash_neighbours(p), score_threshold=min_score(p.max_distance),
                                 with_payload=HASH_FIELDS, params=params)
                    for p in probes]
        with self._lock:
            found = self.shard.query_batch(QueryBatchRequest(requests))
        return [[p.payload for p in points if p.payload] for points in found]

    def flagged(self, offset: str | None, limit: int, tenant: str = DEFAULT_TENANT
                ) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
        with self._lock:
            found, after = self.shard.scroll(ScrollRequest(offset=offset, limit=limit, with_payload=PAIR_FIELDS,
                                                           with_vector=False, filter=with_near_duplicates(tenant)))
        return [(str(p.id), p.payload) for p in found], (None if after is None else str(after))

    def hashes(self, point_ids: list[str]) -> dict[str, str]:
        with self._lock:
            found = self.shard.retrieve(point_ids, ["phash"], False)
        return {str(p.id): p.payload["phash"] for p in found if (p.payload or {}).get("phash")}

    def vectors(self, point_ids: list[str]) -> dict[str, np.ndarray]:
        with self._lock:
            found = self.shard.retrieve(point_ids, False, DENSE)
        return {str(p.id): np.asarray(p.vector, np.float32) for p in found if p.vector is not None}
