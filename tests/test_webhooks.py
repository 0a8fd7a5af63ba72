"""Signed webhooks: a job's end -> a real worker's ack -> the API's deliverer -> a local receiver."""
from __future__ import annotations

import io
import json
import time

import pytest
from PIL import Image

from scripts.lib.webhook_receiver import Receiver

from api.webhook_config import WebhookConfig, retryable, sign, verify

SECRET = "whsec-test"
HOOKS = {"webhook_secret": SECRET, "webhook_allowed_networks": "127.0.0.0/8", "webhook_backoff_s": 0.05,
         "webhook_timeout_s": 5}


def photo(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (seed * 40 % 256, 90, 200)).save(out, "PNG")
    return out.getvalue()


def upload(client, product_id: str, callback_url: str | None = None, **form):
    data = {"product_id": product_id, "name": f"Product {product_id}", **form}
    if callback_url:
        data["callback_url"] = callback_url
    files = None if "image_url" in form else {"image_file": ("p.png", photo(len(product_id)), "image/png")}
    resp = client.post("/api/v1/index-product-with-image", data=data, files=files)
    assert resp.status_code == 202, resp.text
    return resp.json()["job_id"]


def dead(client) -> list[dict]:
    resp = client.get("/api/v1/webhooks/failed")
    assert resp.status_code == 200
    return resp.json()["deliveries"]


def wait_dead(client, n: int, timeout_s: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while len(found := dead(client)) < n:
        assert time.monotonic() < deadline, f"{len(found)} of {n} deliveries dead-lettered"
        time.sleep(0.05)
    return found


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


# -- the pure parts ----------------------------------------------------------------------

def test_a_signature_verifies_with_its_secret_body_and_time_only():
    body, t = b'{"job_id":"j"}', 1_700_000_000
    header = sign(SECRET, body, t)
    assert header.startswith(f"t={t},v1=") and len(header.split("v1=")[1]) == 64
    assert verify(SECRET, body, header, now=t + 299)
    assert not verify(SECRET, body, header, now=t + 301)          # too old: a replay
    assert not verify("other", body, header, now=t)
    assert not verify(SECRET, body + b" ", header, now=t)
    assert not verify(SECRET, body, header.replace(f"t={t}", f"t={t + 1}"), now=t)
    assert not verify(SECRET, body, "garbage", now=t)


def test_the_backoff_doubles_up_to_its_cap_and_which_answers_are_retried():
    config = WebhookConfig((), 8, 1.0, 5.0, 8, 10)
    assert [config.delay_s(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    assert [s for s in (400, 401, 404, 408, 409, 429, 500, 503) if retryable(s)] == [408, 429, 500, 503]


# -- at upload ---------------------------------------------------------------------------

def test_a_callback_url_is_refused_at_upload_without_a_secret_or_to_a_private_address(make_client, receiver):
    no_secret = make_client()
    resp = no_secret.post("/api/v1/index-product-with-image", data={
        "product_id": "p", "name": "P", "callback_url": receiver.url("/x")},
        files={"image_file": ("p.png", photo(1), "image/png")})
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "webhooks_off"
    client = make_client(webhook_secret=SECRET)
    for url, why in (("http://10.0.0.1/hook", "private"), ("http://127.0.0.1:9/hook", "loopback"),
                     ("http://169.254.169.254/", "cloud metadata"), ("ftp://example.com/", "http")):
        resp = client.post("/api/v1/index-product-with-image", data={"product_id": "p", "name": "P",
                           "callback_url": url}, files={"image_file": ("p.png", photo(1), "image/png")})
        assert resp.status_code == 422, url
        assert resp.json()["error"]["field"] == "callback_url" and why in resp.json()["error"]["message"]


def test_the_api_refuses_to_start_with_a_webhook_url_and_no_secret(api_settings):
    from api.settings import ApiSettings

    assert "WEBHOOK_SECRET" in ApiSettings(**api_settings.model_dump() | {"webhook_url": "https://h.example/x"}).refusal()


# -- deliveries ----------------------------------------------------------------------------

def test_a_completed_job_is_posted_once_signed_with_its_status_document(make_client, run_burst, receiver):
    client = make_client(**HOOKS)
    job_id = upload(client, "p1", receiver.url("/ok"))
    run_burst()
    [got] = receiver.wait_for("/ok", 1)
    status = client.get(f"/api/v1/queue/status/{job_id}").json()
    assert status["status"] == "completed"
    assert json.loads(got.body) == status
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"].startswith("clipq-webhooks/")
    assert got.headers["X-Clipq-Delivery"].startswith(job_id + ".")
    assert verify(SECRET, got.body, got.headers["X-Clipq-Signature"], now=time.time())
    assert client.app.state.metrics.registry.get_sample_value(
        "clipq_webhook_deliveries_total", {"outcome": "delivered"}) == 1
    assert client.app.state.metrics.registry.get_sample_value("clipq_webhook_delivery_seconds_count") == 1
    time.sleep(0.3)  # a settled delivery is not sent again
    assert len(receiver.at("/ok")) == 1 and dead(client) == []


def test_retries_keep_the_delivery_id_and_final_failures_are_dead_lettered(make_client, run_burst, receiver):
    """500 twice then 200: delivered at the 3rd attempt; always 500: dead after WEBHOOK_MAX_ATTEMPTS;
    400: dead at once. A dead one is listed, and sent again by the retry endpoint."""
    client = make_client(**HOOKS, webhook_max_attempts=3)
    receiver.answers = {"/flaky": [500, 500, 200], "/down": [500, 500, 500, 200], "/bad": [400, 200]}
    jobs = {path: upload(client, f"p{path[1:]}", receiver.url(path)) for path in receiver.answers}
    run_burst()
    flaky = receiver.wait_for("/flaky", 3)
    assert len({r.headers["X-Clipq-Delivery"] for r in flaky}) == 1
    assert all(verify(SECRET, r.body, r.headers["X-Clipq-Signature"], now=time.time()) for r in flaky)
    listed = {d["job_id"]: d for d in wait_dead(client, 2)}
    assert set(listed) == {jobs["/down"], jobs["/bad"]}
    assert (listed[jobs["/down"]]["attempts"], listed[jobs["/down"]]["last_status"]) == (3, 500)
    assert (listed[jobs["/bad"]]["attempts"], listed[jobs["/bad"]]["last_error"]) == (1, "answered 400")
    assert (len(receiver.at("/down")), len(receiver.at("/bad"))) == (3, 1)
    metrics = client.app.state.metrics.registry
    assert [metrics.get_sample_value("clipq_webhook_deliveries_total", {"outcome": o})
            for o in ("delivered", "retried", "dead")] == [1, 4, 2]

    down = listed[jobs["/down"]]["delivery_id"]
    assert client.post(f"/api/v1/webhooks/failed/{down}/retry").status_code == 202
    again = receiver.wait_for("/down", 4)[3]
    assert again.headers["X-Clipq-Delivery"] == down
    assert json.loads(again.body)["job_id"] == jobs["/down"]
    deadline = time.monotonic() + 10
    while len(dead(client)) != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    missing = client.post(f"/api/v1/webhooks/failed/{down}/retry")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "delivery_not_found"


def test_a_delivery_survives_a_restart_of_the_api(make_client, settings_kw, run_burst, receiver):
    from fastapi.testclient import TestClient

    from api.main import create_app
    from api.settings import ApiSettings

    with TestClient(create_app(ApiSettings(**settings_kw, allow_anonymous=True, **HOOKS))) as first:
        job_id = upload(first, "p1", receiver.url("/later"))
    run_burst()  # no API runs while the job ends
    time.sleep(0.2)
    assert receiver.at("/later") == []
    make_client(**HOOKS)
    [got] = receiver.wait_for("/later", 1)
    assert json.loads(got.body)["job_id"] == job_id and json.loads(got.body)["status"] == "completed"


def test_failed_and_superseded_jobs_are_delivered_too(make_client, run_burst, receiver):
    client = make_client(**HOOKS)
    failed = upload(client, "pf", receiver.url("/failed"), image_url="http://127.0.0.1:9/photo.jpg")
    older = upload(client, "ps", receiver.url("/superseded"))
    upload(client, "ps")  # a newer upload of the same product, without a callback
    run_burst()  # the worker refuses the loopback image_url: failed at once
    [f] = receiver.wait_for("/failed", 1)
    [s] = receiver.wait_for("/superseded", 1)
    assert (json.loads(f.body)["job_id"], json.loads(f.body)["status"]) == (failed, "failed")
    assert json.loads(f.body)["error_message"]
    assert (json.loads(s.body)["job_id"], json.loads(s.body)["status"]) == (older, "superseded")


def test_a_held_delivery_does_not_hold_up_indexing(make_client, serve_worker, receiver):
    client = make_client(**HOOKS)
    serve_worker()
    receiver.held.add("/held")
    upload(client, "p1", receiver.url("/held"))
    receiver.wait_for("/held", 1)  # its receiver has not answered
    job_id = upload(client, "p2", receiver.url("/ok"))
    status = client.get(f"/api/v1/queue/status/{job_id}", params={"wait": 20}).json()
    assert status["status"] == "completed"
    receiver.wait_for("/ok", 1)
    assert not receiver.release.is_set()  # all while the first receiver still held its answer
    receiver.release.set()


def test_no_url_no_delivery_and_webhook_url_is_the_default(make_client, run_burst, receiver, r, namespace):
    client = make_client(**HOOKS, webhook_url=receiver.url("/default"))
    job_id = upload(client, "p1")
    run_burst()
    [got] = receiver.wait_for("/default", 1)
    assert json.loads(got.body)["job_id"] == job_id
    other = make_client(**HOOKS)
    upload(other, "p2")
    run_burst()
    from batcher.queue.keys import Keys

    assert r.zcard(Keys(namespace).deliveries) == 0 and r.zcard(Keys(namespace).deliveries_leased) == 0


def test_a_job_that_killed_its_workers_is_delivered_failed_by_the_reaper(make_client, worker_settings, r, receiver):
    from batcher.queue.consumer import JobConsumer
    from test_reliability import claim_as_dead_worker

    client = make_client(**HOOKS)
    s = worker_settings(max_attempts=1)
    job_id = upload(client, "p1", receiver.url("/reaped"))
    assert claim_as_dead_worker(s, r, "victim", 1) == [job_id]
    JobConsumer(r, s.queue, "reaper").reap_dead_workers()
    [got] = receiver.wait_for("/reaped", 1)
    body = json.loads(got.body)
    assert (body["job_id"], body["status"]) == (job_id, "failed") and "worker died" in body["error_message"]


def test_every_shard_is_delivered(make_client, run_burst, receiver):
    client = make_client(**HOOKS, queue_shards=2)
    jobs = [upload(client, f"p{i}", receiver.url("/sharded")) for i in range(8)]
    assert {j.rsplit("-", 1)[1] for j in jobs} == {"0", "1"}
    run_burst(queue_shards=2)
    got = receiver.wait_for("/sharded", 8)
    assert sorted(json.loads(g.body)["job_id"] for g in got) == sorted(jobs)


def test_a_delivery_cut_short_by_a_crash_is_sent_again_once_its_lease_ends(make_client, settings_kw, run_burst,
                                                                            receiver, r, namespace):
    from fastapi.testclient import TestClient

    from api.main import create_app
    from api.settings import ApiSettings
    from batcher.queue.keys import Keys

    receiver.held.add("/crash")
    with TestClient(create_app(ApiSettings(**settings_kw, allow_anonymous=True, **HOOKS))) as first:
        upload(first, "p1", receiver.url("/crash"))
        run_burst()
        [cut] = receiver.wait_for("/crash", 1)  # sent; the API stops before any answer
    leased = Keys(namespace).deliveries_leased
    [(delivery_id, _)] = r.zrange(leased, 0, -1, withscores=True)
    r.zadd(leased, {delivery_id: 0})  # its lease ran out (as it would after WEBHOOK_TIMEOUT_S + 10 s)
    receiver.held.clear()
    make_client(**HOOKS)
    again = receiver.wait_for("/crash", 2)[1]
    assert again.headers["X-Clipq-Delivery"] == cut.headers["X-Clipq-Delivery"] == delivery_id.decode()
    assert again.body == cut.body


def test_a_host_name_is_checked_when_sent_not_only_its_form_at_upload(make_client, run_burst, receiver):
    """``localhost`` passes at upload (a name), but resolves to loopback: refused at send time,
    dead at once, nothing sent (what a DNS answer changed to a private address gets too)."""
    client = make_client(**HOOKS | {"webhook_allowed_networks": None})
    port = receiver.base.rsplit(":", 1)[1]
    job_id = upload(client, "p1", f"http://localhost:{port}/named")
    run_burst()
    [d] = wait_dead(client, 1)
    assert (d["job_id"], d["attempts"], d["last_status"]) == (job_id, 1, None)
    assert d["last_error"] == "the host's address is not allowed (loopback)"
    assert receiver.at("/named") == []
