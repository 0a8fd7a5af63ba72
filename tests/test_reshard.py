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
import redis
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
    from batcher.queue.durable import Durability, NotReplicated, run_durable
    from batcher.queue.owner import SlotMoving
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
    with pytest.raises(NotReplicated):  # MOVED: the map is refreshed, and the script goes to the target
        run_durable(client, scripts, call, d)
    client.close()


class Migration:
    """One slot's migration done by hand, a step at a time: keys move when the test says."""

    def __init__(self, cluster: LocalCluster, slot: int) -> None:
        self.cluster, self.slot = cluster, slot
        self.source = cluster.owner_of(slot)
        self.target = next(p for p in cluster.masters_now() if p != self.source)
        cluster._call(self.target, "CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.ids[self.source])
        cluster._call(self.source, "CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.ids[self.target])

    def move(self, keys: list[str]) -> None:
        self.cluster._call(self.source, "MIGRATE", "127.0.0.1", self.target, "", 0, 5000, "KEYS", *keys)

    def left(self) -> list[str]:
        """The slot's keys still on the source."""
        return list(self.cluster._call(self.source, "CLUSTER", "GETKEYSINSLOT", self.slot, 10000))

    def finish(self) -> None:
        self.move(self.left())
        for port in [self.target, self.source] + [p for p in self.cluster.masters_now()
                                                  if p not in (self.source, self.target)]:
            self.cluster._call(port, "CLUSTER", "SETSLOT", self.slot, "NODE", self.cluster.ids[self.target])

    def on(self, port: int, *command):
        return self.cluster._call(port, *command)


def snapshot(m: Migration, k, ids: list[str], worker_id: str, tenant: str = "default") -> dict:
    """What the queue holds, each key read on the node that holds it (ASKING on the target);
    ``tenant``: whose pending list and counters."""
    on_source = set(m.left())

    def read(key: str, *command):
        if key in on_source:
            return m.on(m.source, *command)
        with redis.Redis(port=m.target, decode_responses=True) as r:
            pipe = r.pipeline(transaction=False)
            pipe.execute_command("ASKING")
            pipe.execute_command(*command)
            return pipe.execute()[1]

    return {"queue": read(k.pending(tenant), "LRANGE", k.pending(tenant), 0, -1),
            "ring": read(k.ring, "LRANGE", k.ring, 0, -1),
            "tenant_stats": read(k.tenant_stats(tenant), "HGETALL", k.tenant_stats(tenant)),
            "processing": read(k.processing(worker_id), "LRANGE", k.processing(worker_id), 0, -1),
            "stats": read(k.stats, "HGETALL", k.stats),
            "jobs": [read(k.job(i), "HGETALL", k.job(i)) for i in ids]}


@pytest.mark.parametrize("moved", ["a job key", "every key but a job key"])
def test_a_script_that_meets_a_moved_key_writes_nothing(cluster, namespace, moved):
    """Mid-migration, the claim, started, ack and reap scripts each meet a job key on the other
    node than their declared keys. Each stops with SlotMoving having written nothing: a key
    already moved is caught before the first write on the source, and an ASK (every declared key
    moved) is not followed, where a missing job would read as gone. Once the slot has moved,
    the same calls go to the target, and no job is lost."""
    from batcher.queue import calls
    from batcher.queue.calls import Outcome
    from batcher.queue.connect import sync_client
    from batcher.queue.consumer import JobConsumer
    from batcher.queue.jobs import JobSpec
    from batcher.queue.keys import Keys
    from batcher.queue.owner import SlotMoving
    from batcher.queue.scripts import Scripts
    from batcher.settings import WorkerSettings

    k = Keys(namespace)
    client = sync_client(cluster.url, True)
    scripts = Scripts(client)
    settings = WorkerSettings(redis_url=cluster.url, redis_cluster=True, queue_namespace=namespace)
    ids = [f"job-{namespace}-{i}" for i in range(6)]
    for i, job_id in enumerate(ids):
        spec = JobSpec(f"p{i}", "n", "", {}, "sha", "image/jpeg")
        scripts.run(calls.enqueue(k, job_id, spec, b"img", max_depth=100))
    worker = JobConsumer(client, settings.queue, "w-mid")
    worker.register()
    held = worker.take_now(3)  # ids[0:3]; ids[3:6] stay queued
    m = Migration(cluster, key_slot(k.queue.encode()))
    if moved == "a job key":
        m.move([k.job(held[1]), k.job(ids[4])])
    else:
        m.move([key for key in m.left() if key not in (k.job(held[1]), k.job(ids[4]))])
    before = snapshot(m, k, ids, "w-mid")
    done = [Outcome(i, "completed") for i in held]
    attempts = {"claim": lambda: worker.take_now(3), "started": lambda: worker.mark_started(held),
                "ack": lambda: worker.ack(done), "release": lambda: worker.release()}
    for name, attempt in attempts.items():
        with pytest.raises(SlotMoving):
            attempt()
        assert snapshot(m, k, ids, "w-mid") == before, f"{name} wrote before it stopped"
    m.finish()
    worker = JobConsumer(client, settings.queue, "w-mid")  # the held set went with release
    worker._hold(held)
    assert worker.ack(done).completed == 3
    assert sorted(worker.take_now(3)) == sorted(ids[3:])
    statuses = [client.hget(k.job(i), "status") for i in ids]
    assert statuses == [b"completed"] * 3 + [b"processing"] * 3
    client.close()


def test_a_tenants_key_moved_stops_the_scripts_before_any_write(cluster, namespace):
    """The per-tenant keys are built inside the scripts, not declared: a tenant's counters moved
    to the target alone stop claim, ack and release whole, like a job key (they read them first)."""
    from batcher.queue import calls
    from batcher.queue.calls import Outcome
    from batcher.queue.connect import sync_client
    from batcher.queue.consumer import JobConsumer
    from batcher.queue.jobs import JobSpec
    from batcher.queue.keys import Keys
    from batcher.queue.owner import SlotMoving
    from batcher.queue.scripts import Scripts
    from batcher.settings import WorkerSettings

    k = Keys(namespace)
    client = sync_client(cluster.url, True)
    ids = [f"job-{namespace}-{i}" for i in range(4)]
    for i, job_id in enumerate(ids):
        spec = JobSpec(f"p{i}", "n", "", {}, "sha", "image/jpeg", tenant="b")
        Scripts(client).run(calls.enqueue(k, job_id, spec, b"img", max_depth=100))
    worker = JobConsumer(client, WorkerSettings(redis_url=cluster.url, redis_cluster=True,
                                                queue_namespace=namespace).queue, "w-tenant")
    worker.register()
    held = worker.take_now(2)
    m = Migration(cluster, key_slot(k.queue.encode()))
    m.move([k.tenant_stats("b")])
    before = snapshot(m, k, ids, "w-tenant", "b")
    done = [Outcome(i, "completed") for i in held]
    for name, attempt in {"claim": lambda: worker.take_now(2), "ack": lambda: worker.ack(done),
                          "release": lambda: worker.release()}.items():
        with pytest.raises(SlotMoving):
            attempt()
        assert snapshot(m, k, ids, "w-tenant", "b") == before, f"{name} wrote before it stopped"
    m.finish()
    worker._hold(held)
    assert worker.ack(done).completed == 2 and sorted(worker.take_now(2)) == sorted(ids[2:])
    assert client.hgetall(k.tenant_stats("b")) == client.hgetall(k.stats)
    client.close()


def whereabouts(rc, keys, job_ids: list[str]) -> dict[str, dict]:
    """Where each job is: its record, and the lists and sets of its shard that hold it."""
    found = {}
    for job_id in job_ids:
        k = keys[job_shard(job_id, SHARDS)]
        lists = [k.pending(), k.queue] + [k.processing(w.decode()) for w in rc.smembers(k.workers)]
        found[job_id] = {"record": rc.hgetall(k.job(job_id)), "ring": rc.lrange(k.ring, 0, -1),
                         "in": [name for name in lists if rc.lpos(name, job_id) is not None],
                         "delayed": rc.zscore(k.delayed, job_id), "failed": rc.zscore(k.failed, job_id)}
    return found


@pytest.mark.parametrize("batch, pause_s", [(10000, 0), (3, 0.03)], ids=["one MIGRATE", "3 keys at a time"])
def test_a_slot_resharded_mid_traffic_loses_no_acknowledged_job(cluster, settings_kw, namespace, serve_worker, batch,
                                                                 pause_s):
    """In one MIGRATE the slot's keys move at once; 3 at a time, the worker's scripts meet job
    keys on either node for a while (the case the test above takes apart)."""
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
        moved = cluster.migrate_slot(slot, target, batch=batch, hold_s=1.0, pause_s=pause_s)
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
        assert left == [], (f"{len(left)} of {len(accepted)} acknowledged jobs lost or unfinished: "
                            f"{whereabouts(rc, keys, left)}")
    assert cluster.owner_of(slot) == target
    assert cluster._call(source, "CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    assert cluster._call(target, "CLUSTER", "COUNTKEYSINSLOT", slot) > 0
