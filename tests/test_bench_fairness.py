"""scripts/bench_fairness.py, tiny: both modes run, b completes in each, and fairness lets b pass
most of a's import where first come, first served makes it wait for all of it."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_bench_fairness_reports_both_modes(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "scripts.bench_fairness", "--jobs", "400", "--head-start", "10",
                           "--batch-size", "8", "--timeout", "120", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    fair, fifo = report["modes"]
    assert (fair["fair_scheduling"], fifo["fair_scheduling"]) == (True, False)
    # without fairness every one of a's jobs queued ahead of b completes first; with it, a few batches
    assert fifo["a_completed_before_b"] >= fifo["a_queued_when_b_came"] > 0
    assert fair["a_completed_before_b"] < fair["a_queued_when_b_came"] / 2
    assert report["without_over_with"] > 0 and "without / with fairness" in proc.stdout
