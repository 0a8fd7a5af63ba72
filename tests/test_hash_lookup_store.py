"""The near-duplicate lookup on both engines: in memory on the embedded store
(batcher/store/hash_index.py), through the hash vector on a server (batcher/store/hash_vector.py).
A planted hash within the distance found among many random ones, nothing beyond it, per tenant;
the embedded index in step with every kind of write and with a reopened store; stores made
before (no hash vector; an embedded one with it), and backfill-hashes."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_edge import (Distance, EdgeConfig, EdgeShard, EdgeVectorParams, HnswIndexConfig, Point, ScrollRequest,
                         UpdateOperation)

from batcher.config import DuplicateConfig
from batcher.duplicates.finder import DuplicateFinder
from batcher.duplicates.phash import distance, to_hex
from batcher.duplicates.photo import Photo, Probe
from batcher.queue.jobs import Job
from batcher.queue.photos import Photo as UploadedPhoto
from batcher.store import StoreConfig, open_store, point_id
from batcher.store.edge_folder import SHARD_FILE
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


def test_the_lookup_finds_a_planted_hash_within_the_distance_per_tenant(tmp_path, engine):
    store = open_engine(engine, tmp_path / "q", DIM)
    try:
        noise = random_hashes(10_000 if engine == "edge" else 2_000, seed=1)
        store_hashes(store, {f"r{i}": h for i, h in enumerate(noise)})
        store_hashes(store, {"at10": flip(BASE, 0, 7, 15, 16, 31, 32, 47, 48, 62, 63),  # every 16-bit block
                             "at11": flip(BASE, *range(11)), "at4": flip(BASE, 3, 20, 40, 60)})
        store_hashes(store, {"other-tenant": flip(BASE, 5)}, tenant="shop-b")
        found, in_b = look_up(store, BASE), look_up(store, BASE, "shop-b")
        missed = look_up(store, flip(BASE, *range(0, 64, 2)))  # 32 bits away from everything planted
    finally:
        store.close()
    assert found == [("at4", 4), ("at10", 10)]  # nearest first; at11 and the random ones beyond
    assert in_b == [("other-tenant", 1)]
    assert all(d <= MAX_DISTANCE for _, d in missed)


# -- the embedded index in step with the store ----------------------------------------------------
def photo_set(product_id: str, version: int, hashes: list[int], tenant: str = "default") -> list[Job]:
    """One upload of ``hashes`` photos, as the claim stage splits it, stamped as the finish stage does."""
    photos = tuple(UploadedPhoto(i, f"sha-{product_id}-{version}-{i}") for i in range(len(hashes)))
    jobs = [Job(f"job-{product_id}-{version}", product_id, product_id, "", {}, p.image_sha256, 0, 0,
                version=version, photos=photos if len(photos) > 1 else (), photo_index=p.index, tenant=tenant)
            for p in photos]
    for j, h in zip(jobs, hashes):
        DuplicateFinder.stamp(j, h, [])
    return jobs


def every_pair_compared(store, probes: list[Probe]) -> list[list[tuple[str, int, str]]]:
    """The answer from the store's payloads, read whole, each compared with each probe."""
    points, _ = store.shard.scroll(ScrollRequest(limit=100_000, with_payload=True, with_vector=False))
    stored = [p.payload for p in points if p.payload.get("phash")]
    return [sorted((s["product_id"], s.get("photo_index", 0), s["phash"]) for s in stored
                   if s.get("tenant", "default") == p.tenant and s["product_id"] not in p.exclude
                   and distance(p.phash, int(s["phash"], 16)) <= p.max_distance)
            for p in probes]


def from_the_index(store, probes: list[Probe]) -> list[list[tuple[str, int, str]]]:
    return [sorted((s["product_id"], s.get("photo_index", 0), s["phash"]) for s in found)
            for found in store.hashed(probes, 1000)]


def test_the_embedded_index_follows_every_write_and_a_reopened_store(tmp_path):
    probes = [Probe(BASE, MAX_DISTANCE, "default", []), Probe(BASE, MAX_DISTANCE, "default", ["kept"]),
              Probe(flip(BASE, *range(32)), MAX_DISTANCE, "default", []), Probe(BASE, MAX_DISTANCE, "shop-b", [])]
    steps = {
        "three photos, two near BASE": [photo_set("p", 2, [flip(BASE, 1), flip(BASE, *range(32)), flip(BASE, 2)])],
        "a product that stays": [photo_set("kept", 1, [flip(BASE, 3)]), photo_set("b", 1, [BASE], "shop-b")],
        "a stale upload of p (version 1) writes nothing": [photo_set("p", 1, [BASE, BASE, BASE, BASE])],
        "p again with one photo: two dropped": [photo_set("p", 3, [flip(BASE, *range(32, 64))])],
        "p's photo 0 replaced by a near one": [photo_set("p", 4, [flip(BASE, 9)])],
    }
    store = open_store(StoreConfig(path=str(tmp_path / "q")), DIM, "test-model")
    try:
        store.warm()  # read now (empty): from here on, kept in step by each write
        seen = {}
        for step, uploads in steps.items():
            for jobs in uploads:
                store.upsert(jobs, np.ones((len(jobs), DIM), np.float32))
            seen[step] = from_the_index(store, probes)
            assert seen[step] == every_pair_compared(store, probes), step
        assert [len(x) for x in seen["p's photo 0 replaced by a near one"]] == [2, 1, 0, 1]
        assert not store.delete("p", 4)  # a delete older than the stored upload: p stays
        assert from_the_index(store, probes) == every_pair_compared(store, probes)
        assert store.delete("p", 5)
        after_delete = from_the_index(store, probes)
        assert after_delete == every_pair_compared(store, probes) and [p for p, _, _ in after_delete[0]] == ["kept"]
        store.write([(point_id("imported"), [1.0] * DIM, {"product_id": "imported", "version": 1,
                                                           "phash": to_hex(flip(BASE, 4, 5))})])
        imported = from_the_index(store, probes)
        assert [p for p, _, _ in imported[0]] == ["imported", "kept"] and imported == every_pair_compared(store, probes)
    finally:
        store.close()
    reopened = open_store(StoreConfig(path=str(tmp_path / "q")), DIM, "test-model")
    try:
        assert from_the_index(reopened, probes) == imported
    finally:
        reopened.close()


# -- a store made before the hash vector --------------------------------------------------------
def old_points(n: int = 30) -> list[tuple[dict, list[float]]]:
    hashes = {f"p{i}": h for i, h in enumerate(random_hashes(n - 1, seed=2))} | {"near": flip(BASE, 1, 2, 3)}
    return [({"product_id": p, "version": 1, "phash": to_hex(h), "phash_bands": ["0:0000"]},
             [1.0] + [float(i % 7)] * (DIM - 1)) for i, (p, h) in enumerate(hashes.items())]


def old_edge_store(root, points, hash_vector: bool = False) -> None:
    """An embedded store with hashes in its payloads (and the former bands); ``hash_vector``:
    with the ``phash`` vector and its own HNSW graph, as stores were made before the lookup in
    memory (else as before the hash vector)."""
    folder = root / "products"
    folder.mkdir(parents=True)
    vectors = {"": EdgeVectorParams(size=DIM, distance=Distance.Cosine)}
    if hash_vector:
        vectors["phash"] = EdgeVectorParams(size=64, distance=Distance.Dot, hnsw_config=HnswIndexConfig(
            m=16, ef_construct=100, full_scan_threshold=1000))
    shard = EdgeShard.create(str(folder), EdgeConfig(vectors=vectors))
    shard.update(UpdateOperation.upsert_points([
        Point(point_id(p["product_id"]), {"": v, **({"phash": as_vector(p["phash"])} if hash_vector else {})}, p)
        for p, v in points]))
    shard.flush()
    shard.close()


def as_vector(hex_hash: str) -> list[float]:
    return [1.0 if int(hex_hash, 16) >> (63 - b) & 1 else -1.0 for b in range(64)]


def old_server_collection(path, points) -> None:
    client = QdrantClient(path=str(path))
    client.create_collection("products", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    client.upsert("products", points=[models.PointStruct(id=point_id(p["product_id"]), vector=v, payload=p)
                                      for p, v in points])
    client.close()


def test_an_old_server_collection_gets_the_hash_vector_and_a_backfill_from_its_payloads(tmp_path):
    points = old_points()
    old_server_collection(tmp_path / "q", points)
    store = open_engine("server", tmp_path / "q", DIM)
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


@pytest.mark.parametrize("hash_vector", [False, True], ids=["before-the-vector", "with-the-vector"])
def test_an_old_embedded_store_finds_its_photos_at_once_from_their_payloads(tmp_path, hash_vector):
    """Made before the hash vector, or with it (then deleted at open, its graph with it)."""
    points = old_points()
    old_edge_store(tmp_path / "q", points, hash_vector)
    store = open_engine("edge", tmp_path / "q", DIM)
    try:
        before = look_up(store, BASE)
        store_hashes(store, {"new": flip(BASE, 9)})
        new = look_up(store, BASE)
        filled, count = store.backfill_hashes(), store.count()
    finally:
        store.close()
    assert "phash" not in json.loads((tmp_path / "q" / "products" / SHARD_FILE).read_text())["vectors"]
    assert before == [("near", 3)] and new == [("new", 1), ("near", 3)]
    assert (filled, count) == (0, len(points) + 1)


def test_clipq_store_backfill_hashes_says_an_embedded_folder_needs_none(tmp_path):
    from test_store import clipq_store

    old_edge_store(tmp_path / "q", old_points())
    out = clipq_store(["backfill-hashes"], tmp_path / "q")
    assert out.returncode == 0 and "needs no hash vectors" in out.stderr, out.stderr
    store = open_store(StoreConfig(path=str(tmp_path / "q")), DIM, "m")
    try:
        assert look_up(store, BASE) == [("near", 3)]
    finally:
        store.close()
