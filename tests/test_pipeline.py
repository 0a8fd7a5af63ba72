"""End to end through HTTP: upload -> Redis -> worker (burst) -> Qdrant."""
from __future__ import annotations

import numpy as np
from qdrant_client import QdrantClient

from batcher.store import point_id
from conftest import corpus_files, upload


def open_points(worker_settings_obj):
    return QdrantClient(path=worker_settings_obj.qdrant_path)


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

    qdrant = open_points(app.settings)
    try:
        assert qdrant.count("products", exact=True).count == len(photos)
        points = qdrant.retrieve("products", [point_id(s) for s in job_ids], with_vectors=True,
                                 with_payload=True)
        assert len(points) == len(photos)
        for p in points:
            v = np.asarray(p.vector)
            assert v.shape == (encoder.dim,)
            assert abs(np.linalg.norm(v) - 1) < 1e-3
            assert set(p.payload) >= {"product_id", "name", "description", "metadata", "job_id",
                                      "indexed_at", "image_sha256", "version"}
            assert p.payload["job_id"] == job_ids[p.payload["product_id"]]
            assert p.payload["metadata"] == {"src": "corpus"}
    finally:
        qdrant.close()

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
