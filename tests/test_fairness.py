"""Fair scheduling across tenants (issue 27, item 3): a pending list per tenant, the ring, claims
round-robin over it, per-tenant counters and quotas. Real Redis, the real scripts."""
from __future__ import annotations

import threading
import time

import pytest

from batcher.queue import calls
from batcher.queue.calls import Outcome, Quota
from batcher.queue.consumer import JobConsumer
from batcher.queue.jobs import JobSpec, new_job_id
from batcher.queue.keys import Keys, product_shard, shard_keys
from batcher.queue.scripts import Scripts
from test_worker import jpeg

STATS = ("queued", "processing", "completed", "failed", "superseded", "total")


def queue_for(r, keys: Keys, tenant: str, product_id: str, image: bytes = b"img", quota: Quota = Quota(),
              max_depth: int = 100_000, shard: int | None = None) -> tuple[str, list]:
    """Enqueue one job of ``tenant`` the way the API does (the enqueue script): (job id, reply);
    ``shard``: the shard ``keys`` are of, named in the job id (QUEUE_SHARDS > 1)."""
    job_id = new_job_id(shard)
    spec = JobSpec(product_id, "n", "", {}, "sha-" + product_id, "image/jpeg", tenant=tenant)
    return job_id, Scripts(r).run(calls.enqueue(keys, job_id, spec, image, max_depth, quota=quota))


def queue_many(r, keys: Keys, tenant: str, n: int) -> list[str]:
    return [queue_for(r, keys, tenant, f"{tenant}-p{i}")[0] for i in range(n)]


def consumer(r, worker_settings, worker_id: str = "w", **overrides) -> JobConsumer:
    c = JobConsumer(r, worker_settings(**overrides).queue, worker_id)
    c.register()
    return c


def test_a_tenants_single_job_is_in_the_next_batch_behind_another_tenants_import(r, worker_settings, namespace):
    k = Keys(namespace)
    a_jobs = queue_many(r, k, "a", 100)
    b_job, _ = queue_for(r, k, "b", "b-1")
    assert r.llen(k.pending("a")) == 100 and r.lrange(k.pending("b"), 0, -1) == [b_job.encode()]
    assert sorted(r.lrange(k.ring, 0, -1)) == [b"a", b"b"]
    w = consumer(r, worker_settings)
    batch = w.take_blocking(1) + w.take_now(3)
    assert b_job in batch and len(batch) == 4
    assert [j for j in batch if j != b_job] == a_jobs[:3]  # each tenant's own jobs stay in order
    assert r.lrange(k.ring, 0, -1) == [b"a"]  # b's list is empty: b left the ring
    assert r.hget(k.tenant_stats("b"), "processing") == b"1" and r.hget(k.tenant_stats("a"), "processing") == b"3"


def test_three_tenants_share_a_batch_evenly(r, worker_settings, namespace):
    k = Keys(namespace)
    for tenant in ("a", "b", "c"):
        queue_many(r, k, tenant, 10)
    w = consumer(r, worker_settings)
    batch = w.take_now(9)
    tenants = [r.hget(k.job(j), "tenant").decode() for j in batch]
    assert sorted(tenants) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert len(set(tenants[:3])) == 3  # one of each before a second of any


def test_without_fair_scheduling_one_tenant_is_drained_before_the_next(r, worker_settings, namespace):
    k = Keys(namespace)
    queue_many(r, k, "a", 5)
    b_job, _ = queue_for(r, k, "b", "b-1")
    w = consumer(r, worker_settings, fair_scheduling=False)
    first = w.take_blocking(1) + w.take_now(3)
    assert b_job not in first and len(first) == 4
    assert w.take_now(4)[-1] == b_job  # a's last, then b's


def test_the_blocking_wait_wakes_on_any_tenant_and_moves_nothing_itself(r, worker_settings, namespace):
    k = Keys(namespace)
    w = consumer(r, worker_settings)
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.extend(w.take_blocking(20)))
    waiter.start()
    time.sleep(0.3)  # blocked on the empty ring
    assert not got and r.llen(w._processing) == 0
    job_id, _ = queue_for(r, k, "late-tenant", "x")
    waiter.join(10)
    assert not waiter.is_alive() and got == [job_id]
    assert r.hget(k.job(job_id), "status") == b"processing" and r.llen(k.ring) == 0


def test_ids_queued_before_tenants_with_no_ring_are_still_taken(r, worker_settings, namespace):
    """An upgrade: ids in today's ``queue``, records without ``tenant``, no ring."""
    k = Keys(namespace)
    ids = queue_many(r, k, "default", 3)
    for job_id in ids:
        r.hdel(k.job(job_id), "tenant")
    r.delete(k.ring, k.tenant_stats("default"))
    w = consumer(r, worker_settings)
    assert w.depth() == 3
    w.promote_due()  # the housekeeping before every claim puts the default tenant on the ring
    assert r.lrange(k.ring, 0, -1) == [b"default"]
    assert w.take_blocking(1) == [ids[0]]
    r.delete(k.ring)  # the claim script rings it as well
    assert w.take_now(5) == ids[1:] and w.depth() == 0


def test_reap_retry_and_promote_put_a_job_back_on_its_tenants_list_and_the_ring(r, worker_settings, namespace):
    k = Keys(namespace)
    job_id, _ = queue_for(r, k, "b", "b-1")
    dead = consumer(r, worker_settings, "dead")
    assert dead.take_blocking(1) == [job_id]
    assert r.llen(k.ring) == 0
    reaper = consumer(r, worker_settings, "reaper")
    assert reaper.reap_dead_workers() == {"dead": 1}  # no heartbeat: dead
    assert r.lrange(k.pending("b"), 0, -1) == [job_id.encode()] and r.lrange(k.ring, 0, -1) == [b"b"]

    assert reaper.take_now(1) == [job_id]
    reaper.ack([Outcome(job_id, "retry", "store down", delay_ms=0)])
    assert r.llen(k.ring) == 0 and r.zcard(k.delayed) == 1
    assert reaper.promote_due() == 1
    assert r.lrange(k.pending("b"), 0, -1) == [job_id.encode()] and r.lrange(k.ring, 0, -1) == [b"b"]

    assert reaper.take_now(1) == [job_id]
    reaper.ack([Outcome(job_id, "failed", "cannot decode image")])
    assert Scripts(r).run(calls.retry(k, job_id)) == [1, b""]
    assert r.lrange(k.pending("b"), 0, -1) == [job_id.encode()] and r.lrange(k.ring, 0, -1) == [b"b"]
    assert r.hget(k.tenant_stats("b"), "queued") == b"1" and r.hget(k.tenant_stats("b"), "failed") == b"0"


def test_quotas_refuse_a_tenant_over_its_depth_or_bytes_and_no_one_else(r, namespace):
    k = Keys(namespace)
    quota = Quota(max_depth=2, max_bytes=25)
    assert queue_for(r, k, "a", "a1", b"x" * 10, quota)[1][0] == 1
    assert queue_for(r, k, "a", "a2", b"x" * 10, quota)[1][0] == 1
    assert queue_for(r, k, "a", "a3", b"x", quota)[1] == [-2, 2]  # two pending: at its depth quota
    assert queue_for(r, k, "a", "a3", b"x" * 6, Quota(max_bytes=25))[1] == [-3, 20]  # 20 + 6 > 25 bytes
    assert queue_for(r, k, "b", "b1", b"x" * 10, quota)[1][0] == 1  # another tenant's own quota
    assert int(r.get(k.tenant_bytes("a"))) == 20 and int(r.get(k.tenant_bytes("b"))) == 10
    assert int(r.get(k.image_bytes)) == 30
    assert queue_for(r, k, "c", "c1", max_depth=3)[1] == [0, 3]  # the queue's depth: every tenant's


def test_an_over_quota_upload_is_a_429_naming_the_tenant_and_its_quota(make_client, tmp_path):
    """Quotas from TENANTS_FILE, through HTTP: shop-a's third pending job, and shop-c's photo past
    its bytes, are refused; shop-b (no quota) and the default tenant are not."""
    import json

    from api.quotas import quota_of

    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"shop-a": {"api_key": "key-a", "max_queue_depth": 2},
                                "shop-b": {"api_key": "key-b"}, "shop-c": {"api_key": "key-c", "max_queue_bytes": 10_000}}))
    client = make_client(allow_anonymous=False, tenants_file=str(path), api_key="plain")

    def put(key: str, product_id: str, data: bytes):
        return client.post("/api/v1/index-product-with-image", data={"product_id": product_id, "name": "n"},
                           files={"image_file": ("x.jpg", data, "image/jpeg")}, headers={"X-API-Key": key})

    assert [put("key-a", f"a{i}", jpeg(i)).status_code for i in range(2)] == [202, 202]
    full = put("key-a", "a2", jpeg(2))
    assert full.status_code == 429 and full.headers["Retry-After"] == "30"
    body = full.json()
    assert body["error"]["code"] == "tenant_queue_full" and body["tenant"] == "shop-a"
    assert body["quota"] == {"name": "max_queue_depth", "limit": 2, "held": 2}
    assert "tenant 'shop-a'" in body["error"]["message"] and "max_queue_depth=2" in body["error"]["message"]
    assert put("key-b", "b0", jpeg(3)).status_code == 202 and put("plain", "d0", jpeg(4)).status_code == 202

    big = put("key-c", "c0", jpeg(5, size=(1200, 1000)))
    assert big.status_code == 429 and big.json()["error"]["code"] == "tenant_queue_bytes_full"
    assert big.json()["tenant"] == "shop-c" and big.json()["quota"]["name"] == "max_queue_bytes"
    assert big.json()["quota"]["limit"] == 10_000 and len(jpeg(5, size=(1200, 1000))) > 10_000
    assert put("key-c", "c1", jpeg(6)).status_code == 202  # a small one fits

    class Record:
        max_queue_depth, max_queue_bytes = 5, None

    assert quota_of(Record()) == Quota(5, 0) and quota_of(None) == Quota(0, 0)


def tenant_totals(r, keys_list, tenants) -> dict[str, int]:
    return {f: sum(int(r.hget(k.tenant_stats(t), f) or 0) for k in keys_list for t in tenants) for f in STATS}


def totals(r, keys_list) -> dict[str, int]:
    return {f: sum(int(r.hget(k.stats, f) or 0) for k in keys_list) for f in STATS}


def test_per_tenant_stats_add_up_to_the_totals_over_three_shards(r, run_burst, namespace):
    """QUEUE_SHARDS=3, two tenants (one also uploads an undecodable image): every job completes
    or fails, each shard's counters are the sum of its tenants', and no image bytes are left."""
    keys = shard_keys(namespace, 3)
    products = {"a": [f"a{i}" for i in range(20)], "b": [f"b{i}" for i in range(6)]}
    for tenant, ids in products.items():
        for i, p in enumerate(ids):
            image = b"not an image" if p == "b5" else jpeg(i + (100 if tenant == "b" else 0))
            shard = product_shard(p, 3)
            queue_for(r, keys[shard], tenant, p, image, shard=shard)
    assert tenant_totals(r, keys, ["a", "b"]) == totals(r, keys)
    assert sum(int(r.get(k.tenant_bytes("b")) or 0) for k in keys) > 0
    _, done = run_burst(queue_shards=3)
    assert done.completed == 25 and done.failed == 1
    assert tenant_totals(r, keys, ["a", "b"]) == totals(r, keys)
    assert [sum(int(r.hget(k.tenant_stats(t), "completed") or 0) for k in keys) for t in "ab"] == [20, 5]
    assert sum(int(r.get(k.tenant_bytes("a")) or 0) for k in keys) == 0
    failed_bytes = len(b"not an image")  # kept for a manual retry, counted as b's
    assert sum(int(r.get(k.tenant_bytes("b")) or 0) for k in keys) == failed_bytes
    assert all(r.llen(k.ring) == 0 for k in keys)


def test_a_tenant_name_that_could_bend_a_key_is_refused_before_any_script():
    for bad in ("", "a:b", "{x}", "a b", "x" * 65):
        with pytest.raises(ValueError, match="tenant"):
            JobSpec("p", "n", "", {}, "sha", "image/jpeg", tenant=bad)
    assert JobSpec("p", "n", "", {}, "sha", "image/jpeg", tenant="shop-7.eu_1").to_fields()["tenant"] == "shop-7.eu_1"


def test_the_apis_stats_of_one_tenant_are_its_own_and_add_up_to_the_totals(make_client):
    client = make_client(queue_shards=2)
    queue = client.app.state.queue
    for tenant, n in (("a", 3), ("b", 2)):
        for i in range(n):
            spec = JobSpec(f"{tenant}{i}", "n", "", {}, "sha", "image/jpeg", tenant=tenant)
            client.portal.call(queue.enqueue, spec, b"x" * (10 if tenant == "a" else 7))
    total, a, b = (client.portal.call(queue.stats, t) for t in (None, "a", "b"))
    assert (a["tenant"], a["pending_in_queue"], a["jobs"]["queued"], a["image_bytes"]) == ("a", 3, 3, 30)
    assert (b["pending_in_queue"], b["jobs"]["total"], b["image_bytes"], b["delayed_retries"]) == (2, 2, 14, 0)
    assert total["pending_in_queue"] == 5 == a["pending_in_queue"] + b["pending_in_queue"]
    assert total["image_bytes"] == 44 and "tenant" not in total
    assert client.get("/api/v1/queue/stats").json()["pending_in_queue"] == 5


def test_a_claim_whose_reply_was_lost_goes_back_to_its_tenants_list(r, worker_settings, namespace):
    k = Keys(namespace)
    job_id, _ = queue_for(r, k, "b", "b-1")
    w = consumer(r, worker_settings)
    Scripts(r).run(calls.claim(k, w.worker_id, 1))  # the claim ran; its reply never reached the worker
    assert r.llen(k.ring) == 0 and r.hget(k.tenant_stats("b"), "processing") == b"1"
    assert w.requeue_orphans() == 1
    assert r.lrange(k.pending("b"), 0, -1) == [job_id.encode()] and r.lrange(k.ring, 0, -1) == [b"b"]
    assert r.hget(k.tenant_stats("b"), "processing") == b"0" and r.hget(k.job(job_id), "retry_count") == b"0"
    assert w.take_now(1) == [job_id]
