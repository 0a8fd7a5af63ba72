"""The micro-batching worker through real Redis, a real tiny model and embedded Qdrant."""
from __future__ import annotations

import io
import time

from PIL import Image

from conftest import CORPUS, CountingEncoder, count_calls, job_ids_by_status, stored_count, stored_points, upload


def jpeg(seed: int, size=(96, 80)) -> bytes:
    im = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    for x in range(0, size[0], 8):
        im.putpixel((x, (seed * 7 + x) % size[1]), (255, 255, 255))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_64_jobs_with_batch_16_make_4_forward_passes_and_4_upserts(client, start_worker, encoder):
    for i in range(64):
        assert upload(client, None, f"p{i}", data=jpeg(i)).status_code == 202
    counting = CountingEncoder(encoder)
    app = start_worker(encoder_override=counting, worker_batch_size=16, worker_max_wait_ms=1000)
    upserts = count_calls(app.store, "upsert")
    totals = app.run(burst=True)
    assert totals.completed == 64
    assert counting.image_batches == [16, 16, 16, 16]
    assert [len(ids) for ids in upserts] == [16, 16, 16, 16]


def test_lone_job_completes_after_the_window_not_a_poll_interval(client, serve_worker):
    serve_worker(worker_max_wait_ms=300, worker_poll_interval=10)
    time.sleep(0.5)  # the worker is idle, blocked on the queue
    t0 = time.monotonic()
    job_id = upload(client, None, "lone", data=jpeg(1)).json()["job_id"]
    while client.get(f"/api/v1/queue/status/{job_id}").json()["status"] != "completed":
        assert time.monotonic() - t0 < 5, "a lone job waited for a poll interval"
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 3.0, elapsed


def test_corrupt_image_fails_alone(client, run_burst):
    good = [upload(client, None, f"g{i}", data=jpeg(i)).json()["job_id"] for i in range(5)]
    bad = upload(client, CORPUS / "hostile" / "truncated_jpeg.jpg", "bad").json()["job_id"]
    _, totals = run_burst(worker_batch_size=16, worker_max_wait_ms=500)
    assert totals.completed == 5 and totals.failed == 1 and totals.retried == 0
    assert set(job_ids_by_status(client, good).values()) == {"completed"}
    status = client.get(f"/api/v1/queue/status/{bad}").json()
    assert status["status"] == "failed"
    assert status["error_message"].startswith("cannot decode image")
    assert status["retry_count"] == 0  # permanent: no retries


def test_reindexing_a_product_leaves_one_point(client, run_burst):
    for i in range(3):
        upload(client, None, "same-sku", data=jpeg(i), name=f"version {i}")
    app, _ = run_burst()
    upload(client, None, "same-sku", data=jpeg(9), name="version 9")
    run_burst()
    assert stored_count(app.settings) == 1
    assert stored_points(app.settings, ["same-sku"])["same-sku"][0]["name"] == "version 9"


def test_retry_requeues_a_failed_job_and_refuses_a_completed_one(client, run_burst, r, namespace):
    bad = upload(client, CORPUS / "hostile" / "truncated_jpeg.jpg", "bad").json()["job_id"]
    good = upload(client, None, "good", data=jpeg(3)).json()["job_id"]
    run_burst()
    assert job_ids_by_status(client, [bad, good]) == {bad: "failed", good: "completed"}

    failed = client.get("/api/v1/queue/failed").json()["jobs"]
    assert [j["job_id"] for j in failed] == [bad] and failed[0]["error_message"].startswith("cannot decode")

    resp = client.post(f"/api/v1/queue/retry/{bad}")
    assert resp.status_code == 202
    assert resp.json() == {"status": "retrying", "job_id": bad, "message": "Job re-queued for processing"}
    assert client.get(f"/api/v1/queue/status/{bad}").json()["status"] == "queued"
    assert r.llen("{%s}:queue" % namespace) == 1

    again = client.post(f"/api/v1/queue/retry/{bad}")
    assert again.status_code == 409  # already queued: exactly once

    done = client.post(f"/api/v1/queue/retry/{good}")
    assert done.status_code == 409 and done.json()["error"]["code"] == "job_not_failed"
    assert client.post("/api/v1/queue/retry/job-" + "0" * 32).status_code == 404
    assert client.get("/api/v1/queue/failed").json()["jobs"] == []

    _, totals = run_burst()
    assert totals.failed == 1  # it failed again, for the same reason
    stats = client.get("/api/v1/queue/stats").json()["jobs"]
    assert stats == {"queued": 0, "processing": 0, "completed": 1, "failed": 1, "superseded": 0, "total": 2}
