"""scripts/bench_hybrid.py end to end, tiny: the API, a worker, a catalog, every mode timed."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_hybrid_times_the_three_modes_side_by_side(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "scripts.bench_hybrid", "--products", "200", "--queries", "4",
                           "--warmup", "1", "--model", "clipq-tiny", "--device", "cpu", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["products"] == 200 and result["commit"] and result["machine"]["cores"] >= 1
    for mode in ("vector", "keyword", "hybrid"):
        assert 0 < result["ms"][mode]["p50"] <= result["ms"][mode]["p99"], result["ms"]
    assert result["hybrid_over_vector_p50"] > 0 and result["keyword_over_vector_p50"] > 0
    assert result["sku_rank"]["keyword"] == 1
    assert 0 < result["store_ms"]["vector"]["p50"] and result["store_hybrid_over_vector_p50"] > 0
    assert "store alone" in proc.stdout
    assert "| hybrid |" in proc.stdout and "hybrid/vector p50:" in proc.stdout
