"""Several photos per product with the other features of the merge: tenants (a tenant's photo set
never touches another tenant's points), near duplicates (each photo hashed and looked up, the
job's status lists them all with ``of_photo``, a product's own photos never pair), and search
(every photo has its keywords; a product of several photos is one result, at its best photo).
Through real Redis, a real worker with the tiny model and real Edge; the store's rules on both
engines with chosen vectors."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from batcher.queue.jobs import DEFAULT_TENANT
from batcher.store.asks import Ask
from conftest import open_engine
from test_duplicates import REAL, all_pairs, status, variant
from test_photos import ROUTE, photo_set, sha
from test_store import DIM, job, unit
from test_tenants_api import A, B, settle
from test_worker import jpeg

ENGINES = ["edge", "server"]


# -- tenants ------------------------------------------------------------------------------------
def tenant_set(tenant: str, version: int, count: int) -> list:
    return [replace(j, tenant=tenant) for j in photo_set(version, count)]


def stored(store, tenant: str) -> list[tuple[int, int]]:
    """(photo index, version its sha256 names) of each stored photo of the tenant's product p."""
    view = store.get("p", tenant)
    return [] if view is None else [(p["index"], int(p["image_sha256"].split("-")[1])) for p in view["photos"]]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_tenants_photo_set_never_touches_another_tenants_points(tmp_path, engine):
    store = open_engine(engine, tmp_path / "q", 4, embedder="m1")
    try:
        store.upsert(tenant_set("shop-b", 9, 3) + tenant_set("shop-a", 5, 3), np.ones((6, 4)))
        assert stored(store, "shop-a") == [(0, 5), (1, 5), (2, 5)], "shop-b's newer p does not make shop-a's stale"
        store.upsert(tenant_set("shop-a", 6, 1), np.ones((1, 4)))  # shop-a drops photos 1 and 2
        store.upsert(tenant_set("shop-a", 5, 3), np.ones((3, 4)))  # a stale retry of shop-a's older set
        store.upsert(tenant_set(DEFAULT_TENANT, 7, 2), np.ones((2, 4)))
        assert stored(store, "shop-a") == [(0, 6)] and stored(store, "shop-b") == [(0, 9), (1, 9), (2, 9)]
        assert stored(store, DEFAULT_TENANT) == [(0, 7), (1, 7)] and store.count() == 6
        by_photo, by_sha = store.images([("p", 1), ("p", 2)], ["sha-9-2"], "shop-b")
        assert set(by_photo) == {("p", 1), ("p", 2)} and "sha-9-2" in by_sha
        assert store.images([("p", 1), ("p", 2)], ["sha-9-2"], "shop-a") == ({}, {})
        assert store.delete("p", 10, "shop-b") and stored(store, "shop-b") == [] and store.count() == 3
        assert stored(store, "shop-a") == [(0, 6)] and len(stored(store, DEFAULT_TENANT)) == 2
    finally:
        store.close()


def put_photos(client, headers, product_id: str, images: list[bytes]) -> str:
    files = [("image_file", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]
    resp = client.post(ROUTE, data={"product_id": product_id, "name": f"{product_id} {len(images)}"}, files=files,
                       headers=headers)
    assert resp.status_code == 202, resp.text
    return resp.json()["job_id"]


def shas(client, headers, product_id: str = "p") -> list[str] | None:
    resp = client.get(f"/api/v1/products/{product_id}", headers=headers)
    return None if resp.status_code == 404 else [p["image_sha256"] for p in resp.json()["photos"]]


@pytest.fixture
def api(make_client, tmp_path):
    """The API with two tenants: shop-a (headers ``A``) and shop-b (``B``)."""
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"shop-a": {"api_key": "key-a"}, "shop-b": {"api_key": "key-b"}}))
    return make_client(allow_anonymous=False, tenants_file=str(path), api_key="plain")


def test_get_and_delete_list_and_remove_only_the_tenants_photos(api, serve_worker):
    serve_worker()
    a3, b2 = [jpeg(1), jpeg(2), jpeg(3)], [jpeg(4), jpeg(5)]
    settle(api, {put_photos(api, A, "p", a3): A, put_photos(api, B, "p", b2): B})
    assert shas(api, A) == [sha(x) for x in a3] and shas(api, B) == [sha(x) for x in b2]
    settle(api, {put_photos(api, A, "p", [jpeg(6)]): A})  # shop-a's set drops two photos
    assert shas(api, A) == [sha(jpeg(6))] and shas(api, B) == [sha(x) for x in b2]
    assert api.delete("/api/v1/products/p", headers=B).status_code == 200
    assert shas(api, B) is None and shas(api, A) == [sha(jpeg(6))]


# -- near duplicates ----------------------------------------------------------------------------
def indexed(client, run_burst, product_id: str, images: list[bytes]) -> list[tuple[int, str, int]]:
    """Upload one product, run the worker: (of_photo, product_id, photo_index) of its near duplicates."""
    files = [("image_file", (f"{i}.png", data, "application/octet-stream")) for i, data in enumerate(images)]
    resp = client.post(ROUTE, data={"product_id": product_id, "name": product_id}, files=files)
    assert resp.status_code == 202, resp.text
    run_burst()
    near = status(client, resp.json()["job_id"])["near_duplicates"]
    assert all(0 <= n["distance"] <= 10 for n in near), near
    return [(n["of_photo"], n["product_id"], n["photo_index"]) for n in near]


def test_each_photo_is_looked_up_and_a_products_own_photos_never_pair(client, run_burst, serve_worker):
    coffee, astronaut = (REAL / "coffee.png").read_bytes(), (REAL / "astronaut.png").read_bytes()
    assert indexed(client, run_burst, "a", [astronaut]) == []
    # b's photos 0 and 2 are the same picture: b never pairs with itself; its photo 1 is a's
    assert indexed(client, run_burst, "b", [coffee, variant("astronaut.png"), variant("coffee.png")]) == [
        (1, "a", 0)]
    assert sorted(indexed(client, run_burst, "c", [jpeg(7), variant("coffee.png", 0.7, 60)])) == [
        (1, "b", 0), (1, "b", 2)], "the stored photos 0 and 2 of b, found by their own hashes"
    serve_worker()  # GET /api/v1/duplicates is answered over the query lane
    pairs = {(p, other) for p, other, _ in all_pairs(client, limit=100)}
    assert pairs == {("b", "a"), ("c", "b")}


# -- search -------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_a_product_of_three_photos_is_one_result_at_its_best_photo(tmp_path, engine):
    """mug's photo 2 is the query; its photos 0 and 1 lie opposite, behind 40 closer products."""
    store = open_engine(engine, tmp_path / "q", DIM)
    query = unit(1, seed=9)[0]
    mug = [replace(j, name="Zebra mug") for j in photo_set(1, 3, "mug")]
    near = unit(40, seed=3) * 0.3 + query
    vectors = np.vstack([-query + 0.1 * unit(2, seed=4), query[None], near / np.linalg.norm(near, axis=1)[:, None]])
    store.upsert(mug + [job(f"p{i}") for i in range(40)], vectors)
    dense, words, fused, like = store.find([Ask(5, vector=query.tolist()), Ask(5, words="zebra"),
                                            Ask(5, vector=query.tolist(), words="zebra"),
                                            Ask(5, like=(query.tolist(),), exclude="cup")])
    store.close()
    for results in (dense, fused, like):
        assert [r.product_id for r in results].count("mug") == 1 and len(results) == 5
        assert (results[0].product_id, results[0].photo_index) == ("mug", 2)
    assert [r.product_id for r in words] == ["mug"], "every photo has its keywords: one result still"


def search(client, body: dict) -> list[tuple[str, int]]:
    resp = client.post("/api/v1/search", json={"limit": 10, **body})
    assert resp.status_code == 200, resp.text
    return [(r["product_id"], r["photo_index"]) for r in resp.json()["results"]]


def test_through_the_api_a_product_of_three_photos_is_one_result_in_every_mode(client, serve_worker):
    """cup's one photo is mug's photo 2 (the same bytes: the same vector): ``like`` cup and an
    image search by those bytes find mug at photo 2; words find it once in every mode."""
    from test_search import wait_completed

    serve_worker()
    jobs = [put_photos(client, {}, "mug", [jpeg(11), jpeg(12), jpeg(13)]), put_photos(client, {}, "cup", [jpeg(13)])]
    wait_completed(client, jobs + [put_photos(client, {}, f"p{i}", [jpeg(20 + i)]) for i in range(5)])
    by_image = client.post("/api/v1/search/image", files={"image_file": ("q.jpg", jpeg(13), "image/jpeg")})
    assert by_image.status_code == 200, by_image.text
    hits = [(r["product_id"], r["photo_index"]) for r in by_image.json()["results"]]
    assert ("mug", 2) in hits[:2] and len(hits) == len(set(p for p, _ in hits)) == 7
    assert search(client, {"like": "cup"})[0] == ("mug", 2)
    for mode in ("vector", "keyword", "hybrid"):
        found = [p for p, _ in search(client, {"text": "mug 3", "mode": mode})]
        assert found.count("mug") == 1 and len(found) == len(set(found)), (mode, found)
