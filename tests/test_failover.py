"""A master SIGKILLed mid-traffic on a real Redis Cluster of 3 masters with 2 replicas each, with
REDIS_WAIT_REPLICAS=1 (with one replica each, the promoted replica would have none left to
confirm: that shard would answer 503 not_replicated until one is attached again).

Uploads run from a few threads through a real uvicorn API; the master that holds one shard
dies mid-way and its replica takes over. The API answers 202 or 503 with Retry-After (never a
500, never a request over 5 s), uploads to that shard succeed again once the replica serves,
and every job the API acknowledged (202) is still there afterwards and completes.
"""
from __future__ import annotations

import time

import pytest
import redis
from redis.cluster import RedisCluster

from conftest import corpus_files, served
from uploader import Uploader, numbered
from batcher.queue.keys import product_shard, shard_keys
from scripts.lib.redis_cluster import LocalCluster

pytestmark = pytest.mark.slow
SHARDS, THREADS = 3, 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("cluster"), masters=3, replicas=2).start()
    yield c
    c.stop(kill=True)


@pytest.fixture
def settings_kw(cluster, namespace) -> dict:
    live = f"redis://127.0.0.1:{cluster.alive_ports()[0]}/0"  # a test before may have killed cluster.url's node
    return {"redis_url": live, "redis_cluster": True, "queue_namespace": namespace, "queue_shards": SHARDS,
            "redis_wait_replicas": 1, "redis_wait_timeout_ms": 1000}


def test_a_master_killed_mid_upload_loses_no_acknowledged_job(cluster, settings_kw, namespace, run_burst):
    from api.main import create_app
    from api.settings import ApiSettings

    shard = 0
    with RedisCluster.from_url(settings_kw["redis_url"]) as rc:
        victim = rc.get_node_from_key(shard_keys(namespace, SHARDS)[shard].queue).port
    image = corpus_files("index")[0].read_bytes()
    app = create_app(ApiSettings(**settings_kw, allow_anonymous=True))
    with served(app) as base, Uploader(base, image, THREADS, numbered("f")) as up:
        time.sleep(1.5)
        killed_at = time.monotonic()
        cluster.kill(victim)
        cluster.wait_failover(victim, timeout_s=30)
        recovered_at = time.monotonic()
        deadline = recovered_at + 15
        while not any(t > recovered_at and code == 202 and product_shard(p, SHARDS) == shard
                      for t, p, code, *_ in list(up.seen)):
            assert time.monotonic() < deadline, "uploads to the failed-over shard never succeeded again"
            time.sleep(0.2)
        time.sleep(0.5)
    codes = {}
    for _, _, code, _, _, _ in up.seen:
        codes[code] = codes.get(code, 0) + 1
    assert set(codes) <= {202, 503}, codes
    assert all("retry-after" in h for _, _, code, _, _, h in up.seen if code == 503)
    assert max(s for _, _, _, s, _, _ in up.seen) < 5, max(s for _, _, _, s, _, _ in up.seen)
    assert any(t < killed_at and c == 202 for t, _, c, *_ in up.seen)
    accepted = [body["job_id"] for _, _, code, _, body, _ in up.seen if code == 202]
    print(f"failover after {recovered_at - killed_at:.1f}s: {codes}")

    live = next(p for p in cluster.alive_ports())
    _, totals = run_burst(redis_url=f"redis://127.0.0.1:{live}/0")
    assert totals.completed >= len(accepted)
    with RedisCluster.from_url(f"redis://127.0.0.1:{live}/0") as rc:
        pipe = rc.pipeline(transaction=False)
        keys = shard_keys(namespace, SHARDS)
        from batcher.queue.keys import job_shard
        for job_id in accepted:
            pipe.hget(keys[job_shard(job_id, SHARDS)].job(job_id), "status")
        statuses = pipe.execute()
    lost = [j for j, s in zip(accepted, statuses) if s != b"completed"]
    assert lost == [], f"{len(lost)} of {len(accepted)} acknowledged jobs lost or unfinished"


def replicas_of(cluster: LocalCluster, master: int) -> list[int]:
    nodes = cluster.topology()
    master_id = next(n.id for n in nodes if n.port == master)
    return [n.port for n in nodes if n.master_id == master_id and n.port in cluster.alive_ports()]


def replicated_list(port: int, key: str) -> list[bytes]:
    """A list as a replica holds it (READONLY: a replica answers reads of its master's slots)."""
    with redis.Redis(port=port) as r:
        pipe = r.pipeline(transaction=False)
        pipe.execute_command("READONLY")
        pipe.lrange(key, 0, -1)
        return pipe.execute()[1]


def test_a_serving_worker_rides_through_a_failover_and_the_reaper_returns_a_dead_workers_jobs(
        cluster, settings_kw, namespace, serve_worker):
    """One serving worker, no other started afterwards, while the master of shard 1 is SIGKILLed
    mid-traffic. Just before, a second worker claims jobs of that shard and dies (it never beats
    nor acks again; its claim has reached the replicas). The serving worker reconnects by
    itself, its reaper returns the dead worker's jobs, and every acknowledged job completes."""
    from api.main import create_app
    from api.settings import ApiSettings
    from batcher.queue.connect import sync_client
    from batcher.queue.consumer import JobConsumer
    from batcher.queue.keys import job_shard
    from batcher.settings import WorkerSettings

    shard = 1
    keys = shard_keys(namespace, SHARDS)
    with RedisCluster.from_url(settings_kw["redis_url"]) as rc:
        victim = rc.get_node_from_key(keys[shard].queue).port
    worker = serve_worker(worker_heartbeat_ttl=2)
    image = corpus_files("index")[0].read_bytes()
    app = create_app(ApiSettings(**settings_kw, allow_anonymous=True))
    client = sync_client(settings_kw["redis_url"], True)
    zombie = JobConsumer(client, WorkerSettings(**settings_kw).queue, "w-dies-in-the-dark", keys[shard])
    with served(app) as base, Uploader(base, image, THREADS, numbered("z"), pause_s=0.02) as up:
        deadline = time.monotonic() + 15
        while not (claimed := zombie.take_now(5)):  # alive until it claims: then it dies
            zombie.beat(2, "{}")
            assert time.monotonic() < deadline, "no job of shard 1 came to claim"
            time.sleep(0.05)
        while not all(replicated_list(p, keys[shard].processing(zombie.worker_id)) for p in replicas_of(cluster, victim)):
            assert time.monotonic() < deadline, "the dead worker's claim never reached the replicas"
            time.sleep(0.05)
        cluster.kill(victim)
        cluster.wait_failover(victim, timeout_s=30)
        time.sleep(2)
    accepted = [body["job_id"] for _, _, code, _, body, _ in up.seen if code == 202]
    assert set(claimed) <= set(accepted)
    deadline = time.monotonic() + 60
    while True:
        pipe = client.pipeline(transaction=False)
        for job_id in accepted:
            pipe.hget(keys[job_shard(job_id, SHARDS)].job(job_id), "status")
        left = [j for j, s in zip(accepted, pipe.execute()) if s != b"completed"]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert left == [], (f"{len(left)} of {len(accepted)} acknowledged jobs unfinished "
                        f"({len(set(claimed) & set(left))} of them claimed by the dead worker)")
    assert client.llen(keys[shard].processing(zombie.worker_id)) == 0
    assert not worker.stop.is_set()
    client.close()
