"""A Qdrant server's reads for near-duplicate photos (``batcher.duplicates``): the lookup at
ingest (a query on the hash vector, ``batcher.store.hash_vector``), the pairs' pages, the hashes
of given points. Mixed into ``ServerStore``."""
from __future__ import annotations

import threading
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from batcher.duplicates.photo import Probe
from batcher.queue.jobs import DEFAULT_TENANT
from batcher.store.hash_vector import HASH_EF, PHASH, hash_vector, min_score
from batcher.store.keywords import DENSE
from batcher.store.points import HASH_FIELDS, PAIR_FIELDS
from batcher.store.server_filters import hash_neighbours, with_near_duplicates


class ServerDuplicates:
    client: QdrantClient
    collection: str
    _lock: threading.Lock

    def warm(self) -> None:
        """Nothing held in memory: the lookup is a query on the server."""

    def hashed(self, probes: list[Probe], limit: int) -> list[list[dict[str, Any]]]:
        params = models.SearchParams(hnsw_ef=HASH_EF)
        requests = [models.QueryRequest(query=hash_vector(p.phash), using=PHASH, filter=hash_neighbours(p), limit=limit,
                                        score_threshold=min_score(p.max_distance), with_payload=HASH_FIELDS,
                                        params=params)
                    for p in probes]
        with self._lock:
            responses = self.client.query_batch_points(self.collection, requests=requests)
        return [[p.payload for p in r.points if p.payload] for r in responses]

    def flagged(self, offset: str | None, limit: int, tenant: str = DEFAULT_TENANT
                ) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
        with self._lock:
            found, after = self.client.scroll(self.collection, with_near_duplicates(tenant), offset=offset, limit=limit,
                                              with_payload=PAIR_FIELDS, with_vectors=False)
        return [(str(p.id), p.payload) for p in found], (None if after is None else str(after))

    def hashes(self, point_ids: list[str]) -> dict[str, str]:
        with self._lock:
            found = self.client.retrieve(self.collection, point_ids, with_payload=["phash"])
        return {str(p.id): p.payload["phash"] for p in found if (p.payload or {}).get("phash")}

    def vectors(self, point_ids: list[str]) -> dict[str, np.ndarray]:
        with self._lock:
            found = self.client.retrieve(self.collection, point_ids, with_payload=False, with_vectors=DENSE)
        return {str(p.id): np.asarray(p.vector, np.float32) for p in found if p.vector is not None}
