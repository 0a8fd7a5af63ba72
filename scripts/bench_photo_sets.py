#!/usr/bin/env python3
"""What a product's photo set costs the embedded store's writes (Qdrant Edge, on disk).

Since several photos per product, ``EdgeStore.upsert`` reads back the batch's products' photos
past photo 0 before it writes (``write_plan``: a stale set is left out, dropped photos are
deleted) and every point carries an indexed ``photo_index``. This measures, in a fresh process
each, on a store that grows to ``--batches`` x 32 points (no index build: only the write path):

- ``single``: upserts of 32 single-photo jobs, the code now against the code at ``--before``
  (a git revision, unpacked with ``git archive`` into a temporary folder), alternating for
  ``--rounds`` rounds; ms per upsert, the minimum and the median over chunks of 50 upserts
  (the minimum is the least disturbed by other work on the machine);
- now only: ``sets``, upserts of 8 jobs of 4 photos (32 points), and ``shrink``, after each
  such upsert (not timed), the same products again with 2 photos each: 16 points written and
  16 dropped photos deleted, in one upsert (timed).

  .venv/bin/python -m scripts.bench_photo_sets --before 6db541e --rounds 3
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.lib import ROOT
from scripts.lib.report import utc_now, write_json

CHILD = r"""
import json, sys, tempfile, time
import numpy as np
from batcher.queue.jobs import Job
from batcher.store import StoreConfig, open_store
kind, batches, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
vectors = np.random.default_rng(0).normal(size=(32, 512)).astype(np.float32)

def jobs(b, photos, version):
    if photos == 1:
        return [Job(f"j{b}-{i}", f"p{b}-{i}", "n", "", {"shop": "s1"}, f"s{b}-{i}", 0, 0, version=version)
                for i in range(32)]
    from batcher.queue.photos import Photo
    out = []
    for i in range(32 // 4):
        listed = tuple(Photo(k, f"s{b}-{i}-{k}-{version}") for k in range(photos))
        out += [Job(f"j{b}-{i}-{version}", f"p{b}-{i}", "n", "", {}, p.image_sha256, 0, 0, version=version,
                    photos=listed, photo_index=p.index) for p in listed]
    return out

store = open_store(StoreConfig(path=tempfile.mkdtemp(dir=folder), segment_points=10**9), 512)
times = []
for b in range(batches):
    first = jobs(b, 1 if kind == "single" else 4, 1)
    if kind == "shrink":
        store.upsert(first, vectors)
        first = jobs(b, 2, 2)  # the same products again, with 2 photos: 2 of each set dropped
    t0 = time.perf_counter()
    store.upsert(first, vectors[:len(first)])
    times.append(time.perf_counter() - t0)
if kind == "shrink":
    assert len(store.get("p0-0")["photos"]) == 2, "the dropped photos are still there"
store.close()
chunks = sorted(sum(times[i:i + 50]) / len(times[i:i + 50]) * 1000 for i in range(0, len(times), 50))
print(json.dumps({"min_ms": round(chunks[0], 3), "median_ms": round(chunks[len(chunks) // 2], 3)}))
"""


def measure(code: Path, kind: str, batches: int, folder: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(batches), str(folder)], cwd=code,
                         env={"PYTHONPATH": str(code), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def unpack(rev: str, folder: Path) -> None:
    """The tree of ``rev``, as files in ``folder`` (no worktree, no checkout)."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="6db541e", help="the revision to compare with (default: before photos)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", type=int, default=400, help="upserts of 32 points per run")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--dir", type=Path, default=ROOT / "data", help="where the stores are written (default data/)")
    a = p.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:  # on the disk the worker would use, not a tmpfs
        (before := Path(tmp) / "before").mkdir()
        (stores := Path(tmp) / "stores").mkdir()
        unpack(a.before, before)
        runs = {"single now": [], f"single at {a.before}": [], "sets now": [], "shrink now": []}
        for _ in range(a.rounds):
            runs[f"single at {a.before}"].append(measure(before, "single", a.batches, stores))
            for kind in ("single", "sets", "shrink"):
                runs[f"{kind} now"].append(measure(ROOT, kind, a.batches, stores))
    best = {name: {"min_ms": min(r["min_ms"] for r in rs),
                   "median_ms": sorted(r["median_ms"] for r in rs)[len(rs) // 2]} for name, rs in runs.items()}
    for name, b in best.items():
        print(f"{name:24s} ms per upsert: min {b['min_ms']:.2f}, median {b['median_ms']:.2f}")
    if a.json:
        write_json(a.json, {"when": utc_now(), "before": a.before, "rounds": a.rounds, "runs": runs, "best": best})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
