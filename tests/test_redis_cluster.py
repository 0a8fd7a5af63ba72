"""A real local Redis Cluster, 3 masters + 3 replicas (scripts/lib/redis_cluster.py): built
without redis-cli, the whole pipeline on it, a SIGKILLed master replaced by its replica.

The cluster starts once for the module; the failover test runs last, as it changes who serves.
"""
from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster

from conftest import corpus_files, upload
from test_query_lane import register_silent_worker, searches_over_http
from scripts.lib.redis_cluster import SLOTS, LocalCluster, node_ports, parse_nodes, slot_ranges

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("cluster"), masters=3, replicas=1).start()
    yield c
    c.stop(kill=True)


@pytest.fixture
def settings_kw(cluster, namespace) -> dict:
    """The conftest fixtures (make_client, run_burst) on the cluster, in the cluster protocol."""
    return {"redis_url": cluster.url, "redis_cluster": True, "queue_namespace": namespace}


def test_slot_ranges_split_evenly_and_ports_leave_room_for_the_bus():
    assert slot_ranges(3) == [(0, 5460), (5461, 10921), (10922, 16383)]
    assert slot_ranges(1) == [(0, 16383)]
    assert node_ports(55530, 6) == list(range(55530, 55536))
    with pytest.raises(ValueError, match="55535"):
        node_ports(55531, 6)


def test_every_slot_is_served_evenly_and_every_replica_is_attached(cluster):
    assert cluster.problems() == []
    for port in cluster.alive_ports():  # every node sees the same cluster
        view = parse_nodes(cluster._call(port, "CLUSTER", "NODES"))
        masters = [n for n in view if n.is_master]
        replicas = [n for n in view if not n.is_master]
        assert len(masters) == 3 and len(replicas) == 3
        assert sum(n.slots for n in masters) == SLOTS
        assert max(n.slots for n in masters) - min(n.slots for n in masters) <= 1
        assert sorted(n.master_id for n in replicas) == sorted(n.id for n in masters)  # one replica each
    for port in cluster.ports[3:]:
        role = cluster._call(port, "ROLE")
        assert role[0] == "slave" and role[2] == cluster.master_of(port) and role[3] == "connected"


def test_the_whole_pipeline_runs_on_the_cluster(cluster, make_client, run_burst, namespace):
    client = make_client()
    photos = corpus_files("index")[:5]
    jobs = [upload(client, p, f"c{i}").json()["job_id"] for i, p in enumerate(photos)]
    _, totals = run_burst()
    assert totals.completed == 5 and totals.failed == 0
    assert {client.get(f"/api/v1/queue/status/{j}").json()["status"] for j in jobs} == {"completed"}
    assert client.get("/api/v1/queue/stats").json()["jobs"]["completed"] == 5
    # every key of the namespace lives on the one master that serves its hash tag's slot
    with RedisCluster.from_url(cluster.url) as rc:
        owner = rc.get_node_from_key("{" + namespace + "}")
        held = {n.port: len(rc.keys(f"{{{namespace}}}*", target_nodes=n)) for n in rc.get_primaries()}
    assert held[owner.port] > 0 and sum(held.values()) == held[owner.port], held


def test_retry_of_every_failed_job_puts_each_back_on_its_tenants_list(cluster, make_client, worker_settings,
                                                                     namespace):
    """retry.lua builds its tenant's keys itself, so the API's bulk retry pins each call."""
    from batcher.queue import calls
    from batcher.queue.calls import Outcome
    from batcher.queue.connect import sync_client
    from batcher.queue.consumer import JobConsumer
    from batcher.queue.jobs import JobSpec, new_job_id
    from batcher.queue.keys import Keys
    from batcher.queue.scripts import Scripts

    client, k, r = make_client(), Keys(namespace), sync_client(cluster.url, True)
    ids = [new_job_id() for _ in range(3)]
    for i, job_id in enumerate(ids):
        spec = JobSpec(f"f{i}", "n", "", {}, "sha", "image/jpeg", tenant="b" if i else "default")
        Scripts(r).run(calls.enqueue(k, job_id, spec, b"img", max_depth=100))
    worker = JobConsumer(r, worker_settings().queue, "w-fails")
    claimed = worker.take_now(3)
    worker.ack([Outcome(j, "failed", "cannot decode image") for j in claimed])
    assert client.post("/api/v1/queue/failed/retry").json()["retried"] == 3
    assert sorted(r.lrange(k.pending("b"), 0, -1)) == sorted(i.encode() for i in ids[1:])
    assert r.lrange(k.queue, 0, -1) == [ids[0].encode()] and sorted(r.lrange(k.ring, 0, -1)) == [b"b", b"default"]
    r.close()


def test_150_searches_waiting_at_once_on_the_cluster_none_refused(cluster, settings_kw, namespace):
    """Each waiting search holds a connection (BLPOP on its reply). The cluster client's pool
    per node (redis-py's default: 100) refused the 101st at once: 503 redis_unavailable."""
    with RedisCluster.from_url(cluster.url) as rc:
        register_silent_worker(rc, namespace, "zombie")
        codes = [code for code, _ in searches_over_http(settings_kw, 150, search_timeout=2)]
        assert codes == [504] * 150, {code: codes.count(code) for code in set(codes)}
        assert rc.llen("{%s}:requests" % namespace) == 150  # every one reached the lane


def test_each_503_is_logged_with_its_cause_at_most_one_line_per_period(caplog):
    import asyncio

    from redis.exceptions import MaxConnectionsError

    from api.errors import RefusalLog

    async def burst() -> None:
        refusals = RefusalLog(every_s=0.2)
        for _ in range(3):
            refusals.note(MaxConnectionsError(), "POST /api/v1/search")
        refusals.note(redis.TimeoutError("Timeout reading from 127.0.0.1:7000"), "GET /api/v1/queue/stats")
        await asyncio.sleep(0.3)

    with caplog.at_level("WARNING", logger="clipq.api"):
        asyncio.run(burst())
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["503 redis_unavailable (POST /api/v1/search): MaxConnectionsError",
                     "503 redis_unavailable x3 in the last 0.2s: 2 x POST /api/v1/search: MaxConnectionsError; "
                     "1 x GET /api/v1/queue/stats: TimeoutError: Timeout reading from 127.0.0.1:7000"]


def test_a_sigkilled_master_is_replaced_by_its_replica(cluster):
    key = "{failover}:k"
    with RedisCluster.from_url(cluster.url) as rc:
        rc.set(key, "v")
        node = rc.get_node_from_key(key)
        assert rc.execute_command("WAIT", 1, 2000, target_nodes=node) == 1  # the replica has the write
        victim = node.port
    replica = cluster.replicas_of(victim)[0]
    cluster.kill(victim)
    assert cluster.wait_failover(victim, timeout_s=30) == replica
    assert cluster.problems() == [] and victim not in cluster.masters_now()
    assert len(cluster.masters_now()) == 3
    with RedisCluster.from_url(cluster.url if victim != cluster.ports[0] else
                               f"redis://127.0.0.1:{replica}/0") as rc:
        assert rc.get(key) == b"v"
        assert rc.get_node_from_key(key).port == replica
        rc.set(key, "w")
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=victim, socket_connect_timeout=1).ping()
