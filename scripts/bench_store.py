#!/usr/bin/env python3
"""The product's vector stores as the worker uses them: load, start-up, search, recall, stalls.

Engines (``--engines``, comma-separated):

- ``edge``: ``EdgeStore`` through ``open_store(StoreConfig(path=...))``, the embedded store
  of this release (Qdrant Edge), HNSW built one segment at a time by the store itself;
- ``local``: ``ServerStore`` on qdrant-client's local mode (``QdrantClient(path=...)``),
  the embedded engine of release 0.1;
- ``server``: ``ServerStore`` on the Qdrant server at ``--url`` (a throw-away collection).

For each engine, in a fresh folder under ``--dir`` (default: the current directory, so the
disk the worker would use, not a tmpfs; removed at the end):

1. load ``--points`` CLIP-like vectors (a seeded mixture of 1,000 normal 512-d centres plus
   noise, normalised) with the worker's payloads (``store.upsert(jobs, vectors)``: Jobs with a
   version and ``metadata.shop``, 50 values), 32 per call as the worker's batches: points/s
   over the whole load, Edge's index builds included (the worker pays them), the time in
   those builds apart (``index_build_s``, timed around the store's ``_build_index``), and
   points/s without them (``upsert_points_per_s_without_builds``);
2. close the store and open it again: ``open_s`` is the worker's start-up work on a loaded
   store (``open_store`` for Edge; the claim checked: ready in at most 10 s at 100,000 points);
3. 100 searches (``store.search(v[None], [10], [{}])``, queries from the same mixture; 3
   warm-up queries are not counted) and 50 filtered ones (``{"shop": "s7"}``...): p50 and p99
   in ms; ``recall_at_10`` of the plain ones against the exact top 10 (numpy, cosine).

``--stall``: a ticker thread sleeps 5 ms in a loop during all of it; ``longest_stall_s`` is
its longest gap between ticks, how long the worker's heartbeat and query lane would stall
(Edge's index build holds the GIL), with the phase it fell in.

    .venv/bin/python -m scripts.bench_store --points 100000 --engines edge,local --stall \\
        --json /tmp/bench_store_100k.json --dir /tmp/bench-store-dir
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from batcher.queue.jobs import Job
from batcher.store import StoreConfig, open_store
from batcher.store.server import ServerStore
from scripts.lib.report import commit

DIM = 512
BATCH = 32  # the worker's batch: one upsert (and, for Edge, one flush) per batch
CENTRES = 1000
NOISE = 0.6  # per-dimension noise against unit-variance centres: cosine to its centre about 0.86
SHOPS = 50
SEARCHES, FILTERED, WARMUP, TOP = 100, 50, 3, 10
READY_S = 10.0  # "a worker on a 100,000-point store is ready in at most 10 s"
ENGINES = ("edge", "local", "server")


class Mixture:
    """CLIP-like vectors: clusters around ``CENTRES`` random directions, normalised, seeded."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = self.rng.standard_normal((CENTRES, DIM)).astype(np.float32)

    def draw(self, n: int) -> np.ndarray:
        v = self.centres[self.rng.integers(0, CENTRES, n)]
        v = v + NOISE * self.rng.standard_normal((n, DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_jobs(n: int) -> list[Job]:
    now = int(time.time() * 1000)
    return [Job(job_id=f"job-bench-{i}", product_id=f"p{i}", name=f"Product {i}",
                description="a product photo for the store benchmark", metadata={"shop": f"s{i % SHOPS}", "i": i},
                image_sha256=hashlib.sha256(f"img{i}".encode()).hexdigest(), created_at_ms=now, retry_count=0,
                version=1 + i)
            for i in range(n)]


class Ticker:
    """A thread that sleeps 5 ms in a loop; ``take()`` is the longest gap between its ticks since
    the last ``take()``: how long any other thread of the process could not run."""

    def __init__(self) -> None:
        self.longest, self.last = 0.0, time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-ticker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            time.sleep(0.005)
            now = time.perf_counter()
            self.longest, self.last = max(self.longest, now - self.last), now

    def take(self) -> float:
        longest = max(self.longest, time.perf_counter() - self.last)
        self.longest = 0.0
        return longest

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Engine:
    """Opens one engine's store in its own folder, the way the worker does."""

    def __init__(self, name: str, folder: Path, url: str | None, indexed: tuple[str, ...], **knobs) -> None:
        """``knobs``: the QDRANT_* settings measured (segment_points, hnsw_m, hnsw_ef_construct)."""
        self.name, self.folder = name, folder
        collection = "bench_" + uuid.uuid4().hex[:8] if name == "server" else "products"
        self.config = StoreConfig(path=str(folder), url=url if name == "server" else None, collection=collection,
                                  indexed_fields=indexed, **knobs)

    def open(self):
        if self.name == "edge":
            return open_store(self.config, DIM, "bench", "bench")
        if self.name == "local":
            from qdrant_client import QdrantClient
            return ServerStore.open(StoreConfig(url="local", collection=self.config.collection,
                                                indexed_fields=self.config.indexed_fields), DIM, "bench",
                                    client=QdrantClient(path=str(self.folder)))
        return ServerStore.open(self.config, DIM, "bench")

    def drop(self, store) -> None:
        if self.name == "server":
            store.client.delete_collection(self.config.collection)
        store.close()


def timed_builds(store) -> list[float]:
    """The seconds of each call to the Edge store's ``_build_index`` (an HNSW build when a plain
    segment is full), appended as they happen."""
    builds: list[float] = []
    inner = getattr(store, "_build_index", None)
    if inner is None:  # qdrant-client's stores build nothing in the worker's process
        return builds

    def build() -> None:
        t0 = time.perf_counter()
        try:
            inner()
        finally:
            builds.append(time.perf_counter() - t0)

    store._build_index = build
    return builds


def pct(ms: list[float], q: float) -> float:
    return round(float(np.percentile(ms, q)), 2)


def searches(store, queries: np.ndarray, filters: list[dict]) -> tuple[list[float], list[list[str | None]]]:
    """Each query alone, as the query lane sends one: its latency in ms and the product ids found."""
    took, found = [], []
    for q, f in zip(queries, filters):
        t0 = time.perf_counter()
        [hits] = store.search(q[None], [TOP], [f])
        took.append((time.perf_counter() - t0) * 1000)
        found.append([h.product_id for h in hits])
    return took, found


def recall(found: list[list[str | None]], vectors: np.ndarray, queries: np.ndarray) -> float:
    """The share of the exact top ``TOP`` (cosine: dot products of normalised vectors) found."""
    hit = 0
    for ids, q in zip(found, queries):
        scores = vectors @ q
        exact = np.argpartition(-scores, TOP)[:TOP]
        hit += len({f"p{i}" for i in exact} & set(ids))
    return round(hit / (TOP * len(queries)), 4)


def folder_mb(folder: Path) -> float:
    """The disk the folder takes (blocks allocated: Edge's files are sparse, 32 MiB apparent each)."""
    return round(sum(f.stat().st_blocks * 512 for f in folder.rglob("*") if f.is_file()) / 2**20, 1)


def bench(engine: Engine, jobs: list[Job], vectors: np.ndarray, queries: np.ndarray,
          ticker: Ticker | None) -> dict:
    n = len(jobs)
    stalls: dict[str, float] = {}

    def phase(name: str) -> None:
        if ticker:
            stalls[name] = round(ticker.take(), 3)

    phase("before")
    store = engine.open()
    builds = timed_builds(store)
    t0 = time.perf_counter()
    for start in range(0, n, BATCH):
        store.upsert(jobs[start:start + BATCH], vectors[start:start + BATCH])
        if (start // BATCH) % 625 == 624:
            print(f"  {engine.name}: {start + BATCH:,} points in {time.perf_counter() - t0:.0f}s", flush=True)
    load_s = time.perf_counter() - t0
    phase("load")
    store.close()

    t0 = time.perf_counter()
    store = engine.open()  # the worker's start-up work on the store
    open_s = time.perf_counter() - t0
    phase("open")
    stored = store.count()
    if stored != n:
        raise SystemExit(f"{engine.name}: {stored} points stored after reopening, not {n}")

    searches(store, queries[:WARMUP], [{}] * WARMUP)
    plain_ms, found = searches(store, queries[WARMUP:WARMUP + SEARCHES], [{}] * SEARCHES)
    shops = [{"shop": f"s{(7 + 13 * i) % SHOPS}"} for i in range(FILTERED)]
    filtered_ms, filtered = searches(store, queries[WARMUP + SEARCHES:], shops)
    phase("search")
    for ids, f in zip(filtered, shops):  # a filter that matched the wrong shop would be no measure
        if any(int(i[1:]) % SHOPS != int(f["shop"][1:]) for i in ids if i):
            raise SystemExit(f"{engine.name}: a search filtered on {f} found points of another shop")
    info = store.info()
    disk = folder_mb(engine.folder) if engine.name != "server" else None
    engine.drop(store)

    out = {"upsert_points_per_s": round(n / load_s, 1), "load_s": round(load_s, 2),
           "upsert_points_per_s_without_builds": round(n / max(load_s - sum(builds), 1e-9), 1),
           "index_build_s": round(sum(builds), 2), "index_builds": len(builds),
           "search_p50_ms": pct(plain_ms, 50), "search_p99_ms": pct(plain_ms, 99),
           "filtered_p50_ms": pct(filtered_ms, 50), "filtered_p99_ms": pct(filtered_ms, 99),
           "recall_at_10": recall(found, vectors, queries[WARMUP:WARMUP + SEARCHES]),
           "open_s": round(open_s, 3), "ready_within_10s": open_s <= READY_S,
           "filtered_found_mean": round(float(np.mean([len(f) for f in filtered])), 2),
           "segments": info.get("segments"), "indexed_vectors": info.get("indexed_vectors"), "disk_mb": disk}
    if ticker:
        worst = max((p for p in stalls if p != "before"), key=stalls.get)
        out |= {"longest_stall_s": stalls[worst], "longest_stall_phase": worst,
                "stall_by_phase_s": {p: s for p, s in stalls.items() if p != "before"}}
    return out


def machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start"


def table(result: dict, engines: list[str]) -> str:
    cols = [("upsert_points_per_s", "upserts pts/s"), ("upsert_points_per_s_without_builds", "without builds"),
            ("index_build_s", "index builds s"),
            ("search_p50_ms", "search p50 ms"), ("search_p99_ms", "p99 ms"), ("filtered_p50_ms", "filtered p50 ms"),
            ("filtered_p99_ms", "p99 ms"), ("recall_at_10", "recall@10"),
            ("open_s", "worker start-up: open_s"), ("longest_stall_s", "longest stall s")]
    cols = [(k, t) for k, t in cols if any(k in result[e] for e in engines)]
    lines = ["| engine | " + " | ".join(t for _, t in cols) + " |", "|---" + "|---:" * len(cols) + "|"]
    lines += [f"| {e} | " + " | ".join(f"{result[e].get(k, '-'):,}" if isinstance(result[e].get(k), (int, float))
                                        else "-" for k, _ in cols) + " |" for e in engines]
    if ratio := result.get("edge_over_local"):
        lines += ["", "edge/local: upserts/s {upsert_points_per_s}x; search p50 {search_p50_ms}x, "
                      "p99 {search_p99_ms}x; filtered p50 {filtered_p50_ms}x, p99 {filtered_p99_ms}x "
                      "(searches below 1: Edge is faster)"
                      .format(**ratio)]
    for name in engines:
        verdict = "yes" if result[name]["ready_within_10s"] else "NO"
        lines.append(f"{name}: a worker on this {result['points']:,}-point store is ready (open_store) in "
                     f"{result[name]['open_s']:.2f} s; within {READY_S:.0f} s: {verdict}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=10_000)
    p.add_argument("--engines", default="edge,local", help=f"comma-separated, of {', '.join(ENGINES)}")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--dir", help="where the stores' folders go (default: the current directory; a fresh folder "
                                 "inside it, removed at the end)")
    p.add_argument("--url", help="the Qdrant server of the server engine")
    p.add_argument("--stall", action="store_true", help="measure the longest pause of the other threads")
    p.add_argument("--indexed-fields", default="shop", help="QDRANT_INDEXED_FIELDS of the stores (default: shop)")
    p.add_argument("--segment-points", type=int, default=StoreConfig().segment_points,
                   help="Edge: points per plain segment before its HNSW build (QDRANT_SEGMENT_POINTS)")
    p.add_argument("--hnsw-m", type=int, default=StoreConfig().hnsw_m, help="QDRANT_HNSW_M")
    p.add_argument("--hnsw-ef-construct", type=int, default=StoreConfig().hnsw_ef_construct,
                   help="QDRANT_HNSW_EF_CONSTRUCT")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    engines = [e for e in a.engines.split(",") if e]
    if bad := [e for e in engines if e not in ENGINES]:
        p.error(f"unknown engines {bad}: choose among {', '.join(ENGINES)}")
    if "server" in engines and not a.url:
        p.error("the server engine needs --url")
    if a.points < 2 * TOP:
        p.error(f"--points must be at least {2 * TOP}")

    mixture = Mixture(a.seed)
    vectors, queries = mixture.draw(a.points), mixture.draw(WARMUP + SEARCHES + FILTERED)
    jobs = make_jobs(a.points)
    indexed = tuple(f for f in a.indexed_fields.split(",") if f)
    knobs = {"segment_points": a.segment_points, "hnsw_m": a.hnsw_m, "hnsw_ef_construct": a.hnsw_ef_construct}
    result: dict = {"points": a.points, "machine": machine(), "commit": commit(),
                    "config": {"batch": BATCH, "dim": DIM, "centres": CENTRES, "noise": NOISE, "shops": SHOPS,
                               "indexed_fields": list(indexed), **knobs,
                               "seed": a.seed, "stall_ticker": a.stall}}
    root = Path(a.dir or os.getcwd())
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-store-", dir=root))
    ticker = Ticker() if a.stall else None
    try:
        for name in engines:
            print(f"{name}: loading {a.points:,} points into {work / name}", flush=True)
            result[name] = bench(Engine(name, work / name, a.url, indexed, **knobs), jobs, vectors, queries, ticker)
            print(f"{name}: {json.dumps(result[name])}", flush=True)
    finally:
        if ticker:
            ticker.stop()
        shutil.rmtree(work, ignore_errors=True)
    if "edge" in result and "local" in result:  # 3 significant digits: Edge's filtered ones are far below 0.001
        edge, local = result["edge"], result["local"]
        result["edge_over_local"] = {k: float(f"{edge[k] / local[k]:.3g}") if local[k] else None
                                     for k in ("upsert_points_per_s", "upsert_points_per_s_without_builds",
                                               "search_p50_ms", "search_p99_ms",
                                               "filtered_p50_ms", "filtered_p99_ms")}
    print(table(result, engines))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
