"""Unchanged photos skip the model (issue 15, part 1): a job whose image bytes its product (or
another product) already has in the store completes as ``unchanged`` (or ``reused``) with the
stored vector, without a decode or a forward pass; through real Redis, the tiny real model and
embedded Qdrant."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from batcher.app import WorkerApp
from batcher.settings import WorkerSettings
from conftest import CountingEncoder, open_engine, stored_points, upload
from test_worker import jpeg

TRUNCATED = Path(__file__).parent / "data" / "corpus" / "hostile" / "truncated_jpeg.jpg"


def point(path, product_id: str) -> tuple[dict, np.ndarray] | None:
    """A product's stored payload and vector, read from the embedded folder once its worker closed it."""
    return stored_points(WorkerSettings(qdrant_path=str(path)), [product_id]).get(product_id)


def job(client, job_id: str) -> dict:
    return client.get(f"/api/v1/queue/status/{job_id}").json()


def burst(start_worker, encoder, **overrides):
    """One burst run with a counting encoder: (totals, forward passes, the worker's metrics text)."""
    from prometheus_client import generate_latest

    counting = CountingEncoder(encoder)
    app = start_worker(encoder_override=counting, **overrides)
    totals = app.run(burst=True)
    return totals, counting.image_batches, generate_latest(app.metrics.registry).decode()


def test_a_resent_photo_skips_the_model_and_updates_the_payload(client, start_worker, encoder, tmp_path):
    first = upload(client, None, "sku-1", data=jpeg(1), name="Red mug").json()
    burst(start_worker, encoder)
    assert job(client, first["job_id"])["outcome"] == "embedded"
    payload, before = point(tmp_path / "qdrant", "sku-1")

    again = upload(client, None, "sku-1", data=jpeg(1), name="Red mug, large",
                   metadata='{"size": "L"}').json()
    totals, passes, metrics = burst(start_worker, encoder)

    assert passes == [] and totals.unchanged == 1 and totals.completed == 1
    status = job(client, again["job_id"])
    assert (status["status"], status["outcome"]) == ("completed", "unchanged")
    payload, after = point(tmp_path / "qdrant", "sku-1")
    assert payload["name"] == "Red mug, large" and payload["metadata"] == {"size": "L"}
    assert payload["version"] == again["version"] and payload["job_id"] == again["job_id"]
    assert np.array_equal(after, before), "the stored vector is written back as it was"
    assert 'clipq_jobs_total{outcome="unchanged"} 1.0' in metrics
    stats = client.get("/api/v1/queue/stats").json()
    assert stats["jobs"]["completed"] == 2
    assert stats["completed_without_model"] == {"unchanged": 1, "reused": 0}


def test_another_products_photo_is_reused_and_a_changed_one_is_embedded(client, start_worker, encoder, tmp_path):
    upload(client, None, "sku-1", data=jpeg(1))
    upload(client, None, "sku-2", data=jpeg(2))
    burst(start_worker, encoder)
    _, original = point(tmp_path / "qdrant", "sku-1")

    same_photo = upload(client, None, "sku-3", data=jpeg(1)).json()   # a new product, sku-1's photo
    changed = upload(client, None, "sku-2", data=jpeg(22)).json()     # sku-2's photo replaced
    bad = upload(client, TRUNCATED, "sku-4").json()                   # passes the API, fails to decode
    totals, passes, metrics = burst(start_worker, encoder)

    assert passes == [1], "only the changed photo goes through the model"
    assert (totals.reused, totals.unchanged, totals.failed) == (1, 0, 1)
    assert job(client, same_photo["job_id"])["outcome"] == "reused"
    assert job(client, changed["job_id"])["outcome"] == "embedded"
    assert job(client, bad["job_id"])["status"] == "failed"
    _, copied = point(tmp_path / "qdrant", "sku-3")
    assert np.array_equal(copied, original), "the other product's vector, copied as it is"
    _, new = point(tmp_path / "qdrant", "sku-2")
    np.testing.assert_allclose(new, encoder.embed_images(_pixels(encoder, jpeg(22)))[0], atol=1e-5)
    assert 'clipq_jobs_total{outcome="reused"} 1.0' in metrics
    assert client.get("/api/v1/queue/stats").json()["completed_without_model"] == {"unchanged": 0, "reused": 1}


def test_a_photo_shared_within_one_batch_is_embedded_once(client, start_worker, encoder, tmp_path):
    """A catalog's placeholder photo on several new products: the model sees it once. A twin of
    a photo that cannot be decoded fails with it, with the same reason."""
    shared = [upload(client, None, f"sku-{i}", data=jpeg(7)).json() for i in (1, 2, 3)]
    upload(client, None, "sku-4", data=jpeg(8))
    bad = [upload(client, TRUNCATED, f"sku-bad-{i}").json() for i in (1, 2)]
    totals, passes, metrics = burst(start_worker, encoder)

    assert passes == [2], "one forward pass, each distinct photo in it once"
    assert (totals.completed, totals.reused, totals.failed) == (4, 2, 2)
    assert [job(client, s["job_id"])["outcome"] for s in shared] == ["embedded", "reused", "reused"]
    vectors = [point(tmp_path / "qdrant", f"sku-{i}")[1] for i in (1, 2, 3)]
    assert all(np.array_equal(v, vectors[0]) for v in vectors)
    reasons = {job(client, b["job_id"])["error_message"] for b in bad}
    assert len(reasons) == 1 and "cannot decode" in reasons.pop()
    assert 'clipq_jobs_total{outcome="reused"} 2.0' in metrics

    again = [upload(client, None, f"sku-{i}", data=jpeg(9)).json() for i in (5, 6)]
    totals, passes, _ = burst(start_worker, encoder, worker_reuse_vectors=False)
    assert passes == [2] and totals.reused == 0, "reuse off: every job goes through the model"
    assert {job(client, a["job_id"])["outcome"] for a in again} == {"embedded"}


def test_split_twins_keeps_the_first_job_of_each_photo():
    from batcher.queue.jobs import Job
    from batcher.stages.recall import split_twins

    jobs = [Job(f"j{i}", f"p{i}", "", "", {}, sha, 0, 0) for i, sha in enumerate(["a", "b", "a", "", "", "b", "a"])]
    rest, twins = split_twins(jobs)
    assert [j.job_id for j in rest] == ["j0", "j1", "j3", "j4"]  # no sha (not yet known): never a twin
    assert [(t.job.job_id, t.same_as.job_id) for t in twins] == [("j2", "j0"), ("j5", "j1"), ("j6", "j0")]


def _pixels(encoder, data: bytes) -> np.ndarray:
    from batcher.decode import decode

    return np.array(decode(data, encoder.preprocessing, 50_000_000)[None])


def test_vectors_of_another_model_are_never_reused(client, start_worker, encoder, tmp_path):
    """Another seed is another model: the photo goes through this worker's model again."""
    from models.clip import load_encoder

    upload(client, None, "sku-1", data=jpeg(1))
    burst(start_worker, encoder)
    other = load_encoder("clipq-tiny", "none", "cpu", seed=1)
    again = upload(client, None, "sku-1", data=jpeg(1)).json()
    totals, passes, _ = burst(start_worker, other)
    assert passes == [1] and totals.unchanged == 0
    assert job(client, again["job_id"])["outcome"] == "embedded"
    _, vector = point(tmp_path / "qdrant", "sku-1")
    np.testing.assert_allclose(vector, other.embed_images(_pixels(other, jpeg(1)))[0], atol=1e-5)


def test_reuse_can_be_switched_off(client, start_worker, encoder):
    upload(client, None, "sku-1", data=jpeg(1))
    burst(start_worker, encoder)
    again = upload(client, None, "sku-1", data=jpeg(1)).json()
    totals, passes, _ = burst(start_worker, encoder, worker_reuse_vectors=False)
    assert passes == [1] and totals.unchanged == 0
    assert job(client, again["job_id"])["outcome"] == "embedded"


def test_the_newest_upload_wins_over_an_unchanged_one_in_the_same_batch(client, start_worker, encoder, tmp_path):
    upload(client, None, "sku-1", data=jpeg(1))
    burst(start_worker, encoder)
    stale = upload(client, None, "sku-1", data=jpeg(1), name="old").json()      # unchanged photo
    newest = upload(client, None, "sku-1", data=jpeg(5), name="new").json()    # then a new photo
    burst(start_worker, encoder)
    assert job(client, stale["job_id"])["status"] == "superseded"
    assert job(client, newest["job_id"])["outcome"] == "embedded"
    payload, vector = point(tmp_path / "qdrant", "sku-1")
    assert (payload["name"], payload["version"]) == ("new", newest["version"])
    np.testing.assert_allclose(vector, encoder.embed_images(_pixels(encoder, jpeg(5)))[0], atol=1e-5)


def test_an_unknown_fingerprint_reuses_nothing(client, worker_settings, encoder):
    """An encoder whose weights are not known (built by hand) never reuses a vector."""
    from models.clip import ClipEncoder

    anonymous = ClipEncoder(encoder.model, encoder.tokenizer, encoder.device, encoder.name)
    assert anonymous.fingerprint == "" and encoder.fingerprint
    upload(client, None, "sku-1", data=jpeg(1))
    WorkerApp.start(worker_settings(), registry=CollectorRegistry(), encoder=anonymous).run(burst=True)
    again = upload(client, None, "sku-1", data=jpeg(1)).json()
    counting = CountingEncoder(anonymous)
    WorkerApp.start(worker_settings(), registry=CollectorRegistry(), encoder=counting).run(burst=True)
    assert counting.image_batches == [1]
    assert job(client, again["job_id"])["outcome"] == "embedded"


def _job(product_id: str, image: bytes, version: int = 1):
    import hashlib

    from batcher.queue.jobs import Job

    return Job(job_id=f"job-{product_id}-{version}", product_id=product_id, name="", description="", metadata={},
               image_sha256=hashlib.sha256(image).hexdigest(), created_at_ms=0, retry_count=0, version=version)


@pytest.mark.parametrize("engine", ["edge", "server"])
def test_the_store_finds_images_by_product_and_by_bytes(tmp_path, engine):
    """Both engines look images up by point id, then by their ``image_sha256`` payload index:
    nothing is scanned or held in memory, so a restarted worker finds them at once."""
    def open_store(embedder="m|random#0|fp32"):
        return open_engine(engine, tmp_path / "q", 4, embedder)

    store = open_store()
    a, b = _job("a", b"photo-a"), _job("b", b"photo-b")
    store.upsert([a, b], np.eye(4, dtype=np.float32)[:2])
    store.close()

    store = open_store()  # a restarted worker
    c = _job("c", b"photo-b")                        # a new product with b's photo
    by_photo, by_sha = store.images([("a", 0), ("c", 0)], [a.image_sha256, c.image_sha256, "f" * 64])
    assert set(by_photo) == {("a", 0)} and by_photo["a", 0].image_sha256 == a.image_sha256
    assert by_sha[c.image_sha256].product_id == "b"
    assert np.array_equal(by_sha[c.image_sha256].vector, np.eye(4, dtype=np.float32)[1])
    assert "f" * 64 not in by_sha
    store.upsert([_job("b", b"photo-b2", version=2)], np.eye(4, dtype=np.float32)[2:3])  # b's photo replaced
    assert c.image_sha256 not in store.images([("c", 0)], [c.image_sha256])[1], "b no longer holds those bytes"
    store.close()

    other = open_store("another|model|fp32")
    assert other.images([("a", 0)], [a.image_sha256]) == ({}, {})
    other.close()
