"""Tenants through the whole stack (real Redis, a real worker with the tiny model, real Edge):
two shops upload the same product id and each sees only its own; another tenant's job or
product answers 404 as an unknown one; failed lists and groups are scoped; an admin sees all."""
from __future__ import annotations

import json
import time

import httpx
import pytest

from conftest import CORPUS
from test_import import clipq_import
from test_worker import jpeg

A, B, ADMIN, PLAIN = ({"X-API-Key": k} for k in ("key-a", "key-b", "root", "plain"))


@pytest.fixture
def api(make_client, tmp_path):
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"shop-a": {"api_key": "key-a"}, "shop-b": {"api_key": "key-b"}}))
    return make_client(allow_anonymous=False, tenants_file=str(path), admin_api_key="root", api_key="plain")


def put(client, headers, product_id, seed, name, data=None, **params):
    files = {"image_file": ("x.jpg", jpeg(seed) if data is None else data, "image/jpeg")}
    resp = client.post("/api/v1/index-product-with-image", data={"product_id": product_id, "name": name},
                       files=files, headers=headers, params=params)
    assert resp.status_code == 202, resp.text
    return resp.json()["job_id"]


def settle(client, jobs: dict[str, dict], timeout_s=60):
    deadline = time.monotonic() + timeout_s
    for job_id, headers in jobs.items():
        while client.get(f"/api/v1/queue/status/{job_id}", headers=headers).json()["status"] in ("queued",
                                                                                                   "processing"):
            assert time.monotonic() < deadline, job_id
            time.sleep(0.05)


def names(resp) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [r["name"] for r in resp.json()["results"]]


def keyword(client, headers, text, **body):
    return client.post("/api/v1/search", json={"text": text, "mode": "keyword", **body}, headers=headers)


def test_the_same_product_id_in_two_tenants_is_two_products(api, serve_worker):
    serve_worker()
    a1 = put(api, A, "p1", 1, "alpha widget")
    jobs = {a1: A, put(api, A, "p2", 2, "alpha second"): A, put(api, B, "p1", 3, "beta gadget"): B}
    settle(api, jobs)
    assert api.get(f"/api/v1/queue/status/{a1}", headers=A).json()["status"] == "completed"
    assert api.get("/api/v1/products/p1", headers=A).json()["name"] == "alpha widget"
    assert api.get("/api/v1/products/p1", headers=B).json()["name"] == "beta gadget"
    assert api.get("/api/v1/products/p2", headers=B).status_code == 404
    assert names(keyword(api, A, "widget gadget")) == ["alpha widget"]
    assert names(keyword(api, B, "widget gadget")) == ["beta gadget"]
    assert names(keyword(api, B, "alpha")) == [] and names(keyword(api, PLAIN, "alpha widget gadget")) == []
    assert names(keyword(api, B, "gadget", filter={"tenant": "shop-a"})) == [], "a filter cannot name a tenant"
    image = api.post("/api/v1/search/image", files={"image_file": ("q.jpg", jpeg(1), "image/jpeg")}, headers=B)
    assert names(image) == ["beta gadget"], "A's exact photo is not B's to find"
    like = api.post("/api/v1/search", json={"like": "p1", "limit": 10}, headers=A)
    assert names(like) == ["alpha second"], "more like this stays in the tenant"
    assert api.post("/api/v1/search", json={"like": "p2"}, headers=B).status_code == 404
    assert api.post("/api/v1/search", json={"text": "x"}, headers=ADMIN).status_code == 422, "an admin names one"
    as_b = api.post("/api/v1/search", params={"tenant": "shop-b"}, headers=ADMIN,
                    json={"text": "widget gadget", "mode": "keyword"})
    assert names(as_b) == ["beta gadget"], "an admin searches the tenant it names"
    assert api.delete("/api/v1/products/p2", headers=B).status_code == 404, "A's p2 is not B's to delete"
    assert api.delete("/api/v1/products/p1", headers=B).status_code == 200
    assert api.get("/api/v1/products/p1", headers=B).status_code == 404
    assert api.get("/api/v1/products/p1", headers=A).json()["name"] == "alpha widget", "B's delete left A's p1"
    assert api.get("/api/v1/products/p2", headers=A).status_code == 200


def test_another_tenants_job_answers_404_as_an_unknown_one(api):
    job_id = put(api, A, "p1", 1, "alpha")
    unknown = api.get("/api/v1/queue/status/job-" + "0" * 32, headers=B)
    for headers in (B, PLAIN, {}):
        foreign = api.get(f"/api/v1/queue/status/{job_id}", headers=headers)
        assert foreign.status_code == 404 and foreign.json()["error"]["code"] == unknown.json()["error"]["code"]
        assert foreign.json()["error"]["message"].replace(job_id, "ID") == \
            unknown.json()["error"]["message"].replace("job-" + "0" * 32, "ID")
    assert api.get(f"/api/v1/queue/status/{job_id}?wait=0.2", headers=B).status_code == 404
    assert api.post(f"/api/v1/queue/retry/{job_id}", headers=B).status_code == 404
    assert api.post(f"/api/v1/queue/retry/{job_id}", headers=A).status_code == 409, "A's own: not failed"
    assert api.get(f"/api/v1/queue/status/{job_id}", headers=A).json()["status"] == "queued"
    assert api.get(f"/api/v1/queue/status/{job_id}", headers=ADMIN).status_code == 200
    assert api.get(f"/api/v1/queue/status/{job_id}", headers={"X-API-Key": "nope"}).status_code == 401


def test_keys_uploads_whoami_and_stats(api):
    assert api.get("/api/v1/whoami", headers=A).json() == {"tenant": "shop-a", "admin": False}
    assert api.get("/api/v1/whoami", headers=PLAIN).json() == {"tenant": "default", "admin": False}
    assert api.get("/api/v1/whoami", headers=ADMIN).json() == {"tenant": None, "admin": True}
    assert api.get("/api/v1/whoami", headers=ADMIN, params={"tenant": "shop-b"}).json()["tenant"] == "shop-b"
    assert api.get("/api/v1/whoami", headers=ADMIN, params={"tenant": "bad name"}).status_code == 422
    assert api.get("/api/v1/whoami", params={"tenant": "shop-a"}).json()["tenant"] == "default", \
        "only an admin picks a tenant"
    wrong = api.get("/api/v1/queue/failed", headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    refused = api.post("/api/v1/index-product-with-image", data={"product_id": "p", "name": "n"}, headers=ADMIN,
                       files={"image_file": ("x.jpg", jpeg(1), "image/jpeg")})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "tenant_required"
    job_id = put(api, ADMIN, "p9", 9, "by admin", tenant="shop-b")
    assert api.get(f"/api/v1/queue/status/{job_id}", headers=B).status_code == 200
    put(api, A, "p1", 1, "alpha")
    mine = api.get("/api/v1/queue/stats", headers=A).json()
    assert mine["tenant"] == "shop-a" and mine["jobs"]["total"] == 1 and mine["pending_in_queue"] == 1, \
        "a tenant reads its own counters, never the queue's totals"
    total = api.get("/api/v1/queue/stats", headers=ADMIN).json()
    assert total["tenant"] is None and total["jobs"]["total"] == 2 and total["pending_in_queue"] == 2
    assert api.get("/api/v1/queue/stats", headers=PLAIN).json()["jobs"]["total"] == 0, "default is one tenant of three"
    own = put(api, A, "p2", 2, "alpha", tenant="shop-b")  # only an admin names a tenant: A's upload stays A's
    assert api.get(f"/api/v1/queue/status/{own}", headers=A).status_code == 200
    assert api.get(f"/api/v1/queue/status/{own}", headers=B).status_code == 404


def test_failed_lists_and_groups_are_scoped(api, run_burst):
    broken = (CORPUS / "hostile" / "truncated_jpeg.jpg").read_bytes()  # passes the API's probe, fails the decode
    a_jobs = {put(api, A, f"a{i}", i, "a", data=broken) for i in range(2)}
    b_job = put(api, B, "b0", 5, "b", data=broken)
    run_burst()
    listed = {j["job_id"] for j in api.get("/api/v1/queue/failed", headers=A).json()["jobs"]}
    assert listed == a_jobs
    assert {j["job_id"] for j in api.get("/api/v1/queue/failed", headers=ADMIN).json()["jobs"]} == a_jobs | {b_job}
    only_b = api.get("/api/v1/queue/failed", headers=ADMIN, params={"tenant": "shop-b"}).json()["jobs"]
    assert [j["job_id"] for j in only_b] == [b_job]
    (group,) = api.get("/api/v1/queue/failed/groups", headers=B).json()["groups"]
    assert group["count"] == 1 and group["sample_job_ids"] == [b_job]
    assert api.get("/api/v1/queue/failed/groups", headers=PLAIN).json()["groups"] == []
    retried = api.post("/api/v1/queue/failed/retry", headers=B).json()
    assert (retried["retried"], retried["remaining"]) == (1, 0)
    assert api.get(f"/api/v1/queue/status/{b_job}", headers=B).json()["status"] == "queued"
    assert {j["job_id"] for j in api.get("/api/v1/queue/failed", headers=A).json()["jobs"]} == a_jobs, \
        "B's retry of every failed job left A's"
    a_group = api.get("/api/v1/queue/failed/groups", headers=A).json()["groups"][0]["group_id"]
    assert api.post(f"/api/v1/queue/failed/groups/{a_group}/retry", headers=A).json()["retried"] == 2


def test_clipq_import_with_a_tenants_key_imports_into_that_tenant(tmp_path, serve_api, serve_worker):
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"shop-a": {"api_key": "key-a"}, "shop-b": {"api_key": "key-b"}}))
    url = serve_api(allow_anonymous=False, tenants_file=str(path))
    serve_worker()
    (tmp_path / "1.jpg").write_bytes(jpeg(1))
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("product_id,name,image_path\nsku-1,imported one,1.jpg\n")
    run = clipq_import(catalog, "--api", url, "--api-key", "key-a", "--wait", "--poll", 0.2)
    assert run.returncode == 0 and "ok=1" in run.stderr, run.stderr
    assert httpx.get(f"{url}/api/v1/products/sku-1", headers=A, timeout=30).json()["name"] == "imported one"
    assert httpx.get(f"{url}/api/v1/products/sku-1", headers=B, timeout=30).status_code == 404
    refused = clipq_import(catalog, "--api", url, "--api-key", "nope")
    assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr


@pytest.mark.parametrize("shards", [1, 3])
def test_versions_are_per_tenant_product(make_client, tmp_path, run_burst, r, namespace, shards):
    """A's second upload of p1 supersedes its first; B's p1, uploaded last, supersedes neither;
    with QUEUE_SHARDS, each tenant's product on the shard of its own key."""
    from batcher.queue.keys import product_shard, shard_keys

    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"shop-a": {"api_key": "key-a"}, "shop-b": {"api_key": "key-b"}}))
    api = make_client(allow_anonymous=False, tenants_file=str(path), queue_shards=shards)
    first, second = put(api, A, "p1", 1, "a old"), put(api, A, "p1", 2, "a new")
    other = put(api, B, "p1", 3, "b")
    run_burst(queue_shards=shards)
    status = {j: api.get(f"/api/v1/queue/status/{j}", headers=h).json()["status"]
              for j, h in ((first, A), (second, A), (other, B))}
    assert status == {first: "superseded", second: "completed", other: "completed"}
    keys = shard_keys(namespace, shards)
    for key in ("shop-a/p1", "shop-b/p1"):
        assert r.hexists(keys[product_shard(key, shards)].versions, key)
    assert not any(r.hexists(k.versions, "p1") for k in keys)


def test_a_tenants_vectors_are_never_reused_for_another(api, run_burst):
    """The same bytes: reused within a tenant, embedded again for another (nor a twin of its batch),
    so a job's outcome never tells whether another tenant holds a photo."""
    def outcome(job_id, headers):
        return api.get(f"/api/v1/queue/status/{job_id}", headers=headers).json()["outcome"]

    first = put(api, A, "p1", 7, "a")
    run_burst()
    same_a, same_b = put(api, A, "p2", 7, "a2"), put(api, B, "q1", 7, "b")
    twin_b = put(api, B, "q2", 8, "b2")
    twin_a = put(api, A, "p3", 8, "a3")
    run_burst()
    assert outcome(first, A) == "embedded" and outcome(same_a, A) == "reused"
    assert outcome(same_b, B) == "embedded"
    assert (outcome(twin_b, B), outcome(twin_a, A)) == ("embedded", "embedded"), "one batch, two tenants: no twins"


def test_near_duplicates_pair_only_a_tenants_own_photos(api, run_burst, serve_worker):
    """The same picture in two tenants: neither job lists the other's photo, nor does either
    tenant's duplicates page; within a tenant the pair is found (one batch, then a later one)."""
    from test_duplicates import REAL, variant

    photo = (REAL / "astronaut.png").read_bytes()
    first_a = put(api, A, "a1", 0, "a", data=photo)
    run_burst()
    first_b = put(api, B, "b1", 0, "b", data=variant("astronaut.png"))
    second_a = put(api, A, "a2", 0, "a2", data=variant("astronaut.png", scale=0.6))
    run_burst()

    def near(job_id, headers):
        body = api.get(f"/api/v1/queue/status/{job_id}", headers=headers).json()
        assert body["status"] == "completed", body
        return [(n["product_id"], n["photo_index"]) for n in body["near_duplicates"]]

    assert near(first_a, A) == [] and near(first_b, B) == [], "another tenant's photo is not a near duplicate"
    assert near(second_a, A) == [("a1", 0)]
    serve_worker()

    def pairs(headers):
        resp = api.get("/api/v1/duplicates", headers=headers)
        assert resp.status_code == 200, resp.text
        return [(p["product_id"], p["duplicate_of"]["product_id"]) for p in resp.json()["pairs"]]

    assert pairs(A) == [("a2", "a1")] and pairs(B) == []


def test_queue_history_is_the_whole_queues_so_a_tenant_gets_no_samples(api, r, namespace):
    """The samples count every tenant's jobs: an admin sees them, a tenant none."""
    r.lpush("{%s}:history" % namespace, json.dumps({"t": int(time.time() * 1000), "pending": 7, "delayed": 0,
                                                     "processing": 0, "completed": 3, "failed": 0}))
    admin = api.get("/api/v1/queue/history", headers=ADMIN).json()
    tenant = api.get("/api/v1/queue/history", headers=A).json()
    assert [s["pending"] for s in admin["samples"]] == [7]
    assert tenant["samples"] == [] and tenant["tenant"] == "shop-a"
