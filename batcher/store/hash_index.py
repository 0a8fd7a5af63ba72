"""The embedded store's photo hashes in memory, for the near-duplicate lookup: every stored
photo's 64-bit perceptual hash (``batcher.duplicates.phash``), tenant and product, in numpy arrays, and
a lookup that compares a probe with all of them at once (XOR and popcount: about 1 ms a probe
per million photos, measured by ``python -m scripts.bench_duplicates``).

Why not an index in Qdrant: the embedded store is owned by one process, so a copy of its
hashes in that process is exact, and a scan of 8 bytes a photo beats an HNSW query, which costs
one graph search per segment (17 times as much at a million photos, 51 segments), and whose
graph lengthened each segment's build (a pause of the whole worker).

The index holds point ids, never payloads: the store reads the found points back, so what it
answers is what the store holds. ``EdgeStore`` keeps it in step with every write.
"""
from __future__ import annotations

import numpy as np

FREE = -1  # the tenant code of a slot no point holds


class HashIndex:
    def __init__(self, capacity: int = 1024) -> None:
        self._slot: dict[str, int] = {}  # point id -> its slot in the arrays
        self._ids: list[str | None] = []
        self._hashes = np.zeros(capacity, np.uint64)
        self._tenants = np.full(capacity, FREE, np.int32)
        self._products = np.zeros(capacity, np.int64)  # hash() of the product id: left out by it
        self._codes: dict[str, int] = {}  # tenant -> its code in ``_tenants``
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self._slot)

    def put(self, point_id: str, phash: int, tenant: str, product_id: str) -> None:
        """The point's hash, tenant and product, replacing any it had."""
        slot = self._slot.get(point_id)
        if slot is None:
            slot = self._free.pop() if self._free else self._grow()
            self._slot[point_id] = slot
            self._ids[slot] = point_id
        self._hashes[slot] = np.uint64(phash)
        self._tenants[slot] = self._codes.setdefault(tenant, len(self._codes))
        self._products[slot] = hash(product_id)

    def extend(self, point_ids: list[str], hashes: list[int], tenants: list[str], products: list[str]) -> None:
        """Points not in the index yet, all at once (the store read whole at start-up)."""
        start, end = len(self._ids), len(self._ids) + len(point_ids)
        self._reserve(end)
        self._hashes[start:end] = np.array(hashes, np.uint64)
        self._tenants[start:end] = [self._codes.setdefault(t, len(self._codes)) for t in tenants]
        self._products[start:end] = [hash(p) for p in products]
        self._ids.extend(point_ids)
        self._slot.update(zip(point_ids, range(start, end)))

    def remove(self, point_id: str) -> None:
        slot = self._slot.pop(point_id, None)
        if slot is not None:
            self._ids[slot], self._tenants[slot] = None, FREE
            self._free.append(slot)

    def near(self, phash: int, max_distance: int, tenant: str, exclude: list[str], limit: int) -> list[str]:
        """The ids of the tenant's points within ``max_distance`` bits of ``phash``, nearest
        first (ties in slot order), of no product of ``exclude``, at most ``limit``."""
        code = self._codes.get(tenant)
        if code is None:
            return []
        used = len(self._ids)
        bits = np.bitwise_count(self._hashes[:used] ^ np.uint64(phash))
        hits = np.flatnonzero((bits <= max_distance) & (self._tenants[:used] == code))
        if exclude:
            hits = hits[~np.isin(self._products[hits], np.array([hash(p) for p in exclude], np.int64))]
        nearest = hits[np.argsort(bits[hits], kind="stable")[:max(0, limit)]]
        return [self._ids[slot] for slot in nearest]

    def _grow(self) -> int:
        slot = len(self._ids)
        self._reserve(slot + 1)
        self._ids.append(None)
        return slot

    def _reserve(self, slots: int) -> None:
        """Arrays of at least ``slots`` (twice as large each time they grow)."""
        if slots > len(self._hashes):
            more = max(slots, 2 * len(self._hashes), 1024) - len(self._hashes)
            self._hashes = np.concatenate([self._hashes, np.zeros(more, np.uint64)])
            self._tenants = np.concatenate([self._tenants, np.full(more, FREE, np.int32)])
            self._products = np.concatenate([self._products, np.zeros(more, np.int64)])
