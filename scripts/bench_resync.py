#!/usr/bin/env python3
"""Nightly re-sync of a catalog: a first pass, then the same catalog again with 1% of its photos
changed, then a full re-index for reference; side by side in one run, through `scripts/run.sh`.

Each pass starts the service the README's way (``python -m scripts.run_local``: Redis, the API, one
worker, the embedded Qdrant folder under ``--data-dir``), uploads every product of the catalog
over HTTP (aiohttp, ``--concurrency`` in flight) and waits until every job is finished.

1. **first pass**: ``--products`` new products (distinct product-sized JPEGs made from the
   test corpus's photos);
2. **re-sync**, same service: every product again, ``--changed`` of them with a new photo and
   every name edited; the others' photos are unchanged and skip the model;
3. **full re-index**, a fresh service with ``WORKER_REUSE_VECTORS=false``: the catalog as it
   now is, every photo through the model.

Reports each pass's time (first upload sent -> last job completed, Redis's clock), the job
outcomes, the ratio first pass / re-sync, and compares the vectors stored after the re-sync
with those of the full re-index, product by product.

    .venv/bin/python -m scripts.bench_resync --products 1000 --json resync.json
    .venv/bin/python -m scripts.bench_resync --data-dir /dev/shm/clipq-resync   # store on tmpfs
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import httpx
import numpy as np
from PIL import Image

from scripts.lib import ROOT
from scripts.lib.photos import CORPUS, listing
from scripts.lib.procs import free_port
from scripts.lib.report import write_json

UPLOAD = "/api/v1/index-product-with-image"


def photos() -> list[bytes]:
    return [f.read_bytes() for f in listing(CORPUS / "real") if f.suffix == ".jpg"]


def variant(data: bytes, i: int, side: int = 480) -> bytes:
    """A distinct product-sized JPEG (about 50 KB) for each ``i``."""
    im = Image.open(io.BytesIO(data)).convert("RGB")
    im.thumbnail((side + 40, side + 40))
    w, h = im.size
    dx, dy = i % 37, (i // 37) % 29
    im = im.crop((dx, dy, min(w, dx + side), min(h, dy + side)))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=80 + i % 7)
    return buf.getvalue()


class Service:
    """``scripts/run_local.py`` in its own data folder; stopped with SIGINT, as Ctrl-C does."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.port, self.redis_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log = open(data_dir.parent / f"{data_dir.name}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.run_local", "--port", str(self.port), "--redis-port",
             str(self.redis_port), "--data-dir", str(data_dir)],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 300) -> None:
        """Until the API answers, a worker's heartbeat is there and the demo's samples are indexed."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, timeout=5) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise SystemExit(f"run_local.py exited ({self.proc.returncode}): see {self.log.name}")
                try:
                    stats = c.get("/api/v1/queue/stats").json()
                    if c.get("/api/v1/workers").json()["workers"] and stats["jobs"]["completed"] > 0 \
                            and stats["pending_in_queue"] == 0 and stats["jobs"]["processing"] == 0:
                        return
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                time.sleep(0.5)
        raise SystemExit(f"the service did not get ready in {timeout_s:.0f}s: see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(120)
        self.log.close()


async def send_all(url: str, catalog: list[dict], concurrency: int) -> list[str]:
    slots = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        async def one(row: dict) -> str:
            form = aiohttp.FormData()
            for key in ("product_id", "name", "description"):
                form.add_field(key, row[key])
            form.add_field("metadata", json.dumps(row["metadata"]))
            form.add_field("image_file", row["image"], filename="photo.jpg", content_type="image/jpeg")
            async with slots, s.post(UPLOAD, data=form) as resp:
                body = await resp.json()
                if resp.status != 202:
                    raise SystemExit(f"upload of {row['product_id']} answered {resp.status}: {body}")
                return body["job_id"]
        return await asyncio.gather(*(one(r) for r in catalog))


async def finish_all(url: str, job_ids: list[str], timeout_s: float) -> list[dict]:
    """Every job's final status, waited for with ``?wait=`` (20 at a time; the queue is FIFO)."""
    slots = asyncio.Semaphore(20)
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(url) as s:
        async def one(job_id: str) -> dict:
            async with slots:
                while time.monotonic() < deadline:
                    async with s.get(f"/api/v1/queue/status/{job_id}", params={"wait": "20"}) as resp:
                        doc = await resp.json()
                    if doc["status"] in ("completed", "failed", "superseded"):
                        return doc
                raise SystemExit(f"job {job_id} did not finish in {timeout_s:.0f}s")
        return await asyncio.gather(*(one(j) for j in job_ids))


def run_pass(url: str, catalog: list[dict], concurrency: int, timeout_s: float) -> dict:
    started = time.time()
    job_ids = asyncio.run(send_all(url, catalog, concurrency))
    sent = time.time()
    docs = asyncio.run(finish_all(url, job_ids, timeout_s))
    last = max(datetime.fromisoformat(d["updated_at"].replace("Z", "+00:00")).timestamp() for d in docs)
    outcomes = Counter(d.get("outcome") or d["status"] for d in docs)
    return {"products": len(catalog), "seconds": round(last - started, 2), "upload_seconds": round(sent - started, 2),
            "outcomes": dict(outcomes)}


def stored_vectors(qdrant_dir: Path) -> dict[str, np.ndarray]:
    """Each product's stored vector, read through the worker's own store once it has stopped."""
    from batcher.store import StoreConfig, open_store
    from batcher.store.cli import records

    store = open_store(StoreConfig(path=str(qdrant_dir)), None)
    try:
        return {payload["product_id"]: np.asarray(vector, np.float32)
                for page, _ in records(store, 512) for _, vector, payload in page}
    finally:
        store.close()


def compare(resynced: dict[str, np.ndarray], reference: dict[str, np.ndarray], products: list[str]) -> dict:
    a = np.stack([resynced[p] for p in products])
    b = np.stack([reference[p] for p in products])
    return {"products": len(products), "bitwise_identical": int((a == b).all(axis=1).sum()),
            "max_abs_difference": float(np.abs(a - b).max()),
            "min_cosine": round(float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min()), 7)}


def make_catalog(n: int, changed: float) -> tuple[list[dict], list[dict]]:
    base = photos()
    first = [{"product_id": f"sku-{i:05d}", "name": f"Product {i}", "description": "a product photo",
              "metadata": {"category": ["mugs", "lamps", "chairs"][i % 3]}, "image": variant(base[i % len(base)], i)}
             for i in range(n)]
    every = max(1, round(1 / changed)) if changed > 0 else n + 1
    second = [r | {"name": r["name"] + " (2027)"} for r in first]
    for i in range(0, n, every):
        second[i] = second[i] | {"image": variant(base[(i + 1) % len(base)], n + i)}
    return first, second


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--products", type=int, default=1000)
    p.add_argument("--changed", type=float, default=0.01, help="share of the photos changed in the re-sync")
    p.add_argument("--concurrency", type=int, default=32, help="uploads in flight")
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--data-dir", help="where the services' folders go (default: a temp folder under data/)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds a pass may take")
    p.add_argument("--json")
    a = p.parse_args()

    parent = Path(a.data_dir) if a.data_dir else ROOT / "data"
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-resync-", dir=parent))
    env = dict(os.environ, CLIP_MODEL=a.model, CLIP_PRETRAINED="none", WORKER_BATCH_SIZE=str(a.batch_size),
               MAX_QUEUE_DEPTH="1000000", WORKER_METRICS_PORT=str(free_port()))
    env.pop("REDIS_URL", None)
    env.pop("QDRANT_URL", None)
    first, second = make_catalog(a.products, a.changed)
    report: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    "model": a.model, "batch_size": a.batch_size, "store_folder": str(work),
                    "command": " ".join(["python -m scripts.bench_resync", *sys.argv[1:]])}
    try:
        service = Service(work / "catalog", env)
        try:
            service.wait_ready()
            print(f"==> first pass: {a.products} new products", flush=True)
            report["first_pass"] = run_pass(service.url, first, a.concurrency, a.timeout)
            print(f"    {report['first_pass']}\n==> re-sync: the same products, {a.changed:.0%} of the photos "
                  "changed, every name edited", flush=True)
            report["resync"] = run_pass(service.url, second, a.concurrency, a.timeout)
            print(f"    {report['resync']}", flush=True)
        finally:
            service.stop()
        reference = Service(work / "reference", env | {"WORKER_REUSE_VECTORS": "false"})
        try:
            reference.wait_ready()
            print("==> full re-index of the re-synced catalog (WORKER_REUSE_VECTORS=false)", flush=True)
            report["full_reindex"] = run_pass(reference.url, second, a.concurrency, a.timeout)
            print(f"    {report['full_reindex']}", flush=True)
        finally:
            reference.stop()
        products = [r["product_id"] for r in second]
        report["vectors_vs_full_reindex"] = compare(stored_vectors(work / "catalog/qdrant"),
                                                    stored_vectors(work / "reference/qdrant"), products)
    finally:
        if not a.data_dir or "KEEP" not in os.environ:
            shutil.rmtree(work, ignore_errors=True)
    r = report
    r["speedup"] = {"first_pass_over_resync": round(r["first_pass"]["seconds"] / r["resync"]["seconds"], 1),
                    "full_reindex_over_resync": round(r["full_reindex"]["seconds"] / r["resync"]["seconds"], 1)}
    print(json.dumps(report, indent=2))
    if a.json:
        write_json(a.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
