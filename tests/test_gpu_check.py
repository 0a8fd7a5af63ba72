"""scripts/gpu_check.sh in its CPU mode: the whole check, tiny, on this machine.

The speeds it prints here mean nothing (clipq-tiny, 16 images); what is tested is that every
step runs through the real worker's options, that what needs CUDA is reported as skipped with
its reason, and that the one JSON report holds an answer for every question. The compile and
cudagraphs steps are left out here to keep it near a minute (compiling takes about a minute on
a small CPU): tests/test_gpu_options.py runs a compiled worker and the refusal of cudagraphs.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from conftest import ROOT


@pytest.mark.slow
def test_gpu_check_in_cpu_mode_answers_every_question(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = os.environ | {"GPU_CHECK_DEVICE": "cpu", "GPU_CHECK_IMAGES": "16", "GPU_CHECK_OPTION_IMAGES": "16",
                        "GPU_CHECK_BATCHES": "4,8", "GPU_CHECK_SEED_IMAGES": "4",
                        "GPU_CHECK_STEPS": "parity,sweep,options"}
    run = subprocess.run(["bash", "scripts/gpu_check.sh", str(out)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    a = report["answers"]
    assert report["ok"] and a["fp16_parity"]["ok"] and a["fp16_parity"]["image_cosine_min"] > 0.99
    assert set(a["batch_sweep"]) == {"4", "8"}
    for row in a["batch_sweep"].values():
        assert row["images_per_s"] > 0 and 0 < row["infer_busy_ratio"] <= 1
    assert a["targets"]["seed_style_images_per_s"] > 0 and a["targets"]["over_seed"] > 0
    assert a["pinned_memory_off"]["measured"] and a["pinned_memory_off"]["cosine_to_eager_min"] > 0.999
    assert a["decode"]["threads=2"]["measured"] and a["decode"]["base"]["decode_only_images_per_s"] > 0
    if not torch.cuda.is_available():
        assert "WORKER_DECODE_DEVICE=cuda" in a["decode"]["decode=cuda"]["why"]
    assert not a["torch_compile"]["measured"] and not a["cudagraphs"]["measured"]
    steps = {s["step"]: s for s in report["steps"]}
    assert [steps[n]["note"] for n in ("parity", "sweep", "options")] == ["ok"] * 3
    assert steps["compile"]["note"] == steps["cudagraphs"]["note"] == "not asked for"
