"""Near-duplicate photos through the real API, worker, Redis and embedded store: the job
status lists the other products' photos that are the same picture; GET /api/v1/duplicates
pages through the pairs."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from conftest import upload

REAL = Path(__file__).parent / "data" / "corpus" / "real"


def variant(name: str, scale: float = 0.5, quality: int = 40) -> bytes:
    """The same picture resized and re-encoded as a JPEG."""
    im = Image.open(REAL / name).convert("RGB")
    im = im.resize((round(im.width * scale), round(im.height * scale)))
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    return out.getvalue()


def status(client, job_id: str) -> dict:
    body = client.get(f"/api/v1/queue/status/{job_id}").json()
    assert body["status"] == "completed", body
    return body


def index(client, run_burst, products: dict[str, bytes]) -> dict[str, str]:
    """Upload each product (one burst per product: each finds those stored before it)."""
    jobs = {}
    for product_id, data in products.items():
        jobs[product_id] = upload(client, None, product_id, data).json()["job_id"]
        run_burst()
    return {p: status(client, j)["near_duplicates"] for p, j in jobs.items()}


def test_the_same_photo_resized_and_reencoded_lists_the_first_product(client, run_burst):
    near = index(client, run_burst, {"sku-a": (REAL / "astronaut.png").read_bytes(),
                                     "sku-b": variant("astronaut.png"),
                                     "sku-c": (REAL / "coffee.png").read_bytes()})
    assert near["sku-a"] == []  # nothing stored before it
    assert [(n["product_id"], n["photo_index"]) for n in near["sku-b"]] == [("sku-a", 0)]
    assert 0 <= near["sku-b"][0]["distance"] <= 4
    assert near["sku-c"] == []  # an unrelated photo


def test_photos_of_one_batch_find_each_other_and_the_same_bytes_count(client, run_burst):
    data = (REAL / "chelsea.png").read_bytes()
    jobs = [upload(client, None, p, d).json()["job_id"]
            for p, d in [("cat-1", data), ("cat-2", variant("chelsea.png")), ("cat-3", data)]]
    run_burst()
    near = [status(client, j)["near_duplicates"] for j in jobs]
    assert near[0] == []
    assert [n["product_id"] for n in near[1]] == ["cat-1"]
    assert [(n["product_id"], n["distance"]) for n in near[2]][0] == ("cat-1", 0)  # same bytes: reused, distance 0
    assert {n["product_id"] for n in near[2]} == {"cat-1", "cat-2"}


def test_a_photo_whose_vector_is_reused_is_hashed_too(client, run_burst):
    data = (REAL / "coffee.png").read_bytes()
    jobs = []
    for product_id in ("mug-1", "mug-2"):  # the same bytes in a later batch: no decode, the vector reused
        jobs.append(upload(client, None, product_id, data).json()["job_id"])
        run_burst()
    second = status(client, jobs[1])
    assert second["outcome"] == "reused"
    assert second["near_duplicates"] == [{"product_id": "mug-1", "photo_index": 0, "distance": 0}]


def test_reuploading_a_product_does_not_list_itself(client, run_burst):
    near = index(client, run_burst, {"sku-a": (REAL / "rocket.jpg").read_bytes()})
    near |= index(client, run_burst, {"sku-a": variant("rocket.jpg")})
    assert near["sku-a"] == []


def test_max_listed_zero_looks_nothing_up(client, run_burst):
    job = upload(client, REAL / "camera.png", "sku-x").json()["job_id"]
    run_burst(worker_duplicate_max_listed=0)
    assert status(client, job)["near_duplicates"] is None


def all_pairs(client, limit: int) -> list[tuple[str, str, int]]:
    """Every pair, following next_cursor from the first page."""
    pairs, cursor = [], ""
    for _ in range(50):
        resp = client.get("/api/v1/duplicates", params={"cursor": cursor, "limit": limit})
        assert resp.status_code == 200, resp.text
        page = resp.json()
        pairs += [(p["product_id"], p["duplicate_of"]["product_id"], p["distance"]) for p in page["pairs"]]
        if page["next_cursor"] is None:
            return pairs
        cursor = page["next_cursor"]
    raise AssertionError("the pages never ended")


@pytest.fixture
def paired(client, serve_worker):
    """Two pairs (b is a's photo resized, d is c's) and an unrelated product, stored one by one."""
    from test_search import wait_completed

    serve_worker()
    for product_id, data in [("a", (REAL / "astronaut.png").read_bytes()), ("b", variant("astronaut.png")),
                             ("c", (REAL / "chelsea.png").read_bytes()), ("d", variant("chelsea.png", 0.7, 60)),
                             ("e", (REAL / "coffee.png").read_bytes())]:
        wait_completed(client, [upload(client, None, product_id, data).json()["job_id"]])


def test_the_duplicates_endpoint_pages_through_the_pairs(client, paired):
    one_by_one = all_pairs(client, limit=1)
    assert sorted((b, a) for b, a, _ in one_by_one) == [("b", "a"), ("d", "c")]
    assert sorted(all_pairs(client, limit=100)) == sorted(one_by_one)


def test_a_deleted_or_reuploaded_product_leaves_the_pairs(client, paired):
    from test_search import wait_completed

    assert client.delete("/api/v1/products/a").status_code == 200
    assert [(b, a) for b, a, _ in all_pairs(client, limit=10)] == [("d", "c")]
    # c uploaded again with another photo: d's pair named c's old photo, so it goes
    wait_completed(client, [upload(client, REAL / "coffee.png", "c").json()["job_id"]])
    assert [(b, a) for b, a, _ in all_pairs(client, limit=10)] == [("c", "e")]


@pytest.mark.parametrize("params", [{"cursor": "not-a-cursor"}, {"limit": 0}, {"limit": 101}])
def test_a_bad_cursor_or_limit_is_a_422_naming_it(client, params):
    resp = client.get("/api/v1/duplicates", params=params)
    assert resp.status_code == 422
    assert "error" in resp.json() and resp.json()["error"]["field"] in ("cursor", "limit"), resp.json()
