"""The embedded store's reads for near-duplicate photos (``batcher.duplicates``): the lookup at
ingest (``hash_index``: every photo's hash in memory, kept in step with the store's writes),
the pairs' pages, the hashes of given points. Mixed into ``EdgeStore``."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
from qdrant_edge import EdgeShard, ScrollRequest

from batcher.duplicates.phash import from_hex
from batcher.duplicates.photo import Probe
from batcher.queue.jobs import DEFAULT_TENANT
from batcher.store.edge_filters import with_near_duplicates
from batcher.store.hash_index import HashIndex
from batcher.store.hash_vector import PHASH
from batcher.store.keywords import DENSE
from batcher.store.points import HASH_FIELDS, PAIR_FIELDS, TENANT, tenant_of

log = logging.getLogger(__name__)
INDEXED = [PHASH, TENANT, "product_id"]  # what the index holds of a point
PAGE = 100_000  # points a read of the whole store takes at a time (each read seeks in every segment)


class EdgeDuplicates:
    shard: EdgeShard
    _lock: threading.Lock
    _photo_hashes: HashIndex | None = None  # read from the store when first needed

    def warm(self) -> None:
        """Read the photos' hashes now (the worker at start-up), not at the first lookup."""
        with self._lock:
            self._hash_index()

    def hashed(self, probes: list[Probe], limit: int) -> list[list[dict[str, Any]]]:
        """Each probe compared with every stored hash (``hash_index``), then the points found
        read back from the store in one call: what is answered is what the store holds."""
        with self._lock:
            index = self._hash_index()
            near = [index.near(p.phash, p.max_distance, p.tenant, p.exclude, limit) for p in probes]
            wanted = sorted({i for ids in near for i in ids})
            found = {str(p.id): p.payload for p in self.shard.retrieve(wanted, HASH_FIELDS, False)} if wanted else {}
        return [[found[i] for i in ids if found.get(i)] for ids in near]

    def _hash_index(self) -> HashIndex:
        """The index, read from the store the first time (under the lock)."""
        if self._photo_hashes is None:
            t0, index, offset = time.perf_counter(), HashIndex(), None
            while True:
                # every point, those without a hash passed over here: a filter on the (unindexed)
                # payload field made the read several times slower
                points, offset = self.shard.scroll(ScrollRequest(offset=offset, limit=PAGE, with_payload=INDEXED,
                                                                 with_vector=False))
                index.extend(*_columns(points))
                if offset is None:
                    break
            self._photo_hashes = index
            log.info("read the hashes of %d stored photos in %.2fs (near-duplicate lookup)", len(index),
                     time.perf_counter() - t0)
        return self._photo_hashes

    def _rehash(self, point_ids: list[str]) -> None:
        """After a write that may have changed these points (a conditional one, a delete): the
        index takes from the store what it now holds of them (under the lock)."""
        if self._photo_hashes is None or not point_ids:
            return  # read whole when first needed, with these writes in it
        columns = _columns(self.shard.retrieve(point_ids, INDEXED, False))
        for row in zip(*columns):
            self._photo_hashes.put(*row)
        for point_id in set(point_ids) - set(columns[0]):  # gone, or holding no hash now
            self._photo_hashes.remove(point_id)

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


def _columns(points: list) -> tuple[list[str], list[int], list[str], list[str]]:
    """The ids, hashes, tenants and products of the points holding a readable hash."""
    rows = [(str(p.id), h, tenant_of(payload), str(payload["product_id"]))
            for p in points if (h := _hash_of(payload := p.payload)) is not None]  # payload: read once
    return tuple(map(list, zip(*rows))) if rows else ([], [], [], [])


def _hash_of(payload: dict[str, Any] | None) -> int | None:
    """The payload's hash; None when it holds no readable one (or no product)."""
    try:
        return from_hex(payload[PHASH]) if "product_id" in payload else None
    except (KeyError, TypeError, ValueError):
        return None
