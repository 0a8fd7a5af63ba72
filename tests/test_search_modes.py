"""Search modes through the API and a live worker (random CLIP weights, so ranking is checked
with what does not depend on them: exact words, and a product's own photos)."""
from __future__ import annotations

import json

import pytest

from conftest import corpus_files, upload
from test_search import wait_completed

NAMES = ["Red coffee cup", "Blue tea pot", "Green mug", "Steel kettle", "Glass jar", "Oak tray", "Linen napkin",
         "Copper pan"]


@pytest.fixture
def shop(client, serve_worker):
    """Products with words to find: p2 has the SKU QX-9071, p5 the brand Pikolo in its description."""
    serve_worker(worker_batch_size=32, worker_max_wait_ms=200)
    jobs = []
    for i, path in enumerate(corpus_files("index")[:len(NAMES)]):
        meta = {"shop": "a" if i % 2 == 0 else "b", **({"sku": "QX-9071"} if i == 2 else {})}
        resp = upload(client, path, f"p{i}", name=NAMES[i], metadata=json.dumps(meta),
                      description="Hand made by Pikolo" if i == 5 else "")
        jobs.append(resp.json()["job_id"])
    wait_completed(client, jobs)


def search(client, **body):
    resp = client.post("/api/v1/search", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()["results"]


def ids(results) -> list[str]:
    return [r["product_id"] for r in results]


def test_keyword_mode_finds_a_sku_and_a_brand_first(client, shop):
    assert ids(search(client, text="qx-9071", mode="keyword")) == ["p2"]
    assert ids(search(client, text="pikolo", mode="keyword")) == ["p5"]
    assert ids(search(client, text="pikolo qx-9071", mode="keyword", filter={"shop": "a"})) == ["p2"]
    assert search(client, text="zeppelin", mode="keyword") == []


def test_hybrid_is_the_default_and_keeps_the_exact_match(client, shop):
    for body in ({"text": "QX-9071"}, {"text": "QX-9071", "mode": "hybrid"}):
        results = search(client, limit=3, **body)
        assert "p2" in ids(results) and len(results) == 3
    vector = search(client, text="QX-9071", mode="vector", limit=len(NAMES))
    assert len(vector) == len(NAMES) and all(-1 <= r["score"] <= 1 for r in vector)
    assert all(r["photo_index"] == 0 for r in vector)


def test_more_like_this_leaves_the_product_out(client, shop):
    results = search(client, like="p0", limit=len(NAMES))
    assert "p0" not in ids(results) and len(results) == len(NAMES) - 1 and len(set(ids(results))) == len(results)
    in_b = search(client, like="p0", filter={"shop": "b"}, limit=10)
    assert set(ids(in_b)) == {f"p{i}" for i in range(1, len(NAMES), 2)}
    missing = client.post("/api/v1/search", json={"like": "nope"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "product_not_found"


@pytest.mark.parametrize("body, field, words", [
    ({"text": "cup", "mode": "fuzzy"}, "mode", "'vector', 'keyword' or 'hybrid'"),
    ({"text": "cup", "like": "p0"}, None, "exactly one of text"),
    ({"limit": 3}, None, "exactly one of text"),
    ({"like": "p0", "mode": "keyword"}, None, "mode is for a search by text"),
    ({"like": "bad id!"}, "like", "product_id must be"),
])
def test_bad_modes_and_queries_get_a_422_that_says_why(client, body, field, words):
    resp = client.post("/api/v1/search", json=body)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["field"] == field and words in error["message"], error
