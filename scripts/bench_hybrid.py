"""Search by words through the HTTP API: vector vs keyword vs hybrid, side by side in one run.

Starts a Redis (unless REDIS_URL is set), the API (uvicorn, as ``scripts/run.sh`` does) and one
worker (in this process, its store an embedded folder in a temporary directory), loads a
catalog of --products generated products (names, brands, SKUs, descriptions, metadata) into
the worker's store (random unit vectors: a search's cost does not depend on what the vectors
hold, and embedding thousands of photos on a CPU would take most of an hour), then sends
--queries searches in each mode, interleaved (vector, keyword, hybrid, then the next words), and
reports p50/p95/p99 per mode and the ratio hybrid/vector of the p50s. Before the worker starts,
it also times the store's part alone (``find``, no HTTP, Redis or model): what a GPU worker,
whose CLIP text pass takes a few milliseconds, would add for hybrid.

    .venv/bin/python -m scripts.bench_hybrid --products 5000 --queries 200 --json bench_hybrid.json
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from scripts.lib.procs import Child, api_args, api_ready, free_port
from scripts.lib.redis_server import LocalRedis
from scripts.lib.report import commit, machine_info, write_json
from scripts.lib.stats import summary_ms

MODES = ("vector", "keyword", "hybrid")
ADJECTIVES = ["red", "blue", "green", "steel", "oak", "linen", "glass", "copper", "matte", "small", "large", "round"]
NOUNS = ["cup", "mug", "kettle", "tray", "jar", "pan", "bowl", "lamp", "chair", "vase", "towel", "knife"]
BRANDS = ["Pikolo", "Nordvik", "Alba", "Kasumi", "Teral", "Ombra", "Veloce", "Brisa"]


def product(i: int, rng: random.Random) -> tuple[str, dict]:
    name = f"{rng.choice(ADJECTIVES).title()} {rng.choice(NOUNS)} {i % 97}"
    brand = rng.choice(BRANDS)
    meta = {"brand": brand, "sku": f"SK-{i:06d}", "category": rng.choice(NOUNS)}
    return f"p{i}", {"product_id": f"p{i}", "name": name, "description": f"{name} by {brand}", "metadata": meta,
                     "version": 1, "job_id": f"bench-{i}", "image_sha256": ""}


def load_catalog(store, n: int, seed: int = 0) -> None:
    """``n`` products into the worker's own store, 256 points a write."""
    from batcher.store import point_id

    rng, vectors = random.Random(seed), np.random.default_rng(seed).standard_normal((n, store.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for start in range(0, n, 256):
        page = [product(i, rng) for i in range(start, min(n, start + 256))]
        store.write([(point_id(pid), vectors[start + k].tolist(), payload) for k, (pid, payload) in enumerate(page)])


def queries(n: int, products: int, seed: int = 1) -> list[str]:
    """Half SKUs of stored products, half a brand or a few words of a name."""
    rng = random.Random(seed)
    return [f"SK-{rng.randrange(products):06d}" if i % 2 == 0
            else f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(BRANDS)}" for i in range(n)]


def time_searches(client: httpx.Client, texts: list[str], warmup: int) -> dict[str, list[float]]:
    took: dict[str, list[float]] = {m: [] for m in MODES}
    for i, text in enumerate(texts):
        for k in range(len(MODES)):
            mode = MODES[(i + k) % len(MODES)]  # each mode goes first, second and third in turn
            t0 = time.perf_counter()
            r = client.post("/api/v1/search", json={"text": text, "mode": mode, "limit": 10})
            r.raise_for_status()
            if i >= warmup:
                took[mode].append(time.perf_counter() - t0)
    return took


def time_store(store, texts: list[str], warmup: int, seed: int = 2) -> dict[str, list[float]]:
    """The store's part alone (``find``, no HTTP, no Redis, no model): a random unit vector stands
    for the CLIP text vector, so what is left is the dense search, BM25 and the fusion."""
    from batcher.store.asks import Ask

    rng = np.random.default_rng(seed)
    took: dict[str, list[float]] = {m: [] for m in MODES}
    for i, text in enumerate(texts):
        v = rng.standard_normal(store.dim).astype(np.float32)
        v = (v / np.linalg.norm(v)).tolist()
        for mode, ask in (("vector", Ask(10, vector=v)), ("keyword", Ask(10, words=text)),
                          ("hybrid", Ask(10, vector=v, words=text))):
            t0 = time.perf_counter()
            store.find([ask])
            if i >= warmup:
                took[mode].append(time.perf_counter() - t0)
    return took


def sku_rank(client: httpx.Client, products: int) -> dict[str, int | None]:
    """Where each mode ranks a product searched by its SKU (1: first; None: not in the top 10)."""
    sku, wanted = f"SK-{products // 2:06d}", f"p{products // 2}"
    ranks = {}
    for m in MODES:
        found = [r["product_id"] for r in client.post("/api/v1/search", json={"text": sku, "mode": m}).json()["results"]]
        ranks[m] = found.index(wanted) + 1 if wanted in found else None
    return ranks


def run(a, tmp: Path) -> dict:
    from prometheus_client import CollectorRegistry

    from batcher.app import WorkerApp
    from batcher.settings import WorkerSettings

    redis_server = None if os.environ.get("REDIS_URL") else LocalRedis(tmp / "redis", aof=False).start()
    redis_url = os.environ.get("REDIS_URL") or redis_server.url
    namespace, port = f"bench-hybrid-{os.getpid()}", free_port()
    api = Child.start("api", api_args(port), tmp, env=dict(os.environ, REDIS_URL=redis_url, QUEUE_NAMESPACE=namespace,
                                                            ALLOW_ANONYMOUS="true"))
    settings = WorkerSettings(redis_url=redis_url, queue_namespace=namespace, clip_model=a.model,
                              clip_pretrained=a.pretrained, clip_device=a.device, qdrant_path=str(tmp / "qdrant"),
                              worker_metrics_port=0)
    app = WorkerApp.start(settings, registry=CollectorRegistry())
    worker = threading.Thread(target=app.run, daemon=True)
    try:
        t0 = time.perf_counter()
        load_catalog(app.store, a.products)
        load_s = time.perf_counter() - t0
        texts = queries(a.queries + a.warmup, a.products)
        in_store = time_store(app.store, texts, a.warmup)
        worker.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not api_ready(url):
            if time.monotonic() > deadline:
                raise SystemExit("the API did not get ready")
            time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=60) as client:
            took = time_searches(client, texts, a.warmup)
            ranks = sku_rank(client, a.products)
    finally:
        app.stop.set()
        if worker.ident:
            worker.join(30)  # the worker closes its store
        else:
            app.store.close()
        api.stop()
        if redis_server:
            redis_server.stop()
    ms, store_ms = {m: summary_ms(took[m]) for m in MODES}, {m: summary_ms(in_store[m], digits=3) for m in MODES}
    return {"products": a.products, "queries": a.queries, "model": a.model, "pretrained": a.pretrained,
            "machine": machine_info(app.encoder), "commit": commit(), "load_s": round(load_s, 1),
            "ms": ms, "hybrid_over_vector_p50": round(ms["hybrid"]["p50"] / ms["vector"]["p50"], 2),
            "keyword_over_vector_p50": round(ms["keyword"]["p50"] / ms["vector"]["p50"], 2),
            "sku_rank": ranks, "store_ms": store_ms,
            "store_hybrid_over_vector_p50": round(store_ms["hybrid"]["p50"] / store_ms["vector"]["p50"], 2),
            "command": " ".join(["python -m scripts.bench_hybrid", *sys.argv[1:]])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--products", type=int, default=5000)
    p.add_argument("--queries", type=int, default=200, help="searches timed per mode")
    p.add_argument("--warmup", type=int, default=5, help="words searched (in every mode) before timing")
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--pretrained", default="none")
    p.add_argument("--device", default="auto")
    p.add_argument("--json")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="clipq-bench-hybrid-"))
    try:
        result = run(a, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("| mode | p50 (ms) | p95 (ms) | p99 (ms) |\n|---|---|---|---|")
    for m in MODES:
        print(f"| {m} | {result['ms'][m]['p50']} | {result['ms'][m]['p95']} | {result['ms'][m]['p99']} |")
    print("store alone (find, p50 ms): " + ", ".join(f"{m} {result['store_ms'][m]['p50']}" for m in MODES)
          + f"; hybrid/vector {result['store_hybrid_over_vector_p50']}x")
    print(f"hybrid/vector p50: {result['hybrid_over_vector_p50']}x; keyword/vector: "
          f"{result['keyword_over_vector_p50']}x; a product searched by its SKU ranks {result['sku_rank']}")
    if a.json:
        write_json(a.json, result)


if __name__ == "__main__":
    main()
