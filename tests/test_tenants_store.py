"""Tenants in the vector store, on both engines: the same product id in two tenants is two
points; every read stays inside its tenant; points stored before tenants are the default's."""
from __future__ import annotations

from dataclasses import replace

import pytest

from batcher.store.asks import Ask
from batcher.store.points import point_id
from conftest import open_engine
from test_store import DIM, job, unit

ENGINES = ["edge", "server"]


def ids(results) -> list[str]:
    return [r.product_id for r in results]


def two_shops(store):
    """shop-a and shop-b each hold p1 and p2 (different names and vectors); default holds p1."""
    jobs = [replace(job(p), name=f"{t} {p}", tenant=t) for t in ("shop-a", "shop-b", "default") for p in ("p1", "p2")
            if (t, p) != ("default", "p2")]
    vectors = unit(len(jobs), seed=3)
    store.upsert(jobs, vectors)
    return dict(zip([(j.tenant, j.product_id) for j in jobs], vectors))


def test_point_ids_keep_the_default_tenants_and_differ_per_tenant():
    assert point_id("p1") == point_id("p1", 0, "default") and point_id("p1", 2) == point_id("p1", 2, "default")
    assert len({point_id("p1"), point_id("p1", tenant="a"), point_id("p1", tenant="b"),
                point_id("p1", 1, "a")}) == 4


@pytest.mark.parametrize("engine", ENGINES)
def test_every_read_stays_inside_its_tenant(tmp_path, engine):
    store = open_engine(engine, tmp_path / "q", DIM)
    vectors = two_shops(store)
    if engine == "edge":
        assert store.info()["payload_indexes"]["tenant"] == "Keyword"
    a_near = vectors[("shop-a", "p1")].tolist()
    (by_b,), (by_a,), (words,) = (store.find([Ask(10, vector=a_near, tenant="shop-b")]),
                                  store.find([Ask(10, vector=a_near, tenant="shop-a")]),
                                  store.find([Ask(10, words="shop-b p1", tenant="shop-a")]))
    assert {r.name for r in by_b} == {"shop-b p1", "shop-b p2"}, "the nearest point, shop-a's p1, is not shop-b's"
    assert by_a[0].name == "shop-a p1" and {r.name for r in by_a} == {"shop-a p1", "shop-a p2"}
    assert {r.name for r in words} <= {"shop-a p1", "shop-a p2"}
    assert store.find([Ask(10, {"tenant": "shop-b"}, a_near, tenant="shop-a")]) == [[]], \
        "a filter's tenant key is a metadata key: it never reaches another tenant"
    assert store.get("p1", "shop-b")["name"] == "shop-b p1" and store.get("p2", "default") is None
    like = store.photos("p1", "shop-b")
    assert len(like) == 1 and store.photos("p2", "default") == []
    (similar,) = store.find([Ask(10, like=tuple(like), exclude="p1", tenant="shop-b")])
    assert [r.name for r in similar] == ["shop-b p2"], "more like this stays in the tenant, leaving out its own"
    assert store.delete("p1", 99, "shop-b") and store.get("p1", "shop-b") is None
    assert store.get("p1", "shop-a")["name"] == "shop-a p1" and store.get("p1")["name"] == "default p1"
    store.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_points_stored_before_tenants_are_the_default_tenants(tmp_path, engine):
    store = open_engine(engine, tmp_path / "q", DIM)
    old = {"product_id": "legacy", "name": "legacy", "description": "", "metadata": {}, "version": 1}
    store.write([(point_id("legacy"), unit(1, seed=9)[0].tolist(), old)])  # no tenant in its payload
    near = unit(1, seed=9)[0].tolist()
    assert ids(store.find([Ask(5, vector=near)])[0]) == ["legacy"]
    assert store.find([Ask(5, vector=near, tenant="shop-a")]) == [[]]
    assert store.get("legacy")["name"] == "legacy" and store.get("legacy", "shop-a") is None
    assert len(store.photos("legacy")) == 1 and store.photos("legacy", "shop-a") == []
    store.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_known_images_are_looked_up_inside_the_tenant(tmp_path, engine):
    store = open_engine(engine, tmp_path / "q", DIM, embedder="m1")
    a = replace(job("p1"), tenant="shop-a", image_sha256="f" * 64)
    store.upsert([a], unit(1))
    by_product, by_sha = store.images(["p1"], ["f" * 64], "shop-a")
    assert set(by_product) == {"p1"} and set(by_sha) == {"f" * 64}
    assert store.images(["p1"], ["f" * 64], "shop-b") == ({}, {}), "another tenant's bytes are not reused"
    store.close()
