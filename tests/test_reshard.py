"""A shard's slot resharded to another master while uploads and a worker run, on a real Redis
Cluster of 3 masters (no replicas): the standard migration (SETSLOT IMPORTING / MIGRATING,
MIGRATE ... KEYS, SETSLOT NODE), with a pause while the keys sit on the target but the slot is
not yet its own (every call then gets ASK or TRYAGAIN).

The API answers 202 or 503 with Retry-After (never a 500); uploads to that shard succeed again
once the slot has moved; every job acknowledged (202) completes, and the keys live on the target.
"""
from __future__ import annotations

import asyncio
import time

import pytest
from redis.cluster import RedisCluster, key_slot

from conftest import corpus_files, served
from uploader import Uploader, numbered
from batcher.queue.keys import job_shard, product_shard, shard_keys
from scripts.lib.redis_cluster import LocalCluster

pytestmark = pytest.mark.slow
SHARDS, SHARD, THREADS = 6, 1, 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("cluster"), masters=3, replicas=0).start()
    yield c
    c.stop(kill=True)


@pytest.fixture
def settings_kw(cluster, namespace) -> dict:
    return {"redis_url": cluster.url, "redis_cluster": True, "queue_namespace": namespace, "queue_shards": SHARDS}


def products(n: int):
    """Product ids of shard SHARD, thread n's own."""
    return (p for p in numbered("r")(n) if product_shard(p, SHARDS) == SHARD)


async def run_async(url, call, d):
    from batcher.queue.connect import async_client
    from batcher.queue.durable import run_durable_async
    from batcher.queue.scripts import Scripts

    client = async_client(url, True)
    try:
        return await run_durable_async(client, Scripts(client), call, d)
    finally:
        await client.aclose()


def test_the_wait_pipeline_follows_no_redirection_mid_migration(cluster, namespace):
    """REDIS_WAIT_REPLICAS: a script answered ASK while its slot migrates is not run elsewhere
    than its WAIT: SlotMoving (503 / retry) instead; once the slot has moved, the call works."""
    from batcher.queue import calls
    from batcher.queue.connect import sync_client
    from batcher.queue.durable import Durability, NotReplicated, SlotMoving, run_durable
    from batcher.queue.scripts import Scripts

    k = shard_keys(namespace, SHARDS)[SHARD + 1]
    slot = key_slot(k.queue.encode())
    source = cluster.owner_of(slot)
    target = next(p for p in cluster.masters_now() if p != source)
    client = sync_client(cluster.url, True)
    scripts, d = Scripts(client), Durability(replicas=1, timeout_ms=10)  # no replica: 0 confirm
    call = calls.promote(k, 10)
    client.rpush(k.queue, "x")
    client.zadd(k.delayed, {"y": 0})
    with pytest.raises(NotReplicated):
        run_durable(client, scripts, call, d)
    cluster._call(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.ids[source])
    cluster._call(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.ids[target])
    keys = cluster._call(source, "CLUSTER", "GETKEYSINSLOT", slot, 100)
    cluster._call(source, "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
    with pytest.raises(SlotMoving):  # the keys are on the target: ASK, not followed
        run_durable(client, scripts, call, d)
    with pytest.raises(SlotMoving):  # the API's asyncio client alike
        asyncio.run(run_async(cluster.url, call, d))
    for port in cluster.masters_now():
        cluster._call(port, "CLUSTER", "SETSLOT", slot, "NODE", cluster.ids[target])
    with pytest.raises((SlotMoving, NotReplicated)):  # MOVED at most once: the map is refreshed
        run_durable(client, scripts, call, d)
    with pytest.raises(NotReplicated):  # on the target now, WAIT and all
        run_durable(client, scripts, call, d)
    client.close()


def test_a_slot_resharded_mid_traffic_loses_no_acknowledged_job(cluster, settings_kw, namespace, serve_worker):
    from api.main import create_app
    from api.settings import ApiSettings

    keys = shard_keys(namespace, SHARDS)
    slot = key_slot(keys[SHARD].queue.encode())
    source = cluster.owner_of(slot)
    target = next(p for p in cluster.masters_now() if p != source)
    image = corpus_files("index")[0].read_bytes()
    app = create_app(ApiSettings(**settings_kw, allow_anonymous=True))
    # a steady stream that one worker on 2 cores keeps up with (no 429)
    with served(app) as base, Uploader(base, image, THREADS, products, pause_s=0.02) as up:
        serve_worker()
        time.sleep(1.5)
        started = time.monotonic()
        moved = cluster.migrate_slot(slot, target, batch=10000, hold_s=1.0)
        done = time.monotonic()
        deadline = done + 15
        while not any(t > done and code == 202 for t, _, code, *_ in list(up.seen)):
            assert time.monotonic() < deadline, "uploads to the resharded shard never succeeded again"
            time.sleep(0.2)
        time.sleep(0.5)
    codes: dict[int, int] = {}
    for _, _, code, *_ in up.seen:
        codes[code] = codes.get(code, 0) + 1
    print(f"resharded slot {slot} ({moved} keys) {source} -> {target} in {done - started:.1f}s: {codes}")
    assert set(codes) <= {202, 503}, codes
    assert all("retry-after" in h for _, _, code, _, _, h in up.seen if code == 503)
    assert any(t < started and c == 202 for t, _, c, *_ in up.seen)
    accepted = [body["job_id"] for _, _, code, _, body, _ in up.seen if code == 202]
    assert moved > 0

    with RedisCluster.from_url(cluster.url) as rc:
        deadline = time.monotonic() + 40
        while True:
            pipe = rc.pipeline(transaction=False)
            for job_id in accepted:
                pipe.hget(keys[job_shard(job_id, SHARDS)].job(job_id), "status")
            statuses = pipe.execute()
            left = [j for j, s in zip(accepted, statuses) if s != b"completed"]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert left == [], f"{len(left)} of {len(accepted)} acknowledged jobs lost or unfinished"
    assert cluster.owner_of(slot) == target
    assert cluster._call(source, "CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    assert cluster._call(target, "CLUSTER", "COUNTKEYSINSLOT", slot) > 0
