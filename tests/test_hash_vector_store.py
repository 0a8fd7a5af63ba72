"""The near-duplicate lookup through the hash vector (batcher/store/hash_vector.py) on both
engines: a planted hash within the distance found among many random ones, nothing beyond it,
per tenant; and a store made before the vector, upgraded and backfilled from its payloads."""
from __future__ import annotations

import random

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_edge import Distance, EdgeConfig, EdgeShard, EdgeVectorParams, Point, UpdateOperation

from batcher.config import DuplicateConfig
from batcher.duplicates.finder import DuplicateFinder
from batcher.duplicates.phash import distance, to_hex
from batcher.duplicates.photo import Photo
from batcher.queue.jobs import Job
from batcher.store import StoreConfig, open_store, point_id
from conftest import open_engine
from test_duplicate_store import BASE, DIM, flip

MAX_DISTANCE = 10


def random_hashes(n: int, seed: int) -> list[int]:
    """Random hashes, none within reach of BASE (they lie about 32 bits from it)."""
    rng = random.Random(seed)
    return [h for h in (rng.getrandbits(64) for _ in range(n)) if distance(h, BASE) > 2 * MAX_DISTANCE]


def store_hashes(store, hashes: dict[str, int], tenant: str = "default") -> None:
    jobs = [Job(f"job-{p}", p, p, "", {}, f"sha-{p}", 0, 0, version=1, tenant=tenant) for p in hashes]
    for j in jobs:
        DuplicateFinder.stamp(j, hashes[j.product_id], [])
    for start in range(0, len(jobs), 1000):
        store.upsert(jobs[start:start + 1000], np.ones((len(jobs[start:start + 1000]), DIM), np.float32))


def look_up(store, phash: int, tenant: str = "default") -> list[tuple[str, int]]:
    finder = DuplicateFinder(store, DuplicateConfig(MAX_DISTANCE, max_listed=20))
    (near,) = finder.find([Photo("query", 0, phash, tenant=tenant)])
    return [(n.product_id, n.distance) for n in near]


@pytest.fixture(params=["edge", "server"])
def engine(request):
    return request.param


def test_the_vector_lookup_finds_a_planted_hash_within_the_distance_per_tenant(tmp_path, engine):
    if engine == "edge":  # segments large enough to be searched through their HNSW graph
        store = open_store(StoreConfig(path=str(tmp_path / "q"), segment_points=4096), DIM, "test-model")
    else:
        store = open_engine(engine, tmp_path / "q", DIM)
    try:
        noise = random_hashes(10_000 if engine == "edge" else 2_000, seed=1)
        store_hashes(store, {f"r{i}": h for i, h in enumerate(noise)})
        store_hashes(store, {"at10": flip(BASE, 0, 7, 15, 16, 31, 32, 47, 48, 62, 63),  # every 16-bit block
                             "at11": flip(BASE, *range(11)), "at4": flip(BASE, 3, 20, 40, 60)})
        store_hashes(store, {"other-tenant": flip(BASE, 5)}, tenant="shop-b")
        if engine == "edge":
            store._build_index()  # the last segment too
            assert store.info()["indexed_vectors"] >= 8192
        found, in_b = look_up(store, BASE), look_up(store, BASE, "shop-b")
        missed = look_up(store, flip(BASE, *range(0, 64, 2)))  # 32 bits away from everything planted
    finally:
        store.close()
    assert found == [("at4", 4), ("at10", 10)]  # nearest first; at11 and the random ones beyond
    assert in_b == [("other-tenant", 1)]
    assert all(d <= MAX_DISTANCE for _, d in missed)


# -- a store made before the hash vector --------------------------------------------------------
def old_points(n: int = 30) -> list[tuple[dict, list[float]]]:
    hashes = {f"p{i}": h for i, h in enumerate(random_hashes(n - 1, seed=2))} | {"near": flip(BASE, 1, 2, 3)}
    return [({"product_id": p, "version": 1, "phash": to_hex(h), "phash_bands": ["0:0000"]},
             [1.0] + [float(i % 7)] * (DIM - 1)) for i, (p, h) in enumerate(hashes.items())]


def old_edge_store(root, points) -> None:
    """An embedded store with hashes in its payloads (and the former bands), no hash vector."""
    folder = root / "products"
    folder.mkdir(parents=True)
    shard = EdgeShard.create(str(folder), EdgeConfig(vectors=EdgeVectorParams(size=DIM, distance=Distance.Cosine)))
    shard.update(UpdateOperation.upsert_points([Point(point_id(p["product_id"]), v, p) for p, v in points]))
    shard.flush()
    shard.close()


def old_server_collection(path, points) -> None:
    client = QdrantClient(path=str(path))
    client.create_collection("products", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    client.upsert("products", points=[models.PointStruct(id=point_id(p["product_id"]), vector=v, payload=p)
                                      for p, v in points])
    client.close()


def test_an_old_store_gets_the_hash_vector_and_a_backfill_from_its_payloads(tmp_path, engine):
    points = old_points()
    (old_edge_store if engine == "edge" else old_server_collection)(tmp_path / "q", points)
    store = open_engine(engine, tmp_path / "q", DIM)
    try:
        before = look_up(store, BASE)
        dense_before = {str(p.id): list(p.vector) for p in store.scroll(None, 100)[0]}
        filled, again = store.backfill_hashes(batch=7), store.backfill_hashes()
        after = look_up(store, BASE)
        dense_after = {str(p.id): list(p.vector) for p in store.scroll(None, 100)[0]}
        store_hashes(store, {"new": flip(BASE, 9)})  # a new photo gets its vector at once
        new = look_up(store, BASE)
    finally:
        store.close()
    assert before == [] and (filled, again) == (30, 0)
    assert after == [("near", 3)] and new == [("new", 1), ("near", 3)]
    assert dense_before.keys() == dense_after.keys() and all(np.allclose(dense_before[k], dense_after[k])
                                                             for k in dense_before)


def test_clipq_store_backfill_hashes_on_an_old_embedded_folder(tmp_path):
    from test_store import clipq_store

    old_edge_store(tmp_path / "q", old_points())
    out = clipq_store(["backfill-hashes"], tmp_path / "q")
    assert out.returncode == 0 and "gave hash vectors to 30 points" in out.stderr, out.stderr
    assert "backfill-hashes" in out.stderr  # the upgrade said what to run
    store = open_store(StoreConfig(path=str(tmp_path / "q")), DIM, "m")
    try:
        assert look_up(store, BASE) == [("near", 3)]
    finally:
        store.close()
