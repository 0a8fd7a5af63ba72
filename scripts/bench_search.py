#!/usr/bin/env python3
"""Search latency at idle and during a bulk load of uploads, through the real HTTP API.

Starts a Redis (unless REDIS_URL is set), the API (uvicorn) and one worker (in this process),
indexes --index photos, then times --queries text and image searches at idle, then again while
--bulk uploads are being indexed. Prints a markdown table and writes --json.

    .venv/bin/python -m scripts.bench_search --model ViT-B-32 --bulk 400
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
from PIL import Image

from scripts.lib.photos import upload_photos
from scripts.lib.procs import Child, api_args, free_port
from scripts.lib.redis_server import LocalRedis
from scripts.lib.report import write_json
from scripts.lib.stats import percentile


def photos() -> list[bytes]:
    return [f.read_bytes() for f in upload_photos()]


def variant(data: bytes, i: int) -> bytes:
    im = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = im.size
    im = im.crop((i % 17, i % 13, w - i % 11, h - i % 7))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def summary(ms: list[float]) -> dict:
    return {"n": len(ms), "p50": round(percentile(ms, 50), 1), "p95": round(percentile(ms, 95), 1),
            "max": round(max(ms), 1)}


def upload(client: httpx.Client, sku: str, data: bytes) -> str:
    r = client.post("/api/v1/index-product-with-image", data={"product_id": sku, "name": sku},
                    files={"image_file": ("p.jpg", data)})
    r.raise_for_status()
    return r.json()["job_id"]


def wait_idle(client: httpx.Client, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = client.get("/api/v1/queue/stats").json()
        if s["pending_in_queue"] == 0 and s["jobs"]["processing"] == 0:
            return
        time.sleep(0.2)
    raise SystemExit("the worker did not drain the queue in time")


def time_queries(client: httpx.Client, n: int, images: list[bytes], busy=None) -> tuple[list, list, int]:
    text_ms, image_ms, answered_during_load = [], [], 0
    for i in range(n):
        t0 = time.perf_counter()
        r = client.post("/api/v1/search", json={"text": f"product {i}", "limit": 10})
        r.raise_for_status()
        text_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        r = client.post("/api/v1/search/image", files={"image_file": ("q.jpg", images[i % len(images)])},
                        data={"limit": "10"})
        r.raise_for_status()
        image_ms.append((time.perf_counter() - t0) * 1000)
        if busy is not None and busy():
            answered_during_load += 1
    return text_ms, image_ms, answered_during_load


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--pretrained", default="none")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--index", type=int, default=100, help="products indexed before measuring")
    p.add_argument("--queries", type=int, default=20, help="text and image queries per phase")
    p.add_argument("--bulk", type=int, default=400, help="uploads indexed during the loaded phase")
    p.add_argument("--json")
    a = p.parse_args()

    from prometheus_client import CollectorRegistry

    from batcher.app import WorkerApp
    from batcher.settings import WorkerSettings

    tmp = Path(tempfile.mkdtemp(prefix="clipq-bench-search-"))
    redis_server = None if os.environ.get("REDIS_URL") else LocalRedis(tmp / "redis", aof=False).start()
    redis_url = os.environ.get("REDIS_URL") or redis_server.url
    namespace = f"bench-search-{os.getpid()}"
    port = free_port()
    env = dict(os.environ, REDIS_URL=redis_url, QUEUE_NAMESPACE=namespace, MAX_QUEUE_DEPTH="1000000",
               ALLOW_ANONYMOUS="true")
    api = Child.start("api", api_args(port), tmp, env=env)
    settings = WorkerSettings(redis_url=redis_url, queue_namespace=namespace, clip_model=a.model,
                              clip_pretrained=a.pretrained, clip_device=a.device, qdrant_path=":memory:",
                              worker_batch_size=a.batch_size, worker_metrics_port=0)
    app = WorkerApp.start(settings, registry=CollectorRegistry())
    worker = threading.Thread(target=app.run, daemon=True)
    worker.start()
    base = photos()
    images = [variant(base[i % len(base)], i) for i in range(max(a.index, a.queries))]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for _ in range(100):
                try:
                    client.get("/readyz")
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            for i in range(a.index):
                upload(client, f"idx-{i}", images[i])
            wait_idle(client, 600)
            idle_text, idle_image, _ = time_queries(client, a.queries, images)

            bulk_images = [variant(base[i % len(base)], 1000 + i) for i in range(a.bulk)]
            for i, data in enumerate(bulk_images):
                upload(client, f"bulk-{i}", data)
            t_load = time.perf_counter()

            def busy() -> bool:
                return client.get("/api/v1/queue/stats").json()["pending_in_queue"] > 0

            load_text, load_image, during = time_queries(client, a.queries, images, busy)
            wait_idle(client, 1800)
            load_s = time.perf_counter() - t_load
    finally:
        app.stop.set()
        worker.join(30)
        api.stop()
        if redis_server:
            redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "model": a.model, "pretrained": a.pretrained, "device": str(app.encoder.device),
        "indexed": a.index, "bulk": a.bulk, "bulk_seconds": round(load_s, 1),
        "idle": {"text_ms": summary(idle_text), "image_ms": summary(idle_image)},
        "during_bulk_load": {"text_ms": summary(load_text), "image_ms": summary(load_image),
                             "queries_answered_while_queue_nonempty": during},
        "command": " ".join(["python -m scripts.bench_search", *sys.argv[1:]]),
    }
    print(json.dumps(report, indent=2))
    print("\n| phase | text search p50 / p95 (ms) | image search p50 / p95 (ms) |\n|---|---|---|")
    for phase in ("idle", "during_bulk_load"):
        t, i = report[phase]["text_ms"], report[phase]["image_ms"]
        print(f"| {phase.replace('_', ' ')} | {t['p50']} / {t['p95']} | {i['p50']} / {i['p95']} |")
    if a.json:
        write_json(a.json, report)


if __name__ == "__main__":
    main()
