"""The embedded store's in-memory hash index (batcher/store/hash_index.py) as a pure unit:
nearest first, within the distance, per tenant, products left out, replaced and removed
points, freed slots reused; checked against a plain comparison of every hash."""
from __future__ import annotations

import random

from batcher.duplicates.phash import distance
from batcher.store.hash_index import HashIndex

BASE = 0x0123_4567_89AB_CDEF


def flip(h: int, *bits: int) -> int:
    for b in bits:
        h ^= 1 << b
    return h


def test_nearest_first_within_the_distance_in_the_tenant_only():
    index = HashIndex()
    index.put("p3", flip(BASE, 1, 2, 3), "a", "three")
    index.put("p0", BASE, "a", "zero")
    index.put("p11", flip(BASE, *range(11)), "a", "eleven")
    index.put("b0", BASE, "b", "zero")
    assert index.near(BASE, 10, "a", [], 20) == ["p0", "p3"]
    assert index.near(BASE, 11, "a", [], 20) == ["p0", "p3", "p11"]
    assert index.near(BASE, 10, "a", [], 1) == ["p0"]
    assert index.near(BASE, 10, "b", [], 20) == ["b0"]
    assert index.near(BASE, 10, "c", [], 20) == []  # a tenant with no photo
    assert index.near(BASE, 10, "a", ["zero"], 20) == ["p3"]  # the product is left out, not b's


def test_a_point_put_again_is_replaced_and_a_removed_one_is_gone():
    index = HashIndex()
    index.put("x", BASE, "a", "x")
    index.put("x", ~BASE & (2**64 - 1), "a", "x")  # another photo at the same index
    assert len(index) == 1 and index.near(BASE, 10, "a", [], 20) == []
    index.put("x", BASE, "b", "x")  # the tenant follows the point too
    assert index.near(BASE, 10, "a", [], 20) == [] and index.near(BASE, 10, "b", [], 20) == ["x"]
    index.remove("x")
    index.remove("never-there")
    assert len(index) == 0 and index.near(BASE, 64, "b", [], 20) == []


def test_many_points_match_a_plain_comparison_and_freed_slots_are_reused():
    rng = random.Random(7)
    index, truth = HashIndex(capacity=16), {}  # grows past its first arrays many times
    for i in range(5_000):
        h = flip(BASE, *rng.sample(range(64), rng.randint(0, 20))) if i % 3 else rng.getrandbits(64)
        tenant = "a" if i % 4 else "b"
        index.put(f"p{i}", h, tenant, f"prod{i // 2}")
        truth[f"p{i}"] = (h, tenant, f"prod{i // 2}")
    for i in range(0, 5_000, 5):
        index.remove(f"p{i}")
        del truth[f"p{i}"]
    slots = len(index._ids)
    for i in range(200):  # new points take the freed slots
        index.put(f"new{i}", BASE, "a", f"new{i}")
        truth[f"new{i}"] = (BASE, "a", f"new{i}")
    assert len(index._ids) == slots and len(index) == len(truth)
    for probe in (BASE, flip(BASE, 5, 9), rng.getrandbits(64)):
        for tenant in ("a", "b"):
            excluded = ["prod10", "prod11", "new3"]
            expected = sorted((distance(probe, h), pid) for pid, (h, t, prod) in truth.items()
                              if t == tenant and prod not in excluded and distance(probe, h) <= 12)
            found = index.near(probe, 12, tenant, excluded, 10_000)
            assert sorted(found) == sorted(pid for _, pid in expected)
            assert [distance(probe, truth[p][0]) for p in found] == sorted(d for d, _ in expected)


def test_extend_reads_a_store_whole_as_put_one_by_one_would():
    rng = random.Random(3)
    rows = [(f"p{i}", rng.getrandbits(64) if i % 2 else flip(BASE, i % 64), "ab"[i % 3 == 0], f"prod{i // 3}")
            for i in range(3_000)]
    whole, one_by_one = HashIndex(capacity=8), HashIndex(capacity=8)
    whole.extend(*map(list, zip(*rows[:1_000])))
    whole.extend(*map(list, zip(*rows[1_000:])))  # a second page, past the arrays' first size
    for row in rows:
        one_by_one.put(*row)
    whole.put("p1", BASE, "a", "prod0")  # then kept in step like any index
    one_by_one.put("p1", BASE, "a", "prod0")
    for index in (whole, one_by_one):
        index.remove("p2")
    for tenant in ("a", "b"):
        assert whole.near(BASE, 10, tenant, ["prod5"], 100) == one_by_one.near(BASE, 10, tenant, ["prod5"], 100) != []
