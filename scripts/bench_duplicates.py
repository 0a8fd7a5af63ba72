"""Precision and recall of the near-duplicate detector (batcher/duplicates/), and its lookup's
latency at scale.

The set: distinct originals (the corpus's real photos, one per picture, their four quarters,
and synthetic scenes of random shapes), and of each original five variants: resized to 50%,
re-encoded as JPEG quality 40, cropped 5% (centred, and from one corner) and rotated 2 degrees.
The originals are stored through the worker's own code (``DuplicateFinder`` over an embedded
Edge store, as the finish stage does), then each variant is looked up: a hit on its own
original is a true positive, a hit on any other original a false positive. Precision and
recall per transform at ``--max-distance``, and over a range of distances.

``--scale N`` stores N random hashes in another Edge store and times a batch's lookup (32
photos, one banded read) against a full scan of every stored hash. Random hashes spread over
the bands evenly; real catalogs, less so (more candidates per read).

    python -m scripts.bench_duplicates [--synthetic 300] [--scale 100000] [--json out.json]
"""
from __future__ import annotations

import argparse
import io
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from batcher.config import DuplicateConfig
from batcher.duplicates.bands import probe_keys
from batcher.duplicates.finder import DuplicateFinder
from batcher.duplicates.phash import distance, phash
from batcher.duplicates.photo import Photo, Probe
from batcher.queue.jobs import Job
from batcher.settings import WorkerSettings
from batcher.store import StoreConfig, open_store
from scripts.lib.bench_images import source_photos
from scripts.lib.report import commit, machine_info, write_json
from scripts.lib.stats import summary_ms

DIM = 4  # the detector reads no vector: the smallest store will do
BATCH = 32
TRANSFORMS = ("resize_50", "jpeg_q40", "crop_5_centre", "crop_5_corner", "rotate_2")
DISTANCES = (4, 6, 8, 10, 12, 14)


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


def open_temp_store(root: Path, segment_points: int = 20_000):
    return open_store(StoreConfig(path=str(root), segment_points=segment_points), DIM, "bench-duplicates")


def store_hashes(store, finder: DuplicateFinder | None, hashes: list[int], prefix: str) -> None:
    """Store one point per hash in batches, as the finish stage does (``finder`` marks them)."""
    for start in range(0, len(hashes), 1000):
        chunk = hashes[start:start + 1000]
        jobs = [Job(f"job-{prefix}{start + i}", f"{prefix}{start + i}", "", "", {}, "", 0, 0, version=1)
                for i in range(len(chunk))]
        by_job = {j.job_id: h for j, h in zip(jobs, chunk)}
        if finder is None:
            for j in jobs:
                DuplicateFinder.stamp(j, by_job[j.job_id], [])
        else:
            finder.mark(jobs, by_job)
        store.upsert(jobs, np.ones((len(jobs), DIM), np.float32))


def detect(store, queries: list[tuple[str, str, int]], max_distance: int) -> list[list[tuple[str, int]]]:
    """Each query's (original, transform, hash) near duplicates as the detector finds them
    (a batch at a time, one banded read each): (stored product id, distance) pairs."""
    finder = DuplicateFinder(store, DuplicateConfig(max_distance, 1000))
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
    (the banded lookup in an Edge store) at ``max_distance``."""
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
    """A batch's banded lookup among ``n`` stored random hashes, against a full scan."""
    rng = random.Random(seed)
    stored = [rng.getrandbits(64) for _ in range(n)]
    store = open_temp_store(folder / "scale")
    try:
        t0 = time.perf_counter()
        store_hashes(store, None, stored, "p")
        load_s = time.perf_counter() - t0
        finder = DuplicateFinder(store, DuplicateConfig(max_distance, 1000))
        banded, scans, hits = [], [], []
        for r in range(10):
            batch = [Photo(f"q{r}-{i}", 0, stored[rng.randrange(n)] ^ (1 << rng.randrange(64))) for i in range(BATCH)]
            t0 = time.perf_counter()
            near = finder.find(batch)
            banded.append(time.perf_counter() - t0)
            hits.append(sum(bool(ns) for ns in near))
            t0 = time.perf_counter()
            full_scan(store, [p.phash for p in batch], max_distance)
            scans.append(time.perf_counter() - t0)
        candidates = sum(map(len, store.hashed([Probe(probe_keys(p.phash, max_distance), p.tenant, [])
                                                for p in batch], n)))
    finally:
        store.close()
    return {"points": n, "batch": BATCH, "load_s": round(load_s, 1), "banded_ms": summary_ms(banded),
            "full_scan_ms": summary_ms(scans), "found_per_batch": min(hits), "candidates_per_batch": candidates}


def full_scan(store, hashes: list[int], max_distance: int) -> list[list[int]]:
    """Every stored hash read and compared: what the banded index saves."""
    stored, offset = [], None
    while True:
        points, offset = store.scroll(offset, 10_000)
        stored += [int(p.payload["phash"], 16) for p in points]
        if offset is None:
            break
    return [[s for s in stored if distance(h, s) <= max_distance] for h in hashes]


def report(result: dict) -> str:
    a = result["accuracy"]
    lines = [f"{a['originals']} distinct originals, {a['variants']} variants, {a['negative_pairs']} negative pairs; "
             f"WORKER_DUPLICATE_MAX_DISTANCE={a['max_distance']}; pairs the banded index missed: "
             f"{a['index_missed_pairs']}; hashing {a['hash_ms_per_photo']} ms a photo (decoded)",
             "| transform | precision | recall | false positives |", "|---|---|---|---|"]
    for t, s in [*a["per_transform"].items(), ("all", a["all"])]:
        lines.append(f"| {t} | {s['precision']} | {s['recall']} | {s['false_positives']} |")
    lines += ["", "the hash alone, every pair compared:", "| max distance | precision | recall | false positives |",
              "|---|---|---|---|"]
    lines += [f"| {d} | {s['precision']} | {s['recall']} | {s['false_positives']} |" for d, s in a["by_distance"].items()]
    if s := result.get("scale"):
        lines += ["", f"{s['points']} stored hashes, batches of {s['batch']}: banded lookup p50 "
                      f"{s['banded_ms']['p50']} ms (p95 {s['banded_ms']['p95']}), full scan p50 "
                      f"{s['full_scan_ms']['p50']} ms; {s['candidates_per_batch']} candidates a batch, "
                      f"{s['found_per_batch']} of {s['batch']} found (the worst batch)"]
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
