"""QUEUE_SHARDS: N independent queues under their own hash tags. The tag function (pure); on a
single Redis with 3 shards, the API and the worker across them; on a real 3-master cluster,
6 shards balance the keys over the masters and the pipeline completes every job."""
from __future__ import annotations

import time

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from batcher.queue.jobs import new_job_id
from batcher.queue.keys import SLOTS, Keys, job_shard, product_shard, shard_keys, shard_tag
from conftest import CORPUS, upload
from test_worker import jpeg

TRUNCATED = CORPUS / "hostile" / "truncated_jpeg.jpg"  # passes the API's probe, fails the worker's decode


# -- pure units ------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 6, 7, 16, 64])
def test_shard_i_lands_in_the_ith_nth_of_the_slots(n):
    tags = [shard_tag("clipq", i, n) for i in range(n)]
    assert len(set(tags)) == n
    for i, tag in enumerate(tags):
        assert i * SLOTS // n <= key_slot(tag.encode()) < (i + 1) * SLOTS // n
        assert key_slot(Keys("clipq", tag).queue.encode()) == key_slot(tag.encode())  # the braces hold


def test_one_shard_is_todays_keys():
    assert shard_tag("clipq", 0, 1) == "clipq"
    assert shard_keys("clipq", 1) == [Keys("clipq")]
    assert Keys("clipq").queue == "{clipq}:queue" and Keys("clipq").finished == "{clipq}:finished"
    assert job_shard(new_job_id(), 1) == 0 and new_job_id().count("-") == 1


def test_shared_keys_keep_the_namespace_tag_and_the_rest_the_shards():
    k = shard_keys("ns", 4)[2]
    assert k.queue.startswith("{ns:2:") and k.job("j").startswith("{ns:2:")
    assert (k.requests, k.finished, k.reply("r"), k.wake("w")) == (
        "{ns}:requests", "{ns}:finished", "{ns}:reply:r", "{ns}:wake:w")


def test_a_job_id_names_its_shard_and_a_product_keeps_one():
    for shard in range(5):
        assert job_shard(new_job_id(shard), 5) == shard
    assert job_shard(new_job_id(), 5) == 0 and job_shard("not-a-job", 5) == 0
    assert product_shard("p-1", 6) == product_shard("p-1", 6) == 3661949847 % 6  # crc32: stable everywhere
    assert {product_shard(f"p{i}", 3) for i in range(30)} == {0, 1, 2}


# -- three shards on one Redis ------------------------------------------------------------------
def shard_of_products(client, products) -> dict[str, int]:
    return {p: job_shard(upload(client, None, p, data=jpeg(i)).json()["job_id"], 3) for i, p in enumerate(products)}


def test_uploads_spread_over_every_shard_and_a_burst_completes_them(make_client, run_burst, r, namespace):
    client = make_client(queue_shards=3)
    shards = shard_of_products(client, [f"p{i}" for i in range(24)])
    assert set(shards.values()) == {0, 1, 2}
    assert [r.llen(k.queue) for k in shard_keys(namespace, 3)] == [
        list(shards.values()).count(i) for i in range(3)]
    again = [upload(client, None, "p0", data=jpeg(100 + i)).json() for i in range(3)]  # versions of one product
    assert {job_shard(j["job_id"], 3) for j in again} == {shards["p0"]}
    assert [j["version"] for j in again] == sorted(j["version"] for j in again)
    stats = client.get("/api/v1/queue/stats").json()
    assert stats["pending_in_queue"] == 27 and stats["jobs"]["queued"] == 27 and stats["shards"] == 3
    _, totals = run_burst(queue_shards=3)
    assert totals.completed + totals.superseded == 27 and totals.failed == 0
    assert [client.get(f"/api/v1/queue/status/{j['job_id']}").json()["status"] for j in again] == [
        "superseded", "superseded", "completed"]
    stats = client.get("/api/v1/queue/stats").json()
    assert stats["pending_in_queue"] == 0 and stats["jobs"]["completed"] == 24 and stats["jobs"]["superseded"] == 3
    metrics = client.get("/metrics").text
    assert "clipq_queue_depth 0.0" in metrics and 'clipq_queue_shard_depth{shard="2"} 0.0' in metrics


def blocked_blmoves(r) -> int:
    return sum(1 for c in r.client_list() if c.get("cmd") == "blmove" and "b" in c.get("flags", ""))


def enqueue_in(r, keys, job_id: str) -> None:
    from batcher.queue import calls
    from batcher.queue.jobs import JobSpec
    from batcher.queue.scripts import Scripts

    Scripts(r).run(calls.enqueue(keys, job_id, JobSpec("p", "n", "", {}, "sha", "image/jpeg"), b"img", max_depth=100))


def test_one_blmove_stands_on_every_shard_and_any_shard_wakes_the_worker(r, worker_settings, namespace):
    """4 shards: while the worker waits, 4 BLMOVEs block at once (one per shard's ring, no
    rotation of slices); a job queued in the third shard wakes the wait, which claims it. The
    BLMOVEs standing on the rings move no job: a job queued meanwhile stays queued (no orphan)
    until the next claim takes it."""
    import threading

    from batcher.queue.shards import ShardedConsumer

    config = worker_settings(queue_shards=4).queue
    consumer = ShardedConsumer(r, config, "w-standing")
    consumer.register()
    keys = shard_keys(namespace, 4)
    baseline = blocked_blmoves(r)
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.extend(consumer.take_blocking(30)))
    waiter.start()
    deadline = time.monotonic() + 10
    while blocked_blmoves(r) < baseline + 4:
        assert time.monotonic() < deadline, "the shards' BLMOVEs never stood at once"
        time.sleep(0.02)
    first = new_job_id(2)
    enqueue_in(r, keys[2], first)
    waiter.join(10)
    assert not waiter.is_alive() and got == [first]
    second = new_job_id(1)
    enqueue_in(r, keys[1], second)  # wakes the BLMOVE renewed... or standing since: it moves nothing
    assert consumer.requeue_orphans() == 0 and r.hget(keys[1].job(second), "status") == b"queued"
    assert consumer.take_blocking(5) == [second] and consumer.held() == {first, second}
    assert [r.hget(k.job(j), "status") for k, j in ((keys[2], first), (keys[1], second))] == [b"processing"] * 2


def test_failed_jobs_retry_and_status_across_shards(make_client, run_burst, namespace):
    client = make_client(queue_shards=3)
    failed = [upload(client, TRUNCATED, f"t{i}").json()["job_id"] for i in range(9)]
    assert {job_shard(j, 3) for j in failed} == {0, 1, 2}
    run_burst(queue_shards=3)
    assert {client.get(f"/api/v1/queue/status/{j}").json()["status"] for j in failed} == {"failed"}
    listed = client.get("/api/v1/queue/failed").json()
    assert {j["job_id"] for j in (listed["jobs"] if isinstance(listed, dict) else listed)} == set(failed)
    groups = client.get("/api/v1/queue/failed/groups").json()
    assert groups["window"]["scanned"] == 9 and groups["groups"][0]["count"] == 9
    assert client.get("/api/v1/queue/stats").json()["jobs"]["failed"] == 9
    assert client.post(f"/api/v1/queue/retry/{failed[0]}").status_code == 202
    assert client.get(f"/api/v1/queue/status/{failed[0]}").json()["status"] == "queued"
    body = client.post("/api/v1/queue/failed/retry").json()
    assert body["retried"] == 8 and body["remaining"] == 0
    assert client.get("/api/v1/queue/stats").json()["pending_in_queue"] == 9


def test_a_serving_worker_answers_deletes_and_lists_itself_across_shards(make_client, serve_worker, namespace):
    client = make_client(queue_shards=3)
    app = serve_worker(queue_shards=3)  # back once its heartbeat is on every shard
    assert [w["worker_id"] for w in client.get("/api/v1/workers").json()["workers"]] == [app.settings.worker_id]
    jobs = [upload(client, None, f"d{i}", data=jpeg(i)).json()["job_id"] for i in range(6)]
    deadline = time.monotonic() + 60
    while {client.get(f"/api/v1/queue/status/{j}").json()["status"] for j in jobs} != {"completed"}:
        assert time.monotonic() < deadline, "the serving worker did not finish"
        time.sleep(0.05)
    for i in range(6):
        assert client.delete(f"/api/v1/products/d{i}").status_code == 200
        assert client.get(f"/api/v1/products/d{i}").status_code == 404
    assert [w["worker_id"] for w in client.get("/api/v1/workers").json()["workers"]] == [app.settings.worker_id]


# -- six shards on a real 3-master cluster ----------------------------------------------------
@pytest.mark.slow
def test_six_shards_balance_three_masters_and_complete_every_job(tmp_path, make_client, run_burst, namespace):
    from scripts.lib.redis_cluster import LocalCluster

    cluster = LocalCluster(tmp_path / "cluster", masters=3, replicas=0).start()
    try:
        kw = {"redis_url": cluster.url, "redis_cluster": True, "queue_shards": 6}
        client = make_client(**kw)
        jobs = [upload(client, None, f"p{i}", data=jpeg(i % 40)).json()["job_id"] for i in range(240)]
        with RedisCluster.from_url(cluster.url) as rc:
            held = [len(rc.keys(f"{{{namespace}:*", target_nodes=n)) for n in rc.get_primaries()]
        assert len(held) == 3 and min(held) > 0 and max(held) / (sum(held) / 3) <= 1.5, held
        _, totals = run_burst(**kw)
        assert totals.completed == 240 and totals.failed == 0
        assert client.get("/api/v1/queue/stats").json()["jobs"]["completed"] == 240
        statuses = {client.get(f"/api/v1/queue/status/{j}").json()["status"] for j in jobs}
        assert statuses == {"completed"}
    finally:
        cluster.stop(kill=True)
