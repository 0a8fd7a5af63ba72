"""scripts/bench_duplicates.py end to end, tiny: the real photos and a few synthetic ones, a
small store for the latency."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_duplicates_measures_precision_recall_and_latency(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "scripts.bench_duplicates", "--synthetic", "5", "--scale", "500",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    a = result["accuracy"]
    assert a["originals"] > 20 and a["variants"] == 5 * a["originals"] and result["commit"]
    assert a["index_missed_pairs"] == 0  # the lookup finds every pair the threshold admits
    for transform in ("resize_50", "jpeg_q40"):  # the easy ones: every variant found, nothing else
        assert a["per_transform"][transform]["recall"] == 1.0
        assert a["per_transform"][transform]["precision"] == 1.0
    recalls = [s["recall"] for s in a["by_distance"].values()]
    assert recalls == sorted(recalls)  # a larger distance never finds less
    scale = result["scale"]
    # every query is a stored hash with up to 10 bits flipped: both lookups find all the exact answer holds
    assert scale["points"] == 500 and scale["planted"] >= 20 * 32
    assert scale["found_memory"] == scale["found_vector"] == scale["planted"]
    assert scale["memory_ms"]["p50"] > 0 and scale["vector_ms"]["p50"] > 0 and scale["index_mb"] > 0
    assert "| rotate_2 |" in proc.stdout and "planted near duplicates" in proc.stdout
