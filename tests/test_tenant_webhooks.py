"""Webhooks per tenant: each tenant's secret signs its deliveries, its webhook_url is its default,
a secret rotated in the tenants file applies to the next attempt, dead letters are scoped.
Real Redis, a real worker (burst), a real local receiver."""
from __future__ import annotations

import json
import time

import pytest

from api.tenants import TenantsError, parse_tenants
from api.webhook_config import verify
from scripts.lib.webhook_receiver import Receiver
from test_webhooks import photo

A, B, C, ADMIN = ({"X-API-Key": k} for k in ("key-a", "key-b", "key-c", "root"))
HOOKS = {"webhook_allowed_networks": "127.0.0.0/8", "webhook_backoff_s": 0.05, "webhook_timeout_s": 5}


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


def tenants(receiver, secret_a: str = "sec-a", b: bool = True) -> dict:
    shops = {"shop-a": {"api_key": "key-a", "webhook_secret": secret_a, "webhook_url": receiver.url("/a-default")},
             "shop-c": {"api_key": "key-c"}}
    return shops | ({"shop-b": {"api_key": "key-b", "webhook_secret": "sec-b"}} if b else {})


@pytest.fixture
def api(make_client, tmp_path, receiver):
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps(tenants(receiver)))
    client = make_client(allow_anonymous=False, tenants_file=str(path), admin_api_key="root", **HOOKS,
                         webhook_max_attempts=2)
    client.tenants_path = path
    return client


def post(client, headers, product_id: str, callback_url: str | None = None):
    data = {"product_id": product_id, "name": product_id} | ({"callback_url": callback_url} if callback_url else {})
    return client.post("/api/v1/index-product-with-image", data=data, headers=headers,
                       files={"image_file": ("p.png", photo(len(product_id)), "image/png")})


def upload(client, headers, product_id: str, callback_url: str | None = None) -> str:
    resp = post(client, headers, product_id, callback_url)
    assert resp.status_code == 202, resp.text
    return resp.json()["job_id"]


def signed_by(got, secret: str) -> bool:
    return verify(secret, got.body, got.headers["X-Clipq-Signature"], now=time.time())


def dead(client, headers, **params) -> list[dict]:
    resp = client.get("/api/v1/webhooks/failed", headers=headers, params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()["deliveries"]


def wait_dead(client, headers, n: int, timeout_s: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while len(found := dead(client, headers)) < n:
        assert time.monotonic() < deadline, f"{len(found)} of {n} deliveries dead-lettered"
        time.sleep(0.05)
    return found


def rewrite(client, receiver, **kw) -> None:
    """The tenants file rewritten, then reread as SIGHUP would (no wait on the file's mtime check)."""
    client.tenants_path.write_text(json.dumps(tenants(receiver, **kw)))
    assert client.app.state.tenants.reload("test")


def test_each_tenant_signs_with_its_own_secret_and_its_webhook_url_is_the_default(api, run_burst, receiver):
    job_a = upload(api, A, "pa", receiver.url("/a"))
    job_b = upload(api, B, "pb", receiver.url("/b"))
    job_default = upload(api, A, "pd")  # no callback_url: shop-a's webhook_url
    run_burst()
    [got_a], [got_b], [got_default] = (receiver.wait_for(p, 1) for p in ("/a", "/b", "/a-default"))
    assert (json.loads(got_a.body)["job_id"], json.loads(got_b.body)["job_id"]) == (job_a, job_b)
    assert json.loads(got_default.body)["job_id"] == job_default
    assert signed_by(got_a, "sec-a") and not signed_by(got_a, "sec-b")
    assert signed_by(got_b, "sec-b") and not signed_by(got_b, "sec-a")
    assert signed_by(got_default, "sec-a")


def test_a_tenant_without_a_secret_cannot_ask_for_a_callback(api, receiver):
    resp = post(api, C, "pc", receiver.url("/c"))
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "webhooks_off" and "'shop-c'" in error["message"] and "webhook_secret" in error["message"]
    assert post(api, C, "pc").status_code == 202, "without a callback the upload goes on"


def test_a_rotated_secret_signs_the_next_attempt_and_dead_letters_are_scoped(api, run_burst, receiver):
    receiver.answers = {"/a-down": [500, 500, 200], "/b-down": [500, 500, 500, 200]}
    upload(api, A, "pa", receiver.url("/a-down"))
    upload(api, B, "pb", receiver.url("/b-down"))
    run_burst()
    [mine] = wait_dead(api, A, 1)
    assert all(signed_by(got, "sec-a") for got in receiver.wait_for("/a-down", 2))
    [theirs] = wait_dead(api, B, 1)
    assert (mine["tenant"], theirs["tenant"]) == ("shop-a", "shop-b")
    assert {d["delivery_id"] for d in wait_dead(api, ADMIN, 2)} == {mine["delivery_id"], theirs["delivery_id"]}
    assert [d["delivery_id"] for d in dead(api, ADMIN, tenant="shop-b")] == [theirs["delivery_id"]]
    for headers, other in ((B, mine), (A, theirs)):
        resp = api.post(f"/api/v1/webhooks/failed/{other['delivery_id']}/retry", headers=headers)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "delivery_not_found"
    assert len(dead(api, ADMIN)) == 2, "a refused retry requeues nothing"

    rewrite(api, receiver, secret_a="sec-a-2")
    assert api.post(f"/api/v1/webhooks/failed/{mine['delivery_id']}/retry", headers=A).status_code == 202
    last = receiver.wait_for("/a-down", 3)[-1]
    assert last.headers["X-Clipq-Delivery"] == mine["delivery_id"]
    assert signed_by(last, "sec-a-2") and not signed_by(last, "sec-a")


def test_a_delivery_whose_tenant_left_the_file_is_dead_lettered_saying_so(api, run_burst, receiver):
    receiver.answers = {"/b-down": [500, 500, 200]}
    upload(api, B, "pb", receiver.url("/b-down"))
    run_burst()
    [theirs] = wait_dead(api, B, 1)
    rewrite(api, receiver, b=False)
    assert api.post(f"/api/v1/webhooks/failed/{theirs['delivery_id']}/retry", headers=ADMIN).status_code == 202
    deadline = time.monotonic() + 30
    while (found := dead(api, ADMIN)) and found[0]["last_error"] != "the tenant 'shop-b' is no longer in TENANTS_FILE":
        assert time.monotonic() < deadline, found
        time.sleep(0.05)
    assert len(receiver.at("/b-down")) == 2, "nothing sent unsigned or with a stale secret"


def test_a_tenants_file_with_a_webhook_url_and_no_secret_is_refused():
    for record, why in (({"webhook_url": "https://h.example/x"}, "webhook_url needs webhook_secret"),
                        ({"webhook_secret": ""}, "webhook_secret must be a non-empty string"),
                        ({"webhook_secret": "s", "webhook_url": "ftp://h.example/"}, "webhook_url:")):
        with pytest.raises(TenantsError, match=why) as exc:
            parse_tenants(json.dumps({"shop-x": {"api_key": "k"} | record}), "tenants.json")
        assert "tenant 'shop-x'" in str(exc.value)


def test_a_reload_with_a_webhook_url_and_no_secret_keeps_the_tenants_in_force(api, receiver):
    api.tenants_path.write_text(json.dumps({"shop-a": {"api_key": "key-a", "webhook_url": receiver.url("/x")}}))
    assert not api.app.state.tenants.reload("test")
    assert api.app.state.tenants.book.tenants["shop-a"].webhook_secret == "sec-a"


def test_a_dead_letter_of_unknown_tenant_is_an_admins_only(api, r, namespace):
    """A delivery whose job's record expired before its first attempt names no tenant: no tenant
    lists or retries it; one snapshotted before deliveries had tenants (a url, no tenant) is default's."""
    from batcher.queue.keys import Keys

    k = Keys(namespace)
    r.hset(k.delivery("job-x.1"), mapping={"attempts": 1, "last_error": "the job's record expired"})
    r.hset(k.delivery("job-y.1"), mapping={"attempts": 1, "url": "https://h.example/", "body": "{}"})
    r.zadd(k.deliveries_dead, {"job-x.1": 1, "job-y.1": 2})
    assert dead(api, A) == [] and [d["delivery_id"] for d in dead(api, ADMIN)] == ["job-y.1", "job-x.1"]
    assert [d["delivery_id"] for d in dead(api, ADMIN, tenant="default")] == ["job-y.1"]
    assert api.post("/api/v1/webhooks/failed/job-x.1/retry", headers=A).status_code == 404
    assert api.post("/api/v1/webhooks/failed/job-x.1/retry", headers=ADMIN).status_code == 202
