"""scripts/bench_shards.py, tiny: one shard on one Redis and 6 shards on a local 3-master
cluster, every figure in its JSON report."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

PHASE_KEYS = ("wall_s", "images_per_s", "server_cpu_us_per_image", "busiest_master_cpu_us_per_image",
              "all_masters_cpu_us_per_image")


def test_bench_shards_reports_both_setups(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "scripts.bench_shards", "--images", "50", "--round", "25",
                           "--image-kb", "16", "--idle-s", "0.2", "--enqueuers", "2", "--consumers", "2", "--json", str(out),
                           "--dir", str(tmp_path / "servers")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["images"] == 50 and report["image_bytes"] == 16 * 1024 and report["machine"]["cores"] >= 1
    one, many = report["setups"]
    assert (one["masters"], one["shards"], many["masters"], many["shards"]) == (1, 1, 3, 6)
    for setup in (one, many):
        assert setup["images_in"] == setup["images_out"] == 50 and setup["left_in_queue"] == 0
        assert len(setup["idle_server_cpu_ms_per_s"]) == setup["masters"]
        for phase in ("in", "out"):
            assert all(f"{k}_{phase}" in setup for k in PHASE_KEYS), setup
            assert setup[f"images_per_s_{phase}"] > 0
            per_master = setup[f"server_cpu_us_per_image_{phase}"]
            assert len(per_master) == setup["masters"] and all(v >= 0 for v in per_master.values())
    assert set(report["cluster_over_one_shard"]) == {"images_per_s_in", "images_per_s_out",
                                                     "server_bound_capacity_in", "server_bound_capacity_out"}
    assert "cluster / one shard:" in proc.stdout
