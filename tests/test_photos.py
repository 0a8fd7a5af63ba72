"""Several photos per product (issue 26, item 1): one upload, one job, one version; a point per
photo; the last upload replaces the whole set; through real Redis, the tiny real model and
embedded Qdrant (and qdrant-client's in-process mode for the server store's rules)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from batcher.queue import photos as framing
from batcher.queue.jobs import Job
from batcher.queue.photos import Photo
from batcher.settings import WorkerSettings
from conftest import CountingEncoder, open_engine, stored_count, stored_points
from test_index_by_url import ALLOW_LOCAL, PHOTO, wait_done
from test_reliability import claim_as_dead_worker
from test_versions import settled, status, wait_for
from test_worker import jpeg
from url_server import ImageServer

ROUTE = "/api/v1/index-product-with-image"
TRUNCATED = (Path(__file__).parent / "data" / "corpus" / "hostile" / "truncated_jpeg.jpg").read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(client, product_id: str, images: list[bytes], urls: tuple[str, ...] = (), **fields):
    files = [("image_file", (f"{i}.jpg", data, "application/octet-stream")) for i, data in enumerate(images)]
    form = {"product_id": product_id, "name": f"Product {product_id}", "image_url": list(urls), **fields}
    return client.post(ROUTE, data=form, files=files)


def queued(client, product_id: str, images: list[bytes]) -> dict:
    resp = upload(client, product_id, images)
    assert resp.status_code == 202, resp.text
    return resp.json()


def photos_of(client, product_id: str) -> list[dict]:
    resp = client.get(f"/api/v1/products/{product_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()["photos"]


def listed(images: list[bytes]) -> list[dict]:
    return [{"index": i, "image_sha256": sha(data), "source": "upload"} for i, data in enumerate(images)]


# -- the image key's framing --------------------------------------------------------------------
def test_framing_keeps_one_photo_raw_and_several_in_order():
    a, b, c = jpeg(1), jpeg(2), b""
    assert framing.pack([a]) == a and framing.unpack(a) == [a], "one photo reads as before photos existed"
    assert framing.pack([]) == b"" and framing.unpack(b"") == [] and framing.unpack(None) == []
    blob = framing.pack([a, b, c])
    assert blob.startswith(framing.MAGIC) and len(blob) == len(framing.MAGIC) + 12 + len(a) + len(b)
    assert framing.unpack(blob) == [a, b, c]
    with pytest.raises(framing.FramingError, match="photo 1 is cut off"):
        framing.unpack(blob[:len(framing.MAGIC) + 4 + len(a) + 4 + 10])


def test_an_error_names_the_photo_and_its_field():
    photos = [Photo(0, "", "upload"), Photo(1, "", "upload"), Photo(2, "", "https://x/a.jpg"), Photo(3, "", "upload")]
    assert [framing.label(photos, i) for i in range(4)] == [
        "photo 0 (image_file #1)", "photo 1 (image_file #2)", "photo 2 (image_url #1)", "photo 3 (image_file #3)"]


# -- the API ------------------------------------------------------------------------------------
def test_over_the_photo_limit_is_413_naming_the_limit(client, r):
    resp = upload(client, "p", [jpeg(i) for i in range(11)])
    assert resp.status_code == 413 and resp.json()["error"] == {
        "code": "too_many_photos", "field": "image_file",
        "message": "the upload has 11 photos; the limit is MAX_PHOTOS_PER_PRODUCT=10"}
    mixed = upload(client, "p", [jpeg(1)] * 9, urls=("https://example.com/a.jpg", "https://example.com/b.jpg"))
    assert mixed.status_code == 413 and "MAX_PHOTOS_PER_PRODUCT=10" in mixed.json()["error"]["message"]
    assert upload(client, "p", [jpeg(i) for i in range(10)]).status_code == 202


def test_a_bad_photo_is_refused_naming_it(client):
    resp = upload(client, "p", [jpeg(1), jpeg(2), b"not an image"])
    assert resp.status_code == 415
    assert resp.json()["error"]["message"].startswith("photo 2 (image_file #3): the file is not a JPEG")
    url = upload(client, "p", [jpeg(1)], urls=("ftp://example.com/a.jpg",))
    assert url.status_code == 422 and url.json()["error"]["message"].startswith("photo 1 (image_url #1): image_url:")


def test_each_photo_obeys_the_size_limit_and_the_image_key_holds_them_all(make_client, r, namespace):
    small, big = jpeg(1), jpeg(2, (400, 300))
    client = make_client(max_upload_bytes=len(small))
    resp = upload(client, "p", [small, big])
    assert resp.status_code == 413 and resp.json()["error"] == {
        "code": "payload_too_large", "field": "image_file",
        "message": f"photo 1 (image_file #2): the image is over the limit of {len(small)} bytes"}
    job_id = queued(client, "p", [small, small])["job_id"]
    assert len(r.get(f"{{{namespace}}}:image:{job_id}")) == len(framing.MAGIC) + 2 * (4 + len(small))
    assert client.get("/api/v1/queue/stats").json()["image_bytes"] == len(framing.MAGIC) + 2 * (4 + len(small))


def test_a_one_photo_upload_is_queued_as_before(client, r, namespace):
    job_id = queued(client, "p", [jpeg(1)])["job_id"]
    record = {k.decode(): v for k, v in r.hgetall(f"{{{namespace}}}:job:{job_id}").items()}
    assert record["image_sha256"].decode() == sha(jpeg(1)) and "photos" not in record
    assert r.get(f"{{{namespace}}}:image:{job_id}") == jpeg(1), "one photo stays its raw bytes"


# -- through a worker ---------------------------------------------------------------------------
def test_the_last_upload_replaces_the_photo_set_and_a_delete_removes_all(client, serve_worker):
    app = serve_worker()
    three = [jpeg(1), jpeg(2), jpeg(3)]
    first = queued(client, "p", three)
    wait_for(lambda: settled(client), "the first upload")
    assert status(client, first["job_id"]) == "completed"
    assert photos_of(client, "p") == listed(three) and app.store.count() == 3
    product = client.get("/api/v1/products/p").json()
    assert product["image_sha256"] == sha(jpeg(1)) and product["version"] == first["version"]

    two = [jpeg(4), jpeg(2)]
    second = queued(client, "p", two)
    wait_for(lambda: settled(client), "the second upload")
    assert status(client, second["job_id"]) == "completed"
    assert photos_of(client, "p") == listed(two) and app.store.count() == 2, "photo 2 was dropped"

    assert client.delete("/api/v1/products/p").status_code == 200
    assert client.get("/api/v1/products/p").status_code == 404 and app.store.count() == 0


def test_one_bad_photo_fails_the_job_naming_it_and_changes_no_point(client, serve_worker):
    app = serve_worker()
    good = [jpeg(1), jpeg(2)]
    queued(client, "p", good)
    wait_for(lambda: settled(client), "the first upload")
    before = client.get("/api/v1/products/p").json()

    bad = queued(client, "p", [jpeg(5), TRUNCATED, jpeg(6)])  # passes the API, fails to decode
    wait_for(lambda: settled(client), "the bad upload")
    job = client.get(f"/api/v1/queue/status/{bad['job_id']}").json()
    assert job["status"] == "failed" and job["error_message"].startswith("photo 1 (image_file #2): "), job
    assert client.get("/api/v1/products/p").json() == before and app.store.count() == 2


def test_files_and_urls_in_one_upload_and_a_url_that_fails_names_its_photo(client, serve_worker):
    with ImageServer(PHOTO) as server:
        ok = upload(client, "p", [jpeg(1)], urls=(server.url("/photo"),)).json()
        bad = upload(client, "q", [], urls=(server.url("/photo"), server.url("/missing"))).json()
        serve_worker(**ALLOW_LOCAL)
        assert wait_done(client, ok["job_id"])["status"] == "completed"
        failed = wait_done(client, bad["job_id"])
        assert client.post(f"/api/v1/queue/retry/{bad['job_id']}").status_code == 202, "fetched again, no image kept"
        assert wait_done(client, bad["job_id"])["status"] == "failed" and server.hits["/missing"] == 2
    assert failed["error_message"] == "photo 1 (image_url #2): cannot fetch image_url: the server answered HTTP 404"
    assert photos_of(client, "p") == [{"index": 0, "image_sha256": sha(jpeg(1)), "source": "upload"},
                                      {"index": 1, "image_sha256": sha(PHOTO), "source": server.url("/photo")}]
    assert client.get("/api/v1/products/q").status_code == 404


def test_a_reaped_older_set_ends_superseded_and_brings_back_no_photo(client, worker_settings, run_burst, r,
                                                                      tmp_path):
    old = queued(client, "p", [jpeg(1), jpeg(2), jpeg(3)])
    claim_as_dead_worker(worker_settings(), r, "dead", 1)  # holds the older upload, then dies
    new = queued(client, "p", [jpeg(4), jpeg(5)])
    run_burst()  # reaps the old job: it runs after the new one, or beside it
    assert (status(client, old["job_id"]), status(client, new["job_id"])) == ("superseded", "completed")
    settings = WorkerSettings(qdrant_path=str(tmp_path / "qdrant"))
    assert stored_count(settings) == 2 and stored_points(settings, ["p"])["p"][0]["image_sha256"] == sha(jpeg(4))


def test_unchanged_photos_skip_the_model_photo_by_photo(client, start_worker, encoder):
    def burst() -> tuple[list[int], dict]:
        counting = CountingEncoder(encoder)
        start_worker(encoder_override=counting).run(burst=True)
        return counting.image_batches

    first = queued(client, "p", [jpeg(1), jpeg(2)])
    assert burst() == [2]  # one forward pass for the job's two photos
    changed = queued(client, "p", [jpeg(1), jpeg(3)])
    assert burst() == [1], "photo 0 is unchanged: only photo 1 reaches the model"
    same = queued(client, "p", [jpeg(1), jpeg(3)])
    assert burst() == []
    outcomes = [client.get(f"/api/v1/queue/status/{j['job_id']}").json()["outcome"] for j in (first, changed, same)]
    assert outcomes == ["embedded", "embedded", "unchanged"]


# -- the store's rules, both engines ------------------------------------------------------------
def photo_set(version: int, count: int, product_id: str = "p") -> list[Job]:
    photos = tuple(Photo(i, f"sha-{version}-{i}") for i in range(count))
    return [Job(f"job-{version}", product_id, "n", "", {}, p.image_sha256, 0, 0, version=version, photos=photos,
                photo_index=p.index) for p in photos]


def stored_photos(store) -> list[tuple[int, int]]:
    view = store.get("p")
    return [] if view is None else [(p["index"], int(p["image_sha256"].split("-")[1])) for p in view["photos"]]


@pytest.mark.parametrize("engine", ["edge", "server"])
def test_a_stale_photo_set_never_brings_back_a_dropped_photo(tmp_path, engine):
    """A retry of an older upload of 3 photos reaches the store after a newer one of 2: the
    conditional upsert refuses photos 0 and 1, but photo 2 is absent: it must not be inserted."""
    store = open_engine(engine, tmp_path / "q", 4)
    try:
        store.upsert(photo_set(5, 3), np.ones((3, 4)))
        store.upsert(photo_set(7, 2), np.ones((2, 4)))
        assert stored_photos(store) == [(0, 7), (1, 7)], "the newer set dropped photo 2"
        store.upsert(photo_set(5, 3), np.ones((3, 4)))  # the stale retry
        assert stored_photos(store) == [(0, 7), (1, 7)] and store.count() == 2
        store.upsert(photo_set(9, 1) + photo_set(3, 2, "q"), np.ones((3, 4)))
        assert stored_photos(store) == [(0, 9)] and store.count() == 3
        assert store.delete("p", 10) and store.get("p") is None and store.count() == 2
    finally:
        store.close()


def test_a_job_record_lists_its_photos(client, r, namespace):
    job_id = queued(client, "p", [jpeg(1), jpeg(2)])["job_id"]
    record = {k.decode(): v.decode(errors="replace") for k, v in r.hgetall(f"{{{namespace}}}:job:{job_id}").items()}
    assert [p["image_sha256"] for p in json.loads(record["photos"])] == [sha(jpeg(1)), sha(jpeg(2))]
    assert framing.unpack(r.get(f"{{{namespace}}}:image:{job_id}")) == [jpeg(1), jpeg(2)]


# -- the stages' pure parts ---------------------------------------------------------------------
def test_a_store_split_never_cuts_a_job_and_outcomes_join_per_job():
    from batcher.stages.finish import halfway
    from batcher.stages.photos import Outcomes

    a, b, c = photo_set(1, 2, "a"), photo_set(2, 3, "b"), photo_set(3, 1, "c")
    assert halfway(a + b + c) == 2 and halfway(b + c) == 3 and halfway(a + c) == 2
    results = Outcomes()
    results.done(a[0], "unchanged"), results.done(a[1], "reused")
    results.again(b[0], "vector store unavailable"), results.fail(b[2], "cannot decode image: x")
    results.done(c[0], "unchanged")
    jobs, outcomes = results.joined(lambda job, error: ("retry", job.job_id, error))
    assert [j.product_id for j in jobs] == ["a", "b", "c"]
    assert [(o.outcome, o.kind) for o in outcomes[::2]] == [("completed", "reused"), ("completed", "unchanged")]
    assert (outcomes[1].outcome, outcomes[1].error) == ("failed", "photo 2 (image_file #3): cannot decode image: x")


def test_an_oom_on_photos_lowers_the_ceiling_in_jobs(client, start_worker, encoder, caplog):
    for i in range(4):
        queued(client, f"p{i}", [jpeg(10 * i + k) for k in range(4)])  # 4 jobs, 16 images
    counting = CountingEncoder(encoder, oom_above=8)
    app = start_worker(encoder_override=counting, worker_batch_size=16, worker_max_wait_ms=1000)
    totals = app.run(burst=True)
    assert totals.completed == 4 and sum(counting.image_batches) == 16 and max(counting.image_batches) <= 8
    lowered = [r.getMessage() for r in caplog.records if "out of memory on a batch" in r.getMessage()]
    assert lowered[0].startswith("out of memory on a batch of 16 images: splitting, ceiling 2 jobs"), lowered
