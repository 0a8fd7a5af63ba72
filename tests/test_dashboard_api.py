"""The endpoints behind the dashboard, through real Redis and a real worker: live workers,
queue history, failures grouped by error, retry of a group, retry of all; and the pages."""
from __future__ import annotations

import json
import time

import pytest

from api.failures import group_failures, normalise
from batcher.queue import history
from batcher.queue.keys import Keys
from batcher.queue.scripts import Scripts
from batcher.status import RateWindow
from conftest import CORPUS, upload
from test_worker import jpeg

TRUNCATED = CORPUS / "hostile" / "truncated_jpeg.jpg"  # passes the API's probe, fails the worker's decode


# -- pure units ------------------------------------------------------------------------------
def test_normalise_strips_what_differs_between_jobs():
    a = normalise("image is 9000x9000, over the limit of 40000000 pixels")
    assert a == normalise("image is 640x480, over the limit of 1000 pixels") == \
        "image is <n>x<n>, over the limit of <n> pixels"
    assert normalise("no job 'job-0123456789abcdef0123456789abcdef'") == normalise("no job 'x'")
    assert normalise("at 0x7f3a2b9c and 6f1c9e2d-1b7a-4c1e-9f00-0a1b2c3d4e5f") == "at <hex> and <uuid>"
    assert normalise("cannot decode image") != normalise("vector store unavailable")
    assert normalise("") == normalise(None) == "(no error message)"


def test_groups_count_first_last_and_samples_largest_first():
    failures = [("j1", 1000, "timed out after 3s"), ("j2", 3000, "timed out after 5s"),
                ("j3", 2000, "bad image"), ("j4", 500, "timed out after 1s")]
    timeouts, bad = group_failures(failures)
    assert (timeouts.error, timeouts.count, timeouts.first_seen_ms, timeouts.last_seen_ms) == \
        ("timed out after <n>s", 3, 500, 3000)
    assert timeouts.job_ids == ["j2", "j1", "j4"] and timeouts.example == "timed out after 5s"
    assert (bad.count, bad.job_ids) == (1, ["j3"]) and bad.id != timeouts.id


def test_rate_window_counts_the_last_minute_only():
    w = RateWindow(60)
    assert w.add(0, 0) == 0.0
    assert w.add(30, 300) == 10.0
    assert w.add(60, 600) == 10.0
    assert w.add(120, 600) == 0.0  # nothing done in the last minute: the old burst is forgotten


def test_history_series_rates_from_the_completed_counter():
    raw = [json.dumps({"t": t, "pending": 0, "delayed": 0, "processing": 0, "completed": c, "failed": 0})
           for t, c in ((0, 0), (5000, 50), (10000, 60))]
    got = history.series(raw, since_ms=5000)
    assert [s["t"] for s in got] == [5000, 10000]
    assert [s["completed_per_s"] for s in got] == [10.0, 2.0]


# -- queue history in Redis ------------------------------------------------------------------
def test_history_keeps_one_sample_per_gap_bounded_and_expiring(r, namespace, client):
    keys, scripts = Keys(namespace), Scripts(r)
    assert scripts.run(history.sample(keys)) == 1
    assert scripts.run(history.sample(keys)) == 0  # a second worker's beat within the gap adds nothing
    assert r.llen(keys.history) == 1 and 0 < r.ttl(keys.history) <= history.TTL_S
    last = json.loads(r.lindex(keys.history, 0))
    fake = [json.dumps({**last, "t": last["t"] - 10_000 * (i + 1)}) for i in range(history.MAX_SAMPLES + 5)]
    r.rpush(keys.history, *fake)
    r.lset(keys.history, 0, json.dumps({**last, "t": last["t"] - history.SAMPLE_GAP_MS}))
    assert scripts.run(history.sample(keys)) == 1
    assert r.llen(keys.history) == history.MAX_SAMPLES
    body = client.get("/api/v1/queue/history?minutes=15").json()
    assert body["minutes"] == 15 and 80 <= len(body["samples"]) <= 92  # one sample per 10 s, 15 min


def test_a_serving_worker_writes_history_and_publishes_its_status(client, serve_worker, namespace):
    upload(client, None, "p1", data=jpeg(1))
    app = serve_worker()
    deadline = time.monotonic() + 30
    while client.get("/api/v1/queue/stats").json()["jobs"]["completed"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    samples = client.get("/api/v1/queue/history").json()["samples"]
    assert samples and {"pending", "delayed", "processing", "completed", "failed"} <= samples[-1].keys()
    (w,) = client.get("/api/v1/workers").json()["workers"]
    assert w["worker_id"] == app.settings.worker_id
    assert (w["device"], w["model"], w["precision"]) == ("cpu", "clipq-tiny", "fp32")
    assert w["batch_ceiling"] == w["max_batch_size"] == 16
    assert w["query_lane_alive"] is True and 0 <= w["heartbeat_age_s"] < 30
    assert w["jobs_per_s"] >= 0


def test_workers_lists_only_live_workers(client, r, namespace, worker_settings):
    from batcher.queue.consumer import JobConsumer

    consumer = JobConsumer(r, worker_settings().queue, "gone")
    consumer.beat(30, json.dumps({"worker_id": "gone", "heartbeat_ttl_s": 30}))
    assert [w["worker_id"] for w in client.get("/api/v1/workers").json()["workers"]] == ["gone"]
    r.delete(Keys(namespace).heartbeat("gone"))  # it died: registered, but its heartbeat expired
    assert client.get("/api/v1/workers").json() == {"workers": []}


def test_workers_is_documented_and_needs_the_key(make_client):
    client = make_client(api_key="s3cret")
    spec = client.get("/openapi.json").json()
    assert "/api/v1/workers" in spec["paths"]
    for path in ("/api/v1/queue/failed/groups", "/api/v1/queue/failed/retry"):
        assert path in spec["paths"]
    assert client.get("/api/v1/workers").status_code == 401
    assert client.get("/api/v1/workers", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/api/v1/workers", headers={"X-API-Key": "s3cret"}).json() == {"workers": []}
    assert client.post("/api/v1/queue/failed/retry").status_code == 401


# -- failures grouped, retried -----------------------------------------------------------
@pytest.fixture
def two_failure_groups(client, run_burst):
    """Three jobs fail to decode; then two are over a worker's pixel limit, and one completes."""
    truncated = [upload(client, TRUNCATED, f"t{i}").json()["job_id"] for i in range(3)]
    run_burst()
    large = [upload(client, None, f"l{i}", data=jpeg(i, size=(40 + i, 40))).json()["job_id"] for i in range(2)]
    upload(client, None, "fine", data=jpeg(9, size=(8, 8)))
    run_burst(max_image_pixels=1000)
    return truncated, large


def test_failures_are_grouped_by_normalised_error(client, two_failure_groups):
    truncated, large = two_failure_groups
    body = client.get("/api/v1/queue/failed/groups").json()
    assert body["window"]["seconds"] == 24 * 3600 and body["window"]["scanned"] == 5
    assert body["window"]["truncated"] is False
    first, second = body["groups"]
    assert first["count"] == 3 and set(first["sample_job_ids"]) == set(truncated)
    assert "cannot decode image" in first["error"] and first["first_seen"] <= first["last_seen"]
    assert second["count"] == 2 and set(second["sample_job_ids"]) == set(large)
    assert second["error"] == "image is <n>x<n>, over the limit of <n> pixels"
    assert "41x40" in second["example"] or "40x40" in second["example"]
    small = client.get("/api/v1/queue/failed/groups?max_jobs=2").json()
    assert small["window"]["truncated"] is True and sum(g["count"] for g in small["groups"]) == 2


def test_retry_of_one_group_requeues_exactly_that_group(client, two_failure_groups):
    truncated, large = two_failure_groups
    groups = client.get("/api/v1/queue/failed/groups").json()["groups"]
    big = next(g for g in groups if g["count"] == 2)
    resp = client.post(f"/api/v1/queue/failed/groups/{big['group_id']}/retry")
    assert resp.status_code == 202
    assert resp.json() == {"group_id": big["group_id"], "retried": 2, "not_failed": 0, "image_expired": 0,
                           "superseded": 0, "expired": 0}
    assert {client.get(f"/api/v1/queue/status/{j}").json()["status"] for j in large} == {"queued"}
    assert {client.get(f"/api/v1/queue/status/{j}").json()["status"] for j in truncated} == {"failed"}
    stats = client.get("/api/v1/queue/stats").json()
    assert stats["jobs"]["failed"] == 3 and stats["pending_in_queue"] == 2
    again = client.post(f"/api/v1/queue/failed/groups/{big['group_id']}/retry")
    assert again.status_code == 404 and again.json()["error"]["code"] == "group_not_found"


def test_retry_all_requeues_every_failed_job_and_reports_expired_images(client, two_failure_groups, r, namespace):
    truncated, large = two_failure_groups
    r.delete(Keys(namespace).image(truncated[0]))  # its image is no longer kept
    resp = client.post("/api/v1/queue/failed/retry")
    assert resp.status_code == 202
    assert resp.json() == {"retried": 4, "not_failed": 0, "image_expired": 1, "superseded": 0, "expired": 0,
                           "remaining": 1}
    assert client.get("/api/v1/queue/stats").json()["pending_in_queue"] == 4
    assert client.get(f"/api/v1/queue/status/{truncated[0]}").json()["status"] == "failed"


def test_retry_all_drops_ids_whose_record_expired(client, two_failure_groups, r, namespace):
    truncated, _ = two_failure_groups
    r.delete(Keys(namespace).job(truncated[1]))  # the record's TTL ran out
    body = client.post("/api/v1/queue/failed/retry").json()
    assert (body["retried"], body["expired"], body["remaining"]) == (4, 1, 0)


# -- the pages -------------------------------------------------------------------------------
def test_dashboard_and_docs_are_served_from_the_package(client):
    page = client.get("/dashboard")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("dashboard.js", "dashboard.css"):
        assert client.get(f"/dashboard/assets/{asset}").status_code == 200
        assert f"/dashboard/assets/{asset}" in page.text
    docs = client.get("/docs").text
    assert "cdn" not in docs.lower() and "/docs-assets/swagger-ui-bundle.js" in docs
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert "cdn" not in client.get("/redoc").text.lower()
