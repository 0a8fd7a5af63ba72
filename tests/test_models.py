"""Model loading: seeded random weights, a local checkpoint, and clear errors when weights are missing."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from models.clip import WeightsUnavailable, load_encoder


def pixels(n=3, size=64):
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_seeded_random_weights_are_identical_across_workers(encoder):
    other = load_encoder("clipq-tiny", "none", "cpu", seed=0)
    assert np.allclose(encoder.embed_images(pixels()), other.embed_images(pixels()), atol=1e-6)
    different = load_encoder("clipq-tiny", "none", "cpu", seed=1)
    assert not np.allclose(encoder.embed_images(pixels()), different.embed_images(pixels()), atol=1e-3)


def test_vectors_are_unit_length_of_the_model_size(encoder):
    v = encoder.embed_images(pixels())
    t = encoder.embed_texts(["a red cup", "a cat"])
    assert v.shape == (3, encoder.dim) and t.shape == (2, encoder.dim)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-4)


def test_a_local_checkpoint_loads_the_same_weights(encoder, tmp_path):
    path = tmp_path / "clipq-tiny.pt"
    torch.save(encoder.model.state_dict(), path)
    loaded = load_encoder("clipq-tiny", str(path), "cpu")
    assert np.allclose(loaded.embed_images(pixels()), encoder.embed_images(pixels()), atol=1e-5)


def test_missing_checkpoint_says_how_to_fix_it(tmp_path):
    with pytest.raises(WeightsUnavailable, match="no such checkpoint"):
        load_encoder("clipq-tiny", str(tmp_path / "nope.pt"), "cpu")
    with pytest.raises(WeightsUnavailable, match="unknown CLIP_MODEL"):
        load_encoder("ViT-Nope", "none", "cpu")


def test_a_corrupt_checkpoint_says_how_to_fix_it(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailable, match="CLIP_PRETRAINED=none"):
        load_encoder("clipq-tiny", str(path), "cpu")


def test_worker_without_weights_exits_at_start_with_the_fix(redis_url, tmp_path):
    env = dict(os.environ, REDIS_URL=redis_url, CLIP_MODEL="clipq-tiny", CLIP_PRETRAINED=str(tmp_path / "w.pt"),
               QDRANT_PATH=str(tmp_path / "q"), WORKER_METRICS_PORT="0")
    proc = subprocess.run([sys.executable, "-m", "batcher"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "cannot start" in proc.stdout and "no such checkpoint" in proc.stdout


def test_a_second_worker_on_the_embedded_folder_is_refused(start_worker, tmp_path):
    from batcher.app import StartupError

    first = start_worker(qdrant_path=str(tmp_path / "shared"))
    try:
        with pytest.raises(StartupError, match="several workers.*Qdrant server"):
            start_worker(qdrant_path=str(tmp_path / "shared"))
    finally:
        first.store.close()


def test_a_taken_metrics_port_is_a_clear_start_error(redis_url, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = dict(os.environ, REDIS_URL=redis_url, CLIP_MODEL="clipq-tiny", CLIP_PRETRAINED="none",
                   QDRANT_PATH=str(tmp_path / "q"), WORKER_METRICS_PORT=str(port))
        proc = subprocess.run([sys.executable, "-m", "batcher", "--batch-mode"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "WORKER_METRICS_PORT" in proc.stdout, proc.stdout[-2000:]


def test_decode_threads_follow_a_container_cpu_quota(tmp_path):
    from batcher.settings import available_cpus

    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # 1.5 CPUs
    assert available_cpus(str(quota)) == 1
    quota.write_text("max 100000\n")
    assert available_cpus(str(quota)) == available_cpus(str(tmp_path / "absent"))
