#!/usr/bin/env python3
"""How fast each Qdrant mode the worker can use takes points: batched upserts, side by side.

Writes ``--points`` random 512-d vectors (ViT-B-32's size) with a product-like payload, in
upserts of ``--batch`` points (one per worker batch), into an in-memory store and an embedded
folder store (QDRANT_PATH), alternating the two ``--repeat`` times, and prints points/s for
each (medians). Add ``--url`` to measure a Qdrant server too. The embedded folder is the
default of ``scripts/run.sh``: on a fast device it, not the model, can bound the worker.

  .venv/bin/python scripts/bench_store.py --points 2048 --batch 32 --repeat 3 --dir data
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid

import numpy as np
from qdrant_client import QdrantClient, models

DIM = 512


def open_store(mode: str, folder: str) -> QdrantClient:
    if mode == "memory":
        return QdrantClient(location=":memory:")
    if mode == "embedded":
        return QdrantClient(path=folder)
    return QdrantClient(url=mode, timeout=30)


def points_per_s(client: QdrantClient, points: int, batch: int, seed: int) -> float:
    name = "bench_" + uuid.uuid4().hex[:8]
    client.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((points, DIM)).astype(np.float32)
    t0 = time.perf_counter()
    for start in range(0, points, batch):
        client.upsert(name, points=[
            models.PointStruct(id=str(uuid.uuid4()), vector=vectors[i].tolist(),
                               payload={"product_id": f"sku-{i}", "name": f"Product {i}",
                                        "description": "a product photo", "metadata": {"i": i}})
            for i in range(start, min(start + batch, points))])
    took = time.perf_counter() - t0
    client.delete_collection(name)
    return points / took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=2048)
    p.add_argument("--batch", type=int, default=32, help="points per upsert (the worker's batch)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--url", help="also measure a Qdrant server at this URL")
    p.add_argument("--dir", help="where the embedded folder goes (default: the temp dir); its disk's "
                                 "sync speed decides the embedded rate, so try data/ and /dev/shm")
    a = p.parse_args()
    modes = ["memory", "embedded"] + ([a.url] if a.url else [])
    rates: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(dir=a.dir) as folder:
        clients = {m: open_store(m, folder) for m in modes}
        for r in range(a.repeat):
            for m in modes:
                rates[m].append(points_per_s(clients[m], a.points, a.batch, seed=r))
    print(f"| store | points | batch | points/s (median of {a.repeat}) |\n|---|---:|---:|---:|")
    for m in modes:
        print(f"| {m} | {a.points} | {a.batch} | {statistics.median(rates[m]):,.0f} |")


if __name__ == "__main__":
    main()
