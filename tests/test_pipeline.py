"""End to end through HTTP: upload -> Redis -> worker (burst) -> Qdrant."""
from __future__ import annotations

import numpy as np
from conftest import corpus_files, stored_count, stored_points, upload


def test_every_index_photo_is_completed_with_one_point(client, run_burst, encoder):
    photos = corpus_files("index")
    job_ids = {}
    for i, path in enumerate(photos):
        resp = upload(client, path, f"sku-{i}", description=path.name, metadata='{"src": "corpus"}')
        assert resp.status_code == 202, resp.text
        body = resp.json()
        assert body["status"] == "queued" and body["processing_mode"] == "async"
        assert body["job_id"].startswith("job-") and len(body["job_id"]) == 36
        assert body["status_url"] == f"/api/v1/queue/status/{body['job_id']}"
        job_ids[f"sku-{i}"] = body["job_id"]

    app, totals = run_burst()
    assert totals.completed == len(photos) and totals.failed == 0

    for sku, job_id in job_ids.items():
        status = client.get(f"/api/v1/queue/status/{job_id}").json()
        assert status["status"] == "completed", status
        assert status["product_id"] == sku and status["error_message"] is None
        assert status["created_at"].endswith("Z") and status["updated_at"] >= status["created_at"]

    assert stored_count(app.settings) == len(photos)
    points = stored_points(app.settings, list(job_ids))
    assert len(points) == len(photos)
    for payload, v in points.values():
        assert v.shape == (encoder.dim,)
        assert abs(np.linalg.norm(v) - 1) < 1e-3
        assert set(payload) >= {"product_id", "name", "description", "metadata", "job_id",
                                "indexed_at", "image_sha256", "version"}
        assert payload["job_id"] == job_ids[payload["product_id"]]
        assert payload["metadata"] == {"src": "corpus"}

    stats = client.get("/api/v1/queue/stats").json()
    assert stats["available"] is True and stats["pending_in_queue"] == 0
    assert stats["jobs"] == {"queued": 0, "processing": 0, "completed": len(photos), "failed": 0,
                             "superseded": 0, "total": len(photos)}


def test_the_whole_pipeline_runs_on_redis_cluster(tmp_path, make_client, run_burst, namespace):
    """A one-node Redis Cluster: the same scripts, routed by the cluster clients."""
    from scripts.lib.redis_server import LocalRedis

    cluster = LocalRedis(tmp_path / "cluster", aof=False, cluster=True).start()
    try:
        client = make_client(redis_url=cluster.url, redis_cluster=True)
        photos = corpus_files("index")[:5]
        jobs = [upload(client, p, f"c{i}").json()["job_id"] for i, p in enumerate(photos)]
        _, totals = run_burst(redis_url=cluster.url, redis_cluster=True)
        assert totals.completed == 5
        assert {client.get(f"/api/v1/queue/status/{j}").json()["status"] for j in jobs} == {"completed"}
        assert client.get("/api/v1/queue/stats").json()["jobs"]["completed"] == 5
    finally:
        cluster.stop()
