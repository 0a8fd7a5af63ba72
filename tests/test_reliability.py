"""Failure modes: dead workers, poison pills, store outages, OOM, concurrent retries, Redis down."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor


from batcher.queue.consumer import JobConsumer
from batcher.settings import WorkerSettings
from conftest import CORPUS, ROOT, CountingEncoder, job_ids_by_status, upload
from test_worker import jpeg


def claim_as_dead_worker(settings: WorkerSettings, r, worker_id: str, n: int, started: bool = True) -> list[str]:
    """Claim n jobs into ``worker_id``'s processing list (``started``: and take them to the
    model) and vanish without a heartbeat."""
    c = JobConsumer(r, settings.queue, worker_id)
    c.register()
    ids = c.take_blocking(1) + c.take_now(n - 1)
    assert len(ids) == n
    if started:
        c.mark_started(ids)
    return ids


def test_reaper_returns_a_dead_workers_jobs_and_counts_an_attempt(client, run_burst, worker_settings, r):
    job_ids = [upload(client, None, f"p{i}", data=jpeg(i)).json()["job_id"] for i in range(4)]
    s = worker_settings()
    claim_as_dead_worker(s, r, "dead-worker", 4)
    assert set(job_ids_by_status(client, job_ids).values()) == {"processing"}
    assert r.llen(s.queue_namespace and "{%s}:queue" % s.queue_namespace) == 0

    _, totals = run_burst()  # the reaper runs at start
    assert totals.completed == 4
    for j in job_ids:
        status = client.get(f"/api/v1/queue/status/{j}").json()
        assert status["status"] == "completed" and status["retry_count"] == 1
    assert r.llen("{%s}:processing:dead-worker" % s.queue_namespace) == 0
    assert not r.sismember("{%s}:workers" % s.queue_namespace, "dead-worker")


def test_reaper_leaves_a_live_worker_alone(client, worker_settings, r):
    upload(client, None, "p", data=jpeg(1))
    s = worker_settings()
    claim_as_dead_worker(s, r, "alive-worker", 1)
    alive = JobConsumer(r, s.queue, "alive-worker")
    alive.beat(30, "{}")
    assert JobConsumer(r, s.queue, "reaper").reap_dead_workers() == {}
    assert r.llen("{%s}:processing:alive-worker" % s.queue_namespace) == 1
    r.pexpire("{%s}:heartbeat:alive-worker" % s.queue_namespace, 1)  # its heartbeat lapses
    time.sleep(0.05)
    assert JobConsumer(r, s.queue, "reaper").reap_dead_workers() == {"alive-worker": 1}


def test_a_worker_reaped_while_alive_that_claims_then_dies_is_reaped_again(client, worker_settings, r):
    """Redis was away longer than a worker's heartbeat TTL: the reaper took it for dead and
    struck it off. It claims (the claim registers it again) and dies before its next beat: the
    reaper still finds its list and returns the job."""
    upload(client, None, "p", data=jpeg(1))
    s = worker_settings()
    reaper = JobConsumer(r, s.queue, "reaper")
    ghost = JobConsumer(r, s.queue, "ghost")
    ghost.register()
    assert reaper.reap_dead_workers() == {"ghost": 0}  # no heartbeat: struck off
    assert ghost.take_now(1) != []
    assert reaper.reap_dead_workers() == {"ghost": 1}
    assert client.get("/api/v1/queue/stats").json()["pending_in_queue"] == 1


def test_a_job_that_keeps_killing_workers_fails_after_max_attempts(client, worker_settings, r):
    job_id = upload(client, None, "pill", data=jpeg(1)).json()["job_id"]
    s = worker_settings(max_attempts=3)
    reaper = JobConsumer(r, s.queue, "reaper")
    for attempt in range(3):
        claim_as_dead_worker(s, r, f"victim-{attempt}", 1)
        reaper.reap_dead_workers()
    status = client.get(f"/api/v1/queue/status/{job_id}").json()
    assert status["status"] == "failed" and status["retry_count"] == 3
    assert "worker died" in status["error_message"]
    assert r.zscore("{%s}:failed" % s.queue_namespace, job_id) is not None
    stats = client.get("/api/v1/queue/stats").json()["jobs"]
    assert stats["failed"] == 1 and stats["queued"] == 0 and stats["processing"] == 0


class FlakyUpsert:
    """Wraps the real store's upsert: the first ``failures`` calls raise like an unreachable Qdrant."""

    def __init__(self, upsert, failures: int) -> None:
        self.upsert, self.failures, self.calls = upsert, failures, 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("qdrant: connection refused")
        return self.upsert(*args)


def test_store_outage_retries_with_backoff_then_completes(client, start_worker):
    job_ids = [upload(client, None, f"p{i}", data=jpeg(i)).json()["job_id"] for i in range(3)]
    app = start_worker(max_attempts=5)
    flaky = app.store.upsert = FlakyUpsert(app.store.upsert, failures=2)
    totals = app.run(burst=True)
    assert flaky.calls >= 3  # retried jobs may come back in separate batches (jitter)
    retries = []
    for j in job_ids:
        status = client.get(f"/api/v1/queue/status/{j}").json()
        assert status["status"] == "completed" and status["retry_count"] in (1, 2)
        retries.append(status["retry_count"])
    assert totals.completed == 3 and totals.failed == 0 and totals.retried == sum(retries)


def test_store_down_for_good_fails_jobs_after_max_attempts(client, start_worker, r, namespace):
    job_id = upload(client, None, "p", data=jpeg(1)).json()["job_id"]
    app = start_worker(max_attempts=3)
    app.store.upsert = FlakyUpsert(app.store.upsert, failures=10**6)
    totals = app.run(burst=True)
    assert totals.failed == 1 and totals.retried == 2
    status = client.get(f"/api/v1/queue/status/{job_id}").json()
    assert status["status"] == "failed" and status["retry_count"] == 3
    assert "vector store unavailable" in status["error_message"]
    assert r.zscore("{%s}:failed" % namespace, job_id) is not None
    assert r.exists("{%s}:image:%s" % (namespace, job_id))  # kept for a manual retry
    assert 0 < r.ttl("{%s}:job:%s" % (namespace, job_id)) <= app.settings.failed_job_ttl


def test_unreachable_qdrant_server_is_a_transient_failure(client, start_worker):
    """A real Qdrant client pointed at a closed port."""
    from qdrant_client import QdrantClient

    from batcher.store.server import ServerStore

    job_id = upload(client, None, "p", data=jpeg(1)).json()["job_id"]
    app = start_worker(max_attempts=2)
    dead = ServerStore(QdrantClient(url="http://127.0.0.1:9", timeout=1), "products", app.store.dim)
    app.store.upsert = dead.upsert
    totals = app.run(burst=True)
    assert totals.retried == 1 and totals.failed == 1
    assert "vector store unavailable" in client.get(f"/api/v1/queue/status/{job_id}").json()["error_message"]


def test_oom_splits_the_batch_and_lowers_the_ceiling(client, start_worker, encoder):
    for i in range(16):
        upload(client, None, f"p{i}", data=jpeg(i))
    counting = CountingEncoder(encoder, oom_above=4)
    app = start_worker(encoder_override=counting, worker_batch_size=16, worker_max_wait_ms=1000)
    totals = app.run(burst=True)
    assert totals.completed == 16 and totals.failed == 0 and totals.retried == 0
    assert sum(counting.image_batches) == 16 and max(counting.image_batches) <= 4
    assert app.metrics.registry.get_sample_value("clipq_oom_splits_total") >= 1


def test_oom_on_a_single_image_retries_instead_of_crashing(client, start_worker, encoder):
    job_id = upload(client, None, "p", data=jpeg(1)).json()["job_id"]
    app = start_worker(encoder_override=CountingEncoder(encoder, oom_above=0), max_attempts=2)
    totals = app.run(burst=True)
    assert totals.retried == 1 and totals.failed == 1
    assert "out of memory" in client.get(f"/api/v1/queue/status/{job_id}").json()["error_message"]


def test_concurrent_manual_retries_requeue_exactly_once(client, run_burst, r, namespace):
    bad = upload(client, CORPUS / "hostile" / "truncated_jpeg.jpg", "bad").json()["job_id"]
    run_burst()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: client.post(f"/api/v1/queue/retry/{bad}").status_code, range(8)))
    assert sorted(codes) == [202] + [409] * 7
    assert r.lrange("{%s}:queue" % namespace, 0, -1) == [bad.encode()]
    assert client.get("/api/v1/queue/stats").json()["jobs"]["queued"] == 1


def test_timestamps_come_from_redis_not_the_local_clock(client, r, monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 0.0)  # a worker or API host with a broken clock
    job_id = upload(client, None, "p", data=jpeg(1)).json()["job_id"]
    status = client.get(f"/api/v1/queue/status/{job_id}").json()
    sec, _ = r.time()
    from datetime import datetime

    created = datetime.fromisoformat(status["created_at"].replace("Z", "+00:00")).timestamp()
    assert abs(created - sec) < 5


def test_queue_full_answers_429_with_retry_after(make_client):
    client = make_client(max_queue_depth=2)
    assert [upload(client, None, f"p{i}", data=jpeg(i)).status_code for i in range(2)] == [202, 202]
    resp = upload(client, None, "p3", data=jpeg(3))
    assert resp.status_code == 429
    assert resp.headers["retry-after"].isdigit()
    assert resp.json()["error"]["code"] == "queue_full"
    assert client.get("/api/v1/queue/stats").json()["jobs"]["total"] == 2


def test_completed_jobs_expire_and_their_images_are_deleted(client, run_burst, r, namespace):
    job_id = upload(client, None, "p", data=jpeg(1)).json()["job_id"]
    assert r.exists("{%s}:image:%s" % (namespace, job_id))
    app, _ = run_burst(job_ttl=3600)
    assert not r.exists("{%s}:image:%s" % (namespace, job_id))
    assert 3500 < r.ttl("{%s}:job:%s" % (namespace, job_id)) <= 3600


def test_redis_down_gives_503_quickly_never_500(make_client):
    client = make_client(redis_url="redis://127.0.0.1:1/0", redis_timeout=1.0)
    t0 = time.monotonic()
    resp = upload(client, None, "p", data=jpeg(1))
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "redis_unavailable"
    assert time.monotonic() - t0 < 2
    stats = client.get("/api/v1/queue/stats")
    assert stats.status_code == 503 and stats.json()["available"] is False
    assert client.get("/readyz").status_code == 503
    assert client.get("/api/v1/queue/status/job-" + "0" * 32).status_code == 503
    assert client.get("/healthz").status_code == 200


def test_sigterm_finishes_the_batch_returns_the_rest_and_exits_0(client, redis_url, namespace, tmp_path, r):
    job_ids = [upload(client, None, f"p{i}", data=jpeg(i, (400, 300))).json()["job_id"] for i in range(200)]
    env = dict(os.environ, REDIS_URL=redis_url, QUEUE_NAMESPACE=namespace, CLIP_MODEL="clipq-tiny",
               CLIP_PRETRAINED="none", CLIP_DEVICE="cpu", QDRANT_PATH=str(tmp_path / "q"),
               WORKER_METRICS_PORT="0", WORKER_BATCH_SIZE="4", WORKER_SHUTDOWN_GRACE="20")
    proc = subprocess.Popen([sys.executable, "-m", "batcher", "--worker-id", "sig"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while client.get("/api/v1/queue/stats").json()["jobs"]["completed"] < 8:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    out = proc.stdout.read()
    statuses = job_ids_by_status(client, job_ids)
    assert set(statuses.values()) <= {"completed", "queued"}, out[-2000:]
    done = sum(s == "completed" for s in statuses.values())
    assert 8 <= done < 200
    assert r.llen("{%s}:queue" % namespace) == 200 - done  # nothing lost, nothing stuck
    assert r.llen("{%s}:processing:sig" % namespace) == 0
    assert not r.exists("{%s}:heartbeat:sig" % namespace)


def test_a_restarted_worker_recovers_its_own_list(client, run_burst, worker_settings, r):
    """A worker that comes back under the same id (a StatefulSet pod) requeues what it held."""
    job_ids = [upload(client, None, f"p{i}", data=jpeg(i)).json()["job_id"] for i in range(3)]
    s = worker_settings(worker_id="stable-id")
    claim_as_dead_worker(s, r, "stable-id", 3)
    _, totals = run_burst(worker_id="stable-id")
    assert totals.completed == 3
    assert {client.get(f"/api/v1/queue/status/{j}").json()["retry_count"] for j in job_ids} == {1}


def test_the_api_survives_a_redis_restart_without_late_503s(tmp_path, make_client):
    """Pooled connections opened before the restart must not fail later requests."""
    from scripts.lib.redis_server import LocalRedis

    server = LocalRedis(tmp_path / "r", aof=True).start()
    try:
        client = make_client(redis_url=server.url)
        with ThreadPoolExecutor(8) as pool:  # several pooled connections
            codes = list(pool.map(lambda i: upload(client, None, f"a{i}", data=jpeg(i)).status_code, range(32)))
        assert codes == [202] * 32
        server.stop(kill=True)
        server.start()
        codes = [upload(client, None, f"b{i}", data=jpeg(i)).status_code for i in range(20)]
        assert codes == [202] * 20
        assert client.get("/api/v1/queue/stats").json()["jobs"]["total"] == 52
        server.stop(kill=True)
        assert upload(client, None, "down", data=jpeg(1)).status_code == 503
    finally:
        server.stop()


def test_enqueue_is_idempotent_for_a_retried_call(redis_url, r, namespace):
    from batcher.queue import calls
    from batcher.queue.jobs import JobSpec
    from batcher.queue.keys import Keys
    from batcher.queue.scripts import Scripts

    k, job_id = Keys(namespace), "job-" + "1" * 32
    call = calls.enqueue(k, job_id, JobSpec("p", "n", "", {}, "sha", "image/jpeg"), b"img", max_depth=100)
    for _ in range(2):  # a reply lost, the call repeated
        Scripts(r).run(call)
    assert r.llen(k.queue) == 1 and int(r.hget(k.stats, "total")) == 1


def test_a_reaped_but_living_worker_registers_again_with_its_heartbeat(worker_settings, r):
    s = worker_settings()
    c = JobConsumer(r, s.queue, "survivor")
    c.beat(30, "{}")
    r.srem("{%s}:workers" % s.queue_namespace, "survivor")  # reaped while Redis was away
    c.beat(30, "{}")
    assert r.sismember("{%s}:workers" % s.queue_namespace, "survivor")


def test_a_reaped_workers_late_ack_changes_nothing(client, worker_settings, r, run_burst):
    """Only the holder of a job may record its outcome: no counter moves twice."""
    from batcher.queue.calls import Outcome

    job_id = upload(client, None, "p", data=jpeg(1)).json()["job_id"]
    s = worker_settings()
    slow = JobConsumer(r, s.queue, "slow")
    slow.register()
    assert slow.take_blocking(1) + slow.take_now(0) == [job_id]
    JobConsumer(r, s.queue, "reaper").reap_dead_workers()  # no heartbeat: presumed dead, job requeued
    late = slow.ack([Outcome(job_id, "completed")])
    assert (late.completed, late.skipped) == (0, 1)
    assert client.get(f"/api/v1/queue/status/{job_id}").json()["status"] == "queued"
    _, totals = run_burst()
    assert totals.completed == 1
    stats = client.get("/api/v1/queue/stats").json()["jobs"]
    assert stats == {"queued": 0, "processing": 0, "completed": 1, "failed": 0, "superseded": 0, "total": 1}


def test_a_long_batch_never_starves_the_heartbeat(client, serve_worker, encoder, r, namespace):
    class SlowModel:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def embed_images(self, images):
            time.sleep(3)  # a batch three heartbeat TTLs long
            return self.inner.embed_images(images)

    app = serve_worker(encoder_override=SlowModel(encoder), worker_heartbeat_ttl=1.0)
    job_id = upload(client, None, "p", data=jpeg(1)).json()["job_id"]
    key = "{%s}:heartbeat:%s" % (namespace, app.settings.worker_id)
    deadline = time.monotonic() + 10
    while client.get(f"/api/v1/queue/status/{job_id}").json()["status"] != "processing":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for _ in range(25):  # 2.5 s inside the batch
        assert r.exists(key), "the heartbeat lapsed during a long batch"
        time.sleep(0.1)
    assert JobConsumer(r, app.settings.queue, "reaper").reap_dead_workers() == {}


def test_a_claim_whose_reply_was_lost_is_requeued_by_its_living_worker(client, serve_worker, r, namespace):
    """Redis moved an id into the worker's list but the worker never heard: it must not sit there."""
    from dataclasses import replace

    from batcher.queue import calls
    from batcher.queue.jobs import JobSpec
    from batcher.queue.keys import Keys
    from batcher.queue.scripts import Scripts

    app = serve_worker(worker_reaper_interval=0.3)
    time.sleep(0.5)
    # what a BLMOVE whose reply was lost leaves behind: a queued job in the worker's own list
    k, job_id = Keys(namespace), "job-" + "2" * 32
    call = calls.enqueue(k, job_id, JobSpec("lost", "n", "", {}, "sha", "image/jpeg"), jpeg(1), max_depth=100)
    Scripts(r).run(replace(call, keys=[k.processing(app.settings.worker_id), *call.keys[1:]]))
    deadline = time.monotonic() + 15
    while client.get(f"/api/v1/queue/status/{job_id}").json()["status"] != "completed":
        assert time.monotonic() < deadline, "the orphaned job was never processed"
        time.sleep(0.05)
    stats = client.get("/api/v1/queue/stats").json()["jobs"]
    assert stats == {"queued": 0, "processing": 0, "completed": 1, "failed": 0, "superseded": 0, "total": 1}
    assert client.get(f"/api/v1/queue/status/{job_id}").json()["retry_count"] == 0


class ReapedMidBatch:
    """The real encoder; during its first forward pass the worker is taken for dead and reaped,
    so its job is back in the queue (for another worker) before the worker acknowledges it."""

    def __init__(self, inner) -> None:
        self.inner, self.reap = inner, None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_images(self, images):
        if self.reap is not None:
            self.reap()
            self.reap = None
        return self.inner.embed_images(images)


def test_a_late_ack_is_not_counted_as_completed(client, start_worker, run_burst, encoder, r, namespace, caplog):
    """The ack script's per-job result is what the worker counts, logs and exports."""
    job_id = upload(client, None, "p", data=jpeg(1)).json()["job_id"]
    late = ReapedMidBatch(encoder)
    app = start_worker(encoder_override=late)

    def reap():
        r.delete("{%s}:heartbeat:%s" % (namespace, app.settings.worker_id))
        assert JobConsumer(r, app.settings.queue, "other").reap_dead_workers() == {app.settings.worker_id: 1}

    late.reap = reap
    totals = app.run(burst=True, max_jobs=1)
    assert late.reap is None  # it did run, mid-batch
    assert (totals.completed, totals.failed, totals.retried) == (0, 0, 0)
    assert app.metrics.registry.get_sample_value("clipq_jobs_total", {"outcome": "completed"}) == 0
    assert app.metrics.registry.get_sample_value("clipq_job_latency_seconds_count") == 0
    assert f"job {job_id} was no longer ours" in caplog.text
    assert client.get(f"/api/v1/queue/status/{job_id}").json()["status"] == "queued"

    other, totals = run_burst()  # the worker it was handed to completes it: counted once in all
    assert totals.completed == 1
    # the late worker had stored its vector: the next one finds the photo there, unchanged
    assert other.metrics.registry.get_sample_value("clipq_jobs_total", {"outcome": "unchanged"}) == 1
    stats = client.get("/api/v1/queue/stats").json()["jobs"]
    assert stats == {"queued": 0, "processing": 0, "completed": 1, "failed": 0, "superseded": 0, "total": 1}


def test_the_consumer_alone_knows_what_it_holds(client, worker_settings, r):
    from batcher.queue.calls import Outcome

    ids = {upload(client, None, f"p{i}", data=jpeg(i)).json()["job_id"] for i in range(3)}
    c = JobConsumer(r, worker_settings().queue, "holder")
    taken = c.take_blocking(1) + c.take_now(5)
    assert set(taken) == ids and c.held() == ids and c.in_flight() == 3
    jobs = c.fetch(taken)
    ack = c.ack([Outcome(j.job_id, "completed") for j in jobs[:2]])
    assert ack.results == ("completed", "completed")
    assert c.held() == {jobs[2].job_id} and c.in_flight() == 1
    assert c.requeue_orphans() == 0  # all it lists, it holds
    assert c.release() == 1 and c.held() == set() and c.in_flight() == 0
