"""CLIP_PRECISION: int8 on CPU against fp32 (parity), and impossible choices refused at start."""
from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from torch import nn

from batcher.decode import decode
from batcher.status import WorkerStatus
from conftest import ROOT, corpus_files, upload
from models.clip import load_encoder
from models.precision import UnsupportedPrecision, cpu_half_support, resolve_precision

TEXTS = ["a red coffee cup", "a photo of a cat", "an astronaut in a white suit", "a rocket on the launch pad",
         "yellow flowers", "a frozen pond in winter", "Pikolo espresso cup and saucer, 90 ml, porcelain",
         "running shoes", "a leather handbag", "", "a very long product description " * 20]


def corpus_pixels(encoder) -> np.ndarray:
    return np.stack([decode(p.read_bytes(), encoder.preprocessing, 40_000_000) for p in corpus_files("index")])


def top1_agreement(reference: np.ndarray, candidate: np.ndarray, index: np.ndarray, tie: float = 1e-3) -> float:
    """Share of images whose nearest other image, querying ``index`` with ``candidate``, is the fp32 one.

    Images that fp32 itself cannot tell apart (cosines within ``tie`` of the best, such as the
    corpus's flower.jpg and flower.webp) count as the same answer.
    """
    truth = reference @ reference.T
    found = candidate @ index.T
    np.fill_diagonal(truth, -np.inf)
    np.fill_diagonal(found, -np.inf)
    picked = truth[np.arange(len(truth)), found.argmax(1)]
    return float(np.mean(picked >= truth.max(1) - tie))


@pytest.mark.parametrize("model", ["clipq-tiny", pytest.param("ViT-B-32", marks=pytest.mark.slow)])
def test_int8_vectors_match_fp32(model):
    fp32 = load_encoder(model, "none", "cpu", seed=0, precision="fp32")
    int8 = load_encoder(model, "none", "cpu", seed=0, precision="int8")
    assert int8.precision == "int8"
    float_layers = [name for name, m in int8.model.named_modules() if isinstance(m, (nn.Linear, nn.MultiheadAttention))]
    assert not float_layers, f"left in float: {float_layers}"  # attention projections included
    pixels = corpus_pixels(fp32)
    images, images8 = fp32.embed_images(pixels), int8.embed_images(pixels)
    texts, texts8 = fp32.embed_texts(TEXTS), int8.embed_texts(TEXTS)
    assert not np.array_equal(images, images8)  # the int8 path really ran
    image_cos, text_cos = (images * images8).sum(1), (texts * texts8).sum(1)
    assert image_cos.min() >= 0.99, dict(zip(map(str, corpus_files("index")), image_cos.round(4)))
    assert text_cos.min() >= 0.99, dict(zip(TEXTS, text_cos.round(4)))
    assert top1_agreement(images, images8, images8) >= 0.98  # an int8 index searched by int8 queries
    assert top1_agreement(images, images8, images) >= 0.98  # int8 queries on an index built in fp32


def test_auto_is_fp16_on_cuda_and_fp32_on_cpu():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "cuda:0") == "fp16"
    assert resolve_precision("int8", "cpu") == "int8"


def test_impossible_precisions_are_refused_with_what_works():
    with pytest.raises(UnsupportedPrecision, match="int8 runs on the CPU only"):
        resolve_precision("int8", "cuda")
    for half in ("bf16", "fp16"):
        with pytest.raises(UnsupportedPrecision, match=f"native {half}.*use fp32 or int8"):
            resolve_precision(half, "cpu", cpu_supports=frozenset())
        assert resolve_precision(half, "cpu", cpu_supports=frozenset({half})) == half
    with pytest.raises(UnsupportedPrecision, match="use one of"):
        resolve_precision("int4", "cpu")


def test_bf16_on_this_cpu_runs_close_to_fp32_or_is_refused():
    if "bf16" not in cpu_half_support():
        with pytest.raises(UnsupportedPrecision, match="native bf16"):
            load_encoder("clipq-tiny", "none", "cpu", precision="bf16")
        return
    fp32 = load_encoder("clipq-tiny", "none", "cpu", precision="fp32")
    bf16 = load_encoder("clipq-tiny", "none", "cpu", precision="bf16")
    pixels = corpus_pixels(fp32)
    assert (fp32.embed_images(pixels) * bf16.embed_images(pixels)).sum(1).min() >= 0.99


def test_worker_asked_for_int8_on_cuda_exits_at_start_with_the_fix(redis_url, tmp_path):
    env = dict(os.environ, REDIS_URL=redis_url, CLIP_MODEL="clipq-tiny", CLIP_PRETRAINED="none",
               CLIP_DEVICE="cuda", CLIP_PRECISION="int8", QDRANT_PATH=str(tmp_path / "q"), WORKER_METRICS_PORT="0")
    proc = subprocess.run([sys.executable, "-m", "batcher", "--batch-mode"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "cannot start" in proc.stdout and "int8 runs on the CPU only" in proc.stdout


def test_an_int8_worker_indexes_and_says_so_in_its_metrics(client, worker_settings):
    from batcher.app import WorkerApp

    jobs = [upload(client, path, f"p{i}").json()["job_id"] for i, path in enumerate(corpus_files("index")[:6])]
    app = WorkerApp.start(worker_settings(clip_precision="int8"), registry=CollectorRegistry())
    assert app.run(burst=True).completed == len(jobs)
    labels = {"worker_id": app.settings.worker_id, "device": "cpu", "model": "clipq-tiny", "precision": "int8"}
    assert app.encoder.precision == "int8"
    assert app.metrics.registry.get_sample_value("clipq_worker_info", labels) == 1
    totals = SimpleNamespace(completed=0, failed=0)
    worker = SimpleNamespace(ledger=SimpleNamespace(snapshot=lambda: totals), infer=SimpleNamespace(room=lambda: 8))
    s = app.settings
    status = WorkerStatus(s.worker_id, s.worker_batch_size, s.worker_heartbeat_ttl, app.encoder, worker,
                          SimpleNamespace(healthy=lambda: True))()
    assert status["precision"] == "int8"  # what the dashboard shows; its activations stay float32
