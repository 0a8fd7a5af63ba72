"""Index and search by image_url: API -> Redis -> a real worker fetching from a local HTTP server."""
from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from conftest import corpus_files
from url_server import ImageServer

from batcher.queue.keys import Keys

PHOTO = next(p for p in corpus_files("index") if p.suffix == ".jpg").read_bytes()
# the tests' server is on 127.0.0.1: allowed on purpose; short timeouts keep the slow cases short
ALLOW_LOCAL = {"image_url_allowed_networks": "127.0.0.1/32", "max_upload_bytes": 300_000,
               "image_url_read_timeout": 0.4, "image_url_total_timeout": 2}


@pytest.fixture
def server():
    with ImageServer(PHOTO, slow_s=1.5) as s:
        yield s


def index_url(client, url: str, product_id: str, **files):
    form = {"product_id": product_id, "name": f"Product {product_id}", "image_url": url}
    return client.post("/api/v1/index-product-with-image", data=form, files=files or None)


def wait_done(client, job_id: str) -> dict:
    for _ in range(60):
        status = client.get(f"/api/v1/queue/status/{job_id}", params={"wait": 5}).json()
        if status["status"] in ("completed", "failed"):
            return status
    raise AssertionError(f"{job_id} did not finish: {status}")


def refused(resp, field: str) -> bool:
    return resp.status_code == 422 and resp.json()["error"]["field"] == field


def test_an_image_file_or_an_image_url_is_needed_and_each_url_checked(client):
    photo = {"image_file": ("a.jpg", PHOTO, "image/jpeg")}
    assert refused(client.post("/api/v1/index-product-with-image", data={"product_id": "p", "name": "n"}),
                   "image_file")
    for bad in ("ftp://shop.example/a.jpg", "file:///etc/passwd", "http://u:p@shop.example/a.jpg", "not a url"):
        resp = index_url(client, bad, "sku-1")
        assert refused(resp, "image_url"), (bad, resp.text)
    assert refused(client.post("/api/v1/search/image", data={"image_url": "http://x.example/a.jpg"}, files=photo),
                   "image_url")
    assert client.get("/api/v1/queue/stats").json()["jobs"]["total"] == 0
    # both: two photos of one product, the file first (tests/test_photos.py)
    assert index_url(client, "http://shop.example/a.jpg", "sku-1", **photo).status_code == 202


def test_a_url_job_stores_the_url_and_no_image(client, r, namespace):
    resp = index_url(client, "http://shop.example/a.jpg", "sku-1")
    assert resp.status_code == 202, resp.text
    job_id, keys = resp.json()["job_id"], Keys(namespace)
    assert r.hget(keys.job(job_id), "image_url") == b"http://shop.example/a.jpg"
    assert not r.exists(keys.image(job_id))


def test_default_settings_refuse_private_addresses(client, run_burst, server):
    jobs = {url: index_url(client, url, f"sku-{i}").json()["job_id"] for i, url in enumerate(
        [server.url("/photo"), "http://10.0.0.1/a.jpg", "http://169.254.169.254/latest/meta-data/"])}
    run_burst()
    reasons = [wait_done(client, j)["error_message"] for j in jobs.values()]
    assert reasons == ["cannot fetch image_url: the host's address is not allowed (loopback)",
                       "cannot fetch image_url: the host's address is not allowed (private)",
                       "cannot fetch image_url: the host's address is not allowed (cloud metadata)"]
    assert sum(server.hits.values()) == 0  # refused before any connection


def test_index_by_url_end_to_end(client, serve_worker, server):
    paths = {"ok": "/photo", "hops": "/hop/3", "flaky": "/flaky", "missing": "/missing", "slow": "/slow",
             "huge": "/huge", "text": "/text", "elsewhere": "/elsewhere", "too-many-hops": "/hop/4"}
    jobs = {sku: index_url(client, server.url(p), sku).json()["job_id"] for sku, p in paths.items()}
    serve_worker(**ALLOW_LOCAL)
    done = {sku: wait_done(client, job_id) for sku, job_id in jobs.items()}
    for sku in ("ok", "hops", "flaky"):
        assert done[sku]["status"] == "completed", done[sku]
    assert done["flaky"]["retry_count"] == 1 and server.hits["/flaky"] == 2  # 500, then retried: 200
    failed = {sku: s["error_message"] for sku, s in done.items() if s["status"] == "failed"}
    prefix = "cannot fetch image_url: "
    assert failed == {
        "missing": prefix + "the server answered HTTP 404",
        "slow": prefix + "timed out (gave up after 3 attempts)",
        "huge": prefix + "the body is over the limit of 300000 bytes",
        "text": prefix + "the body is not a JPEG, PNG or WebP image (judged by its content)",
        "elsewhere": prefix + "the host's address is not allowed (loopback)",
        "too-many-hops": prefix + "more than 3 redirects"}
    assert server.hits["/missing"] == 1 and server.hits["/slow"] == 3  # a 4xx at once; a timeout retried
    product = client.get("/api/v1/products/ok").json()
    assert product["image_sha256"] == hashlib.sha256(PHOTO).hexdigest()

    # a failed URL job can be retried by hand: the URL is fetched again (no stored image needed)
    assert client.post(f"/api/v1/queue/retry/{jobs['missing']}").status_code == 202
    assert wait_done(client, jobs["missing"])["status"] == "failed" and server.hits["/missing"] == 2

    _search_by_url(client, server)


def _search_by_url(client, server) -> None:
    by_file = client.post("/api/v1/search/image", files={"image_file": ("q.jpg", PHOTO, "image/jpeg")}).json()
    resp = client.post("/api/v1/search/image", data={"image_url": server.url("/hop/2"), "limit": "3"})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert results[0]["score"] > 0.99 and results[0]["score"] == pytest.approx(by_file["results"][0]["score"])
    assert {r["product_id"] for r in results} == {"ok", "hops", "flaky"}
    missing = client.post("/api/v1/search/image", data={"image_url": server.url("/missing")})
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "image_url_unavailable"
    assert missing.json()["error"]["message"] == "cannot fetch image_url: the server answered HTTP 404"
    slow = client.post("/api/v1/search/image", data={"image_url": server.url("/slow")})
    assert slow.status_code == 502 and slow.json()["error"]["message"] == "cannot fetch image_url: timed out"
    text = client.post("/api/v1/search/image", data={"image_url": server.url("/text")})
    assert text.status_code == 422 and "not a JPEG, PNG or WebP" in text.json()["error"]["message"]


def test_clipq_import_sends_image_url_rows(tmp_path, serve_api, serve_worker, server):
    from test_import import clipq_import, failures

    catalog = tmp_path / "catalog.jsonl"
    rows = [{"product_id": "a", "name": "A", "image_url": server.url("/photo")},
            {"product_id": "b", "name": "B", "image_url": server.url("/hop/1")},
            {"product_id": "gone", "name": "G", "image_url": server.url("/missing")}]
    catalog.write_text("".join(json.dumps(row) + "\n" for row in rows))
    api = serve_api()
    serve_worker(**ALLOW_LOCAL)
    run = clipq_import(catalog, "--api", api, "--wait", "--failures", tmp_path / "f.csv", "--poll", 0.2)
    assert run.returncode == 1, run.stderr
    assert [(f["product_id"], f["reason"]) for f in failures(tmp_path / "f.csv")] == [
        ("gone", "cannot fetch image_url: the server answered HTTP 404")]
    assert httpx.get(f"{api}/api/v1/queue/stats").json()["jobs"]["completed"] == 2
