"""scripts/bench_peers.py end to end: its client through clipq's real API, worker and Redis.

The peers (LitServe, Ray Serve) are not installed by scripts/test.sh; where they are missing,
the run must say how to install them, skip them and still measure clipq.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_run_measures_clipq_end_to_end_and_skips_missing_peers(tmp_path):
    missing = [name for name in ("litserve", "ray") if importlib.util.find_spec(name) is None]
    out, scratch = tmp_path / "result.json", tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.run([sys.executable, "-m", "scripts.bench_peers", "--quick", "--model", "clipq-tiny",
                           "--systems", ",".join(["clipq", *missing]), "--logs", str(tmp_path / "logs"),
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=280,
                          env=dict(os.environ, TMPDIR=str(scratch)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in missing:
        assert f"skipping {name}: {name} is not installed" in proc.stdout
        assert "pip install -e '.[peers]'" in proc.stdout
    result = json.loads(out.read_text())
    [run] = result["runs"]  # every upload answered 202 and every job was seen completed, or it raised
    assert run["system"] == "clipq" and run["images"] == 32
    assert run["images_per_s"] > 0 and min(run["model_only_images_per_s"]) > 0
    assert not list(scratch.glob("clipq-*")), "the run left its scratch folders behind"
    assert "| clipq, including the Qdrant upsert and Redis bookkeeping |" in proc.stdout
