"""scripts/bench_store.py end to end on a small store: both embedded engines, every figure.

A segment of 128 points makes the Edge store build its HNSW index twice in 300 points, so
the timing of the builds and the stall ticker are exercised as in the real run.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("upsert_points_per_s", "upsert_points_per_s_without_builds", "index_build_s", "search_p50_ms", "search_p99_ms", "filtered_p50_ms",
        "filtered_p99_ms", "recall_at_10", "open_s", "longest_stall_s")


def test_bench_store_measures_edge_and_local(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "scripts.bench_store", "--points", "300", "--engines", "edge,local",
                           "--stall", "--segment-points", "128", "--json", str(out), "--dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["points"] == 300 and result["machine"] and result["commit"]
    for engine in ("edge", "local"):
        figures = result[engine]
        assert set(KEYS) <= set(figures), (engine, figures)
        assert figures["upsert_points_per_s"] > 0 and figures["open_s"] > 0
        assert 0 < figures["search_p50_ms"] <= figures["search_p99_ms"]
        assert 0 < figures["filtered_p50_ms"] <= figures["filtered_p99_ms"]
        assert 0 <= figures["recall_at_10"] <= 1 and figures["ready_within_10s"]
        assert 0.004 < figures["longest_stall_s"] < 60
    assert result["local"]["recall_at_10"] > 0.99  # qdrant-client's local mode searches exactly
    assert result["edge"]["recall_at_10"] > 0.5
    assert result["edge"]["index_builds"] >= 2 and result["edge"]["index_build_s"] > 0
    assert result["local"]["index_build_s"] == 0
    assert result["edge_over_local"]["upsert_points_per_s"] > 0
    assert "| edge |" in proc.stdout and "| local |" in proc.stdout and "edge/local:" in proc.stdout
    assert not list(tmp_path.glob("bench-store-*"))  # the stores' folders are removed
