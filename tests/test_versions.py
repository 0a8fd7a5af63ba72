"""Last upload wins, and a delete sticks (issue 13, faults 4 and 5): versions given at enqueue
time decide every race, through real Redis, the tiny real model and embedded Qdrant."""
from __future__ import annotations

import hashlib
import threading
import time

import numpy as np
import pytest

from batcher.queue.jobs import Job
from batcher.settings import WorkerSettings
from conftest import open_engine, stored_points, upload
from test_reliability import FlakyUpsert, claim_as_dead_worker
from test_worker import jpeg


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored(path, product_id: str) -> dict | None:
    """The stored payload of a product, read from the embedded folder once its worker has closed it."""
    found = stored_points(WorkerSettings(qdrant_path=str(path)), [product_id]).get(product_id)
    return found[0] if found else None


def status(client, job_id: str) -> str:
    return client.get(f"/api/v1/queue/status/{job_id}").json()["status"]


def wait_for(cond, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def settled(client) -> bool:
    jobs = client.get("/api/v1/queue/stats").json()["jobs"]
    return jobs["queued"] == 0 and jobs["processing"] == 0


def test_uploads_get_growing_versions_at_enqueue(client):
    first = upload(client, None, "p", data=jpeg(1)).json()
    second = upload(client, None, "p", data=jpeg(2)).json()
    other = upload(client, None, "q", data=jpeg(3)).json()
    assert 0 < first["version"] < second["version"] < other["version"]
    assert client.get(f"/api/v1/queue/status/{second['job_id']}").json()["version"] == second["version"]


@pytest.mark.parametrize("engine", ["edge", "server"], ids=["edge: conditional upsert", "server: update_filter"])
def test_the_store_never_replaces_a_point_with_an_older_version(tmp_path, engine):
    store = open_engine(engine, tmp_path / "q", 4)

    def job(version: int, product_id: str = "p") -> Job:
        return Job(f"job-{version}", product_id, "n", "", {}, f"sha-{version}", 0, 0, version=version)

    try:
        store.upsert([job(7)], np.ones((1, 4)))
        store.upsert([job(5), job(5, "q")], np.ones((2, 4)))  # a late worker with an older job
        assert store.get("p")["version"] == 7 and store.get("q")["version"] == 5
        store.upsert([job(9)], np.ones((1, 4)))
        assert store.get("p")["version"] == 9
        assert not store.delete("p", 8)  # a delete older than the point leaves it
        assert store.delete("p", 10) and store.get("p") is None
    finally:
        store.close()


def test_a_manual_retry_of_a_superseded_job_is_409_and_the_newest_upload_stays(client, start_worker, tmp_path):
    """Fault 4: a failed old job retried by hand after a newer upload rolled the product back."""
    old = upload(client, None, "p", data=jpeg(1)).json()["job_id"]
    app = start_worker(max_attempts=1)
    app.store.upsert = FlakyUpsert(app.store.upsert, failures=1)
    app.run(burst=True)
    assert status(client, old) == "failed"
    new = upload(client, None, "p", data=jpeg(2)).json()["job_id"]
    start_worker().run(burst=True)
    assert status(client, new) == "completed"

    resp = client.post(f"/api/v1/queue/retry/{old}")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "superseded"
    start_worker().run(burst=True)
    assert stored(tmp_path / "qdrant", "p")["image_sha256"] == sha(jpeg(2))
    assert status(client, old) == "failed"


def test_a_reaped_older_job_completes_as_superseded_and_is_counted(client, worker_settings, run_burst, r, tmp_path):
    old = upload(client, None, "p", data=jpeg(1)).json()["job_id"]
    claim_as_dead_worker(worker_settings(), r, "dead", 1)  # holds the old job, then dies
    new = upload(client, None, "p", data=jpeg(2)).json()["job_id"]
    app, totals = run_burst()  # reaps the old job: it runs after the new one, or beside it
    assert (status(client, old), status(client, new)) == ("superseded", "completed")
    assert (totals.completed, totals.superseded) == (1, 1)
    assert app.metrics.registry.get_sample_value("clipq_jobs_total", {"outcome": "superseded"}) == 1
    stats = client.get("/api/v1/queue/stats").json()["jobs"]
    assert stats == {"queued": 0, "processing": 0, "completed": 1, "failed": 0, "superseded": 1, "total": 2}
    assert stored(tmp_path / "qdrant", "p")["image_sha256"] == sha(jpeg(2))
    assert client.post(f"/api/v1/queue/retry/{old}").status_code == 409  # not failed: nothing to retry


def test_an_older_job_that_keeps_killing_workers_ends_superseded_not_failed(client, worker_settings, r):
    """A poison pill whose product was uploaded again meanwhile: at its last attempt there is
    nothing of it to retry, so it does not land in the failed list (nor its retry-all)."""
    from batcher.queue.consumer import JobConsumer

    s = worker_settings(max_attempts=3)
    old = upload(client, None, "p", data=jpeg(1)).json()["job_id"]
    reaper = JobConsumer(r, s.queue, "reaper")
    for attempt in range(2):
        claim_as_dead_worker(s, r, f"victim-{attempt}", 1)
        reaper.reap_dead_workers()
    new = upload(client, None, "p", data=jpeg(2)).json()["job_id"]  # queued behind the old one
    assert claim_as_dead_worker(s, r, "victim-2", 1) == [old]
    reaper.reap_dead_workers()

    assert (status(client, old), status(client, new)) == ("superseded", "queued")
    assert r.zscore("{%s}:failed" % s.queue_namespace, old) is None
    stats = client.get("/api/v1/queue/stats").json()["jobs"]
    assert (stats["failed"], stats["superseded"], stats["queued"], stats["processing"]) == (0, 1, 1, 0)
    assert client.post(f"/api/v1/queue/retry/{old}").status_code == 409


class GatedEncoder:
    """The real encoder; image batches wait until ``gate`` is set (a model busy for a while)."""

    def __init__(self, inner) -> None:
        self.inner, self.gate = inner, threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed_images(self, images):
        assert self.gate.wait(60), "the gate was never opened"
        return self.inner.embed_images(images)


def test_a_delete_cancels_uploads_still_queued_or_in_progress(client, serve_worker, encoder):
    """Fault 5: DELETE of a product whose upload was still queued answered 404, then it came back."""
    gated = GatedEncoder(encoder)
    serve_worker(encoder_override=gated, worker_batch_size=1)  # one job per batch: one held by the model,
                                                               # one claimed ahead, the rest queued
    busy = upload(client, None, "busy", data=jpeg(1)).json()["job_id"]
    wait_for(lambda: status(client, busy) == "processing", "the model to take a batch")
    claimed = upload(client, None, "claimed", data=jpeg(2)).json()["job_id"]
    wait_for(lambda: status(client, claimed) == "processing", "the next batch to be claimed")
    queued = upload(client, None, "queued", data=jpeg(3)).json()["job_id"]
    time.sleep(0.3)
    assert status(client, queued) == "queued"

    for product_id in ("claimed", "queued"):
        resp = client.delete(f"/api/v1/products/{product_id}")
        assert resp.status_code == 200 and resp.json()["deleted"] is True, resp.text
    assert client.delete("/api/v1/products/never-uploaded").status_code == 404
    gated.gate.set()
    wait_for(lambda: settled(client), "the queue to drain")
    assert [status(client, j) for j in (busy, claimed, queued)] == ["completed", "superseded", "superseded"]
    assert client.get("/api/v1/products/busy").status_code == 200
    for product_id in ("claimed", "queued"):
        assert client.get(f"/api/v1/products/{product_id}").status_code == 404
        assert client.delete(f"/api/v1/products/{product_id}").status_code == 404  # deleted already


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_delete_racing_the_upsert_sticks(client, serve_worker, when):
    """The worker checked the version, then the delete ran (before or after its upsert), then
    the worker stored the point and acknowledged the job: the product must stay deleted."""
    app = serve_worker()
    upsert, deleted = app.store.upsert, threading.Event()
    answers = []

    def upsert_racing_a_delete(jobs, vectors):
        if when == "after":
            upsert(jobs, vectors)
        if not deleted.is_set():
            answers.append(client.delete("/api/v1/products/p"))
            deleted.set()
        if when == "before":
            upsert(jobs, vectors)

    app.store.upsert = upsert_racing_a_delete
    job_id = upload(client, None, "p", data=jpeg(1)).json()["job_id"]
    assert deleted.wait(60)
    wait_for(lambda: settled(client), "the job to finish")
    assert answers[0].status_code == 200, answers[0].text
    assert status(client, job_id) == "superseded"
    assert client.get("/api/v1/products/p").status_code == 404
    assert app.store.get("p") is None


def test_an_upload_after_a_delete_is_indexed_and_older_retries_stay_refused(client, start_worker, serve_worker):
    failed = upload(client, None, "p", data=jpeg(1)).json()["job_id"]
    app = start_worker(max_attempts=1)
    app.store.upsert = FlakyUpsert(app.store.upsert, failures=1)
    app.run(burst=True)
    assert status(client, failed) == "failed"
    serve_worker()
    assert client.delete("/api/v1/products/p").status_code == 200  # no point, but a retryable upload
    again = upload(client, None, "p", data=jpeg(2)).json()["job_id"]
    wait_for(lambda: status(client, again) == "completed", "the new upload")
    got = client.get("/api/v1/products/p").json()
    assert got["image_sha256"] == sha(jpeg(2)) and got["job_id"] == again
    assert client.post(f"/api/v1/queue/retry/{failed}").json()["error"]["code"] == "superseded"
