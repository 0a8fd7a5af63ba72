"""REDIS_WAIT_REPLICAS=k: an upload is acknowledged (202) only once k replicas have it; the
worker's ack WAITs too. A real master with a real replica (REPLICAOF), and one without."""
from __future__ import annotations

import time

import pytest
import redis

from conftest import corpus_files, upload
from scripts.lib.redis_server import LocalRedis


def attach_replica(master: LocalRedis, directory) -> LocalRedis:
    replica = LocalRedis(directory, aof=False).start()
    client = redis.Redis(port=replica.port)
    client.execute_command("REPLICAOF", "127.0.0.1", master.port)
    deadline = time.monotonic() + 10
    while client.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica did not attach"
        time.sleep(0.05)
    client.close()
    return replica


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    """(master, replica): a single Redis with one replica."""
    master = LocalRedis(tmp_path_factory.mktemp("master"), aof=False).start()
    replica = attach_replica(master, tmp_path_factory.mktemp("replica"))
    yield master, replica
    replica.stop(kill=True)
    master.stop(kill=True)


def test_an_upload_is_acknowledged_once_the_replica_has_it(replicated, make_client, namespace):
    master, replica = replicated
    client = make_client(redis_url=master.url, redis_wait_replicas=1, redis_wait_timeout_ms=2000)
    photo = corpus_files("index")[0]
    jobs = [upload(client, photo, f"p{i}") for i in range(5)]
    assert [r.status_code for r in jobs] == [202] * 5
    with redis.Redis(port=replica.port) as rr:  # WAIT returned: the replica already holds each job
        for r in jobs:
            assert rr.hget(f"{{{namespace}}}:job:{r.json()['job_id']}", "status") == b"queued"


def test_an_upload_no_replica_confirms_gets_503_with_retry_after(make_client, r, namespace):
    client = make_client(redis_wait_replicas=1, redis_wait_timeout_ms=50)  # the session Redis: no replica
    resp = upload(client, corpus_files("index")[0], "lonely")
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
    body = resp.json()
    assert body["error"]["code"] == "not_replicated" and "failover" in body["error"]["message"]
    assert body["replicas_confirmed"] == 0 and body["replicas_wanted"] == 1
    # queued on the master all the same: it may or may not survive a failover
    assert r.hget(f"{{{namespace}}}:job:{body['job_id']}", "status") == b"queued"


def test_default_sends_no_wait(make_client, r):
    before = int(r.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
    assert upload(make_client(), corpus_files("index")[0], "plain").status_code == 202
    assert int(r.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)) == before


def test_an_ack_no_replica_confirms_is_logged_and_the_jobs_stay_completed(client, run_burst, caplog):
    jobs = [upload(client, p, f"a{i}").json()["job_id"] for i, p in enumerate(corpus_files("index")[:3])]
    with caplog.at_level("WARNING", logger="batcher.queue.consumer"):
        app, totals = run_burst(redis_wait_replicas=1, redis_wait_timeout_ms=20)
    assert totals.completed == 3
    unconfirmed = app.metrics.registry.get_sample_value("clipq_unreplicated_acks_total")
    assert unconfirmed is not None and unconfirmed >= 1  # one per ack call (a batch may take all 3)
    assert any("not confirmed by replicas" in rec.getMessage() for rec in caplog.records)
    assert {client.get(f"/api/v1/queue/status/{j}").json()["status"] for j in jobs} == {"completed"}


def test_an_ack_the_replica_confirms_logs_nothing(replicated, make_client, run_burst, caplog):
    master, _ = replicated
    client = make_client(redis_url=master.url, redis_wait_replicas=1, redis_wait_timeout_ms=2000)
    assert upload(client, corpus_files("index")[0], "b0").status_code == 202
    with caplog.at_level("WARNING", logger="batcher.queue.consumer"):
        app, totals = run_burst(redis_url=master.url, redis_wait_replicas=1, redis_wait_timeout_ms=2000)
    assert totals.completed == 1
    assert app.metrics.registry.get_sample_value("clipq_unreplicated_acks_total") == 0
    assert not any("not confirmed" in rec.getMessage() for rec in caplog.records)


def test_one_unconfirmed_ack_counts_one(client, run_burst):
    job = upload(client, corpus_files("index")[0], "c0").json()["job_id"]
    app, totals = run_burst(redis_wait_replicas=1, redis_wait_timeout_ms=20)
    assert totals.completed == 1
    assert app.metrics.registry.get_sample_value("clipq_unreplicated_acks_total") == 1
    assert client.get(f"/api/v1/queue/status/{job}").json()["status"] == "completed"
