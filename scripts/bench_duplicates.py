"""Precision and recall of the near-duplicate detector (batcher/duplicates/), and its lookup's
latency at scale.

The set: distinct originals (the corpus's real photos, one per picture, their four quarters,
and synthetic scenes of random shapes), and of each original five variants: resized to 50%,
re-encoded as JPEG quality 40, cropped 5% (centred, and from one corner) and rotated 2 degrees.
The originals are stored through the worker's own code (``DuplicateFinder`` over an embedded
Edge store, as the finish stage does), then each variant is looked up: a hit on its own
original is a true positive, a hit on any other original a false positive. Precision and
recall per transform at ``--max-distance``, and over a range of distances.

``--scale N`` stores N random hashes and times a batch's lookup (32 photos), side by side: the
worker's, through ``DuplicateFinder`` on an embedded store as the worker opens it (every hash
compared in memory, ``batcher.store.hash_index``; the found points read back), and the one it
replaced, a query on a hash vector through its HNSW graph, in a second Edge store of the same
hashes laid out as such stores were (its segments of 20,000 points searched at ``HASH_EF``).
Each query is a stored hash with 1 to ``--max-distance`` bits flipped; both are checked against
the exact answer (every stored hash compared).

    python -m scripts.bench_duplicates [--synthetic 300] [--scale 100000] [--json out.json]
"""
from __future__ import annotations

import argparse
import io
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from qdrant_edge import (Distance, EdgeConfig, EdgeOptimizersConfig, EdgeShard, EdgeVectorParams, FieldCondition,
                         Filter, HnswIndexConfig, MatchAny, Point, Query, QueryBatchRequest, QueryRequest, SearchParams,
                         UpdateOperation)

from batcher.config import DuplicateConfig
from batcher.duplicates.finder import DuplicateFinder
from batcher.duplicates.phash import distance, phash
from batcher.duplicates.photo import Photo
from batcher.queue.jobs import Job
from batcher.settings import WorkerSettings
from batcher.store import StoreConfig, open_store, point_id
from batcher.store.edge_filters import tenant_is
from batcher.store.edge_folder import ensure_indexes, new_shard_config
from batcher.store.hash_vector import HASH_EF, HASH_FULL_SCAN_KB, PHASH, hash_vector, min_score
from batcher.store.points import HASH_FIELDS
from scripts.lib.bench_images import source_photos
from scripts.lib.report import commit, machine_info, write_json
from scripts.lib.stats import summary_ms

# the detector reads no CLIP vector, but the store sizes its segments by it: 64-d, as large as the
# hash vector, makes segments of 20,000 points (QDRANT_SEGMENT_POINTS) as a worker's catalog has
DIM = 64
SEGMENT_POINTS = 20_000
BATCH = 32
TRANSFORMS = ("resize_50", "jpeg_q40", "crop_5_centre", "crop_5_corner", "rotate_2")
DISTANCES = (4, 6, 8, 10, 12, 14)
BATCHES = 20
LISTED = WorkerSettings.model_fields["worker_duplicate_max_listed"].default  # as the worker lists


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    return Image.open(io.BytesIO(out.getvalue())).convert("RGB")


def variants(im: Image.Image) -> dict[str, Image.Image]:
    w, h = im.size
    dw, dh = round(w * 0.05), round(h * 0.05)
    return {"resize_50": im.resize((w // 2, h // 2), Image.Resampling.BILINEAR),
            "jpeg_q40": _jpeg(im, 40),
            "crop_5_centre": im.crop((dw // 2, dh // 2, w - (dw - dw // 2), h - (dh - dh // 2))),
            "crop_5_corner": im.crop((dw, dh, w, h)),
            "rotate_2": im.rotate(2, Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))}


def synthetic(rng: random.Random, size=(640, 480)) -> Image.Image:
    """A scene of its own: a gradient and 6-20 random shapes, slightly blurred."""
    im = Image.linear_gradient("L").resize(size).convert("RGB")
    im = Image.blend(im, Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3))), rng.uniform(0.3, 0.9))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randint(6, 20)):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        box = (x0, y0, x0 + rng.randint(20, 300), y0 + rng.randint(20, 300))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return im.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2)))


def originals(n_synthetic: int, seed: int) -> list[tuple[str, Image.Image]]:
    """Distinct pictures: the corpus's real photos (one file per picture: the corpus holds
    re-encodings), their quarters, and synthetic scenes."""
    rng = random.Random(seed)
    photos: list[tuple[str, Image.Image]] = []
    for name, im in source_photos(min_side=200):
        w, h = im.size
        quarters = [im.crop((x, y, x + w // 2, y + h // 2)) for x in (0, w // 2) for y in (0, h // 2)]
        photos += [(name, im)] + [(f"{name}#q{i}", q) for i, q in enumerate(quarters)]
    photos += [(f"synthetic-{i}", synthetic(rng)) for i in range(n_synthetic)]
    kept, hashes = [], []
    for name, im in photos:  # a picture already kept (another file of it) is not a distinct one
        h = phash(im)
        if all(distance(h, k) > 16 for k in hashes):
            kept.append((name, im))
            hashes.append(h)
    return kept


def open_temp_store(root: Path):
    return open_store(StoreConfig(path=str(root), segment_points=SEGMENT_POINTS), DIM, "bench-duplicates")


def store_hashes(store, finder: DuplicateFinder | None, hashes: list[int], prefix: str) -> None:
    """Store one point per hash in batches, as the finish stage does (``finder`` marks them)."""
    for start in range(0, len(hashes), 1000):
        chunk = hashes[start:start + 1000]
        jobs = [Job(f"job-{prefix}{start + i}", f"{prefix}{start + i}", "", "", {}, "", 0, 0, version=1)
                for i in range(len(chunk))]
        by_job = {(j.job_id, 0): h for j, h in zip(jobs, chunk)}
        if finder is None:
            for j in jobs:
                DuplicateFinder.stamp(j, by_job[(j.job_id, 0)], [])
        else:
            finder.mark(jobs, by_job)
        store.upsert(jobs, np.ones((len(jobs), DIM), np.float32))


def detect(store, queries: list[tuple[str, str, int]], max_distance: int) -> list[list[tuple[str, int]]]:
    """Each query's (original, transform, hash) near duplicates as the detector finds them
    (a batch at a time): (stored product id, distance) pairs."""
    finder = DuplicateFinder(store, DuplicateConfig(max_distance, LISTED))
    found = []
    for start in range(0, len(queries), BATCH):
        chunk = queries[start:start + BATCH]
        near = finder.find([Photo(f"query-{start + i}", 0, h) for i, (_, _, h) in enumerate(chunk)])
        found += [[(n.product_id, n.distance) for n in ns or [] if not n.product_id.startswith("query-")]
                  for ns in near]
    return found


def scores(found: list[tuple[str, str, list[tuple[str, int]]]], transform: str | None, d: int) -> dict:
    """Precision and recall over the variants of ``transform`` (None: all) at distance ``d``."""
    rows = [(o, hits) for o, t, hits in found if transform in (None, t)]
    tp = sum(any(name == o and dist <= d for name, dist in hits) for o, hits in rows)
    fp = sum(sum(name != o and dist <= d for name, dist in hits) for o, hits in rows)
    return {"precision": round(tp / (tp + fp), 4) if tp + fp else None, "recall": round(tp / len(rows), 4),
            "true_positives": tp, "false_positives": fp, "variants": len(rows)}


def accuracy(n_synthetic: int, seed: int, max_distance: int, folder: Path) -> dict:
    """The hash alone over a range of distances (every pair compared), and the detector itself
    (the worker's lookup in an Edge store) at ``max_distance``."""
    photos = originals(n_synthetic, seed)
    names = [name for name, _ in photos]
    t0 = time.perf_counter()
    stored = np.array([phash(im) for _, im in photos], dtype=np.uint64)
    hash_ms = (time.perf_counter() - t0) * 1000 / len(photos)
    queries = [(name, t, phash(v)) for name, im in photos for t, v in variants(im).items()]
    exact = [(o, t, [(names[i], int(d)) for i, d in enumerate(hamming(h, stored))]) for o, t, h in queries]
    store = open_temp_store(folder / "accuracy")
    try:
        store_hashes(store, None, [int(h) for h in stored], "")
        found = detect(store, queries, max_distance)
    finally:
        store.close()
    detected = [(o, t, [(names[int(p)], d) for p, d in hits]) for (o, t, _), hits in zip(queries, found)]
    missed = sum(len({(n, d) for n, d in e if d <= max_distance} - set(f))
                 for (_, _, e), (_, _, f) in zip(exact, detected))
    return {"originals": len(photos), "variants": len(queries), "hash_ms_per_photo": round(hash_ms, 3),
            "negative_pairs": len(queries) * (len(photos) - 1), "max_distance": max_distance,
            "per_transform": {t: scores(detected, t, max_distance) for t in TRANSFORMS},
            "all": scores(detected, None, max_distance), "index_missed_pairs": missed,
            "by_distance": {d: scores(exact, None, d) for d in DISTANCES}}


def hamming(h: int, stored: np.ndarray) -> np.ndarray:
    x = np.bitwise_xor(stored, np.uint64(h))
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def latency(n: int, max_distance: int, seed: int, folder: Path) -> dict:
    """A batch's lookup among ``n`` stored random hashes: the worker's (``DuplicateFinder``, the
    hashes in memory) against the former hash vector's HNSW query, in a store of its own; both
    checked against the exact answer (every stored hash compared)."""
    rng = random.Random(seed)
    stored = [rng.getrandbits(64) for _ in range(n)]
    store, former = open_temp_store(folder / "scale"), former_store(folder / "former")
    try:
        t0 = time.perf_counter()
        store_hashes(store, None, stored, "p")
        store._build_index()  # the last plain segment too, as a catalog this size has
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.warm()
        warm_s = time.perf_counter() - t0
        index_mb = index_bytes(store._hash_index()) / 2**20
        t0 = time.perf_counter()
        load_former(former, stored)
        former_load_s = time.perf_counter() - t0
        finder = DuplicateFinder(store, DuplicateConfig(max_distance, LISTED))
        packed = np.array(stored, dtype=np.uint64)
        times, found, exact = {"memory": [], "vector": []}, {"memory": 0, "vector": 0}, 0
        for r in range(BATCHES):
            # each query a stored hash with 1 to max_distance of its bits flipped: a planted near duplicate
            batch = [Photo(f"q{r}-{i}", 0, _flipped(stored[rng.randrange(n)], rng.randint(1, max_distance), rng))
                     for i in range(BATCH)]
            truth = [set(np.flatnonzero(hamming(p.phash, packed) <= max_distance).tolist()) for p in batch]
            exact += sum(map(len, truth))
            t0 = time.perf_counter()
            near = finder.find(batch)
            times["memory"].append(time.perf_counter() - t0)
            found["memory"] += _hits(truth, [[int(x.product_id[1:]) for x in ns if x.product_id[0] == "p"] for ns in near])
            t0 = time.perf_counter()
            hits = former_lookup(former, batch, max_distance)
            times["vector"].append(time.perf_counter() - t0)
            found["vector"] += _hits(truth, [[int(pid[1:]) for pid, _ in hs] for hs in hits])
        segments = {"memory": store.info()["segments"], "vector": former.info().segments_count}
    finally:
        store.close()
        former.close()
    return {"points": n, "batch": BATCH, "batches": BATCHES, "load_s": round(load_s, 1), "warm_s": round(warm_s, 2), "index_mb": round(index_mb, 1),
            "former_load_s": round(former_load_s, 1), "segments": segments, "planted": exact,
            "memory_ms": summary_ms(times["memory"]), "vector_ms": summary_ms(times["vector"]),
            "found_memory": found["memory"], "found_vector": found["vector"]}


def index_bytes(index) -> int:
    """What the worker's index holds in memory: its arrays, its id map and list, the ids."""
    arrays = sum(a.nbytes for a in (index._hashes, index._tenants, index._products))
    ids = sum(sys.getsizeof(i) for i in index._slot)
    return arrays + sys.getsizeof(index._slot) + sys.getsizeof(index._ids) + ids + 28 * len(index._slot)


def _flipped(h: int, bits: int, rng: random.Random) -> int:
    for b in rng.sample(range(64), bits):
        h ^= 1 << b
    return h


def _hits(truth: list[set[int]], found: list[list[int]]) -> int:
    return sum(len(t & set(f)) for t, f in zip(truth, found))


# -- the former lookup: a hash vector with its HNSW graph in each segment --------------------------
FORMER_HASH_VECTOR = EdgeVectorParams(size=64, distance=Distance.Dot, hnsw_config=HnswIndexConfig(
    m=16, ef_construct=100, full_scan_threshold=HASH_FULL_SCAN_KB))


def former_store(folder: Path) -> EdgeShard:
    """An Edge shard laid out as the embedded store was with the hash vector: the worker's
    settings and payload indexes, and the ``phash`` vector beside the CLIP one."""
    config = new_shard_config(StoreConfig(segment_points=SEGMENT_POINTS), DIM)
    folder.mkdir(parents=True)
    shard = EdgeShard.create(str(folder), EdgeConfig(
        vectors={"": config.vectors[""], PHASH: FORMER_HASH_VECTOR}, sparse_vectors=config.sparse_vectors,
        hnsw_config=config.hnsw_config, optimizers=EdgeOptimizersConfig(
            indexing_threshold=config.optimizers.indexing_threshold, max_segment_size=config.optimizers.max_segment_size)))
    ensure_indexes(shard, [])
    return shard


def load_former(shard: EdgeShard, hashes: list[int]) -> None:
    """As the worker loaded such a store: each segment's index built when it was full."""
    ones = [1.0] * DIM
    for start in range(0, len(hashes), 1000):
        shard.update(UpdateOperation.upsert_points([
            Point(point_id(f"p{i}"), {"": ones, PHASH: hash_vector(h)},
                  {"product_id": f"p{i}", "tenant": "default", "phash": f"{h:016x}", "photo_index": 0})
            for i, h in enumerate(hashes[start:start + 1000], start)]))
        if (start + 1000) % SEGMENT_POINTS == 0:
            shard.optimize()
    shard.optimize()


def former_lookup(shard: EdgeShard, batch: list[Photo], max_distance: int) -> list[list[tuple[str, int]]]:
    """The query the embedded store ran: one batched HNSW query on the hash vector, at least
    ``64 - 2d`` (``min_score``), in the tenant, then the exact distance checked."""
    params = SearchParams(hnsw_ef=HASH_EF)
    own = MatchAny([p.product_id for p in batch])  # the batch's products, left out as the worker does
    requests = [QueryRequest(limit=LISTED, query=Query.Nearest(hash_vector(p.phash), using=PHASH),
                             filter=Filter(must=[tenant_is(p.tenant)], must_not=[FieldCondition(key="product_id",
                                                                                                match=own)]),
                             score_threshold=min_score(max_distance),
                             with_payload=HASH_FIELDS, params=params) for p in batch]
    found = shard.query_batch(QueryBatchRequest(requests))
    return [[(x.payload["product_id"], d) for x in points
             if (d := distance(p.phash, int(x.payload["phash"], 16))) <= max_distance]
            for p, points in zip(batch, found)]


def report(result: dict) -> str:
    a = result["accuracy"]
    lines = [f"{a['originals']} distinct originals, {a['variants']} variants, {a['negative_pairs']} negative pairs; "
             f"WORKER_DUPLICATE_MAX_DISTANCE={a['max_distance']}; pairs the lookup missed: "
             f"{a['index_missed_pairs']}; hashing {a['hash_ms_per_photo']} ms a photo (decoded)",
             "| transform | precision | recall | false positives |", "|---|---|---|---|"]
    for t, s in [*a["per_transform"].items(), ("all", a["all"])]:
        lines.append(f"| {t} | {s['precision']} | {s['recall']} | {s['false_positives']} |")
    lines += ["", "the hash alone, every pair compared:", "| max distance | precision | recall | false positives |",
              "|---|---|---|---|"]
    lines += [f"| {d} | {s['precision']} | {s['recall']} | {s['false_positives']} |" for d, s in a["by_distance"].items()]
    if s := result.get("scale"):
        lines += ["", f"{s['points']} stored hashes, {s['batches']} batches of {s['batch']}, "
                      f"{s['planted']} planted near duplicates:",
                      f"in memory (the worker's): p50 / p95 {s['memory_ms']['p50']} / {s['memory_ms']['p95']} ms, "
                      f"found {s['found_memory']}; store loaded and indexed in {s['load_s']} s "
                      f"({s['segments']['memory']} segments), hashes read in {s['warm_s']} s "
                      f"(held in {s['index_mb']} MB)",
                      f"hash vector (HNSW, the former): p50 / p95 {s['vector_ms']['p50']} / {s['vector_ms']['p95']} ms, "
                      f"found {s['found_vector']}; loaded and indexed in {s['former_load_s']} s "
                      f"({s['segments']['vector']} segments)",
                      f"ratio of p50s: {s['vector_ms']['p50'] / max(s['memory_ms']['p50'], 1e-3):.1f}x"]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--synthetic", type=int, default=300, help="synthetic originals beside the real photos")
    p.add_argument("--max-distance", type=int, default=WorkerSettings.model_fields["worker_duplicate_max_distance"].default,
                   help="the threshold the per-transform table uses (WORKER_DUPLICATE_MAX_DISTANCE)")
    p.add_argument("--scale", type=int, default=100_000, help="stored random hashes for the latency (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the figures there")
    a = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-duplicates-"))
    try:
        result = {"commit": commit(), "machine": machine_info(),
                  "accuracy": accuracy(a.synthetic, a.seed, a.max_distance, folder)}
        if a.scale:
            result["scale"] = latency(a.scale, a.max_distance, a.seed, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(report(result))
    if a.json:
        write_json(a.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
