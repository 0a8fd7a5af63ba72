"""scripts/bench_webhooks.py, tiny: real Redis, API and worker; every delivery received and signed."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_bench_webhooks_measures_every_delivery(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "scripts.bench_webhooks", "--jobs", "4", "--timeout", "90",
                           "--json", str(out), "--logs", str(tmp_path / "logs")],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())["result"]
    assert (result["jobs"], result["delivered"], result["bad_signatures"]) == (4, 4, 0)
    assert result["statuses"] == ["completed"]
    assert 0 < result["delay_ms"]["p50"] <= result["delay_ms"]["p99"] <= result["delay_ms"]["max"]
    assert "job end -> received ms p50" in proc.stdout
