"""The GPU options, exercised on a CPU wherever their code runs there: CLIP_COMPILE,
CLIP_PIN_MEMORY, WORKER_DECODE_DEVICE (its JPEG batch decoder on the CPU), and the infer busy
metric. What only CUDA can run is refused at start-up with a reason, and that is tested too."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch
from PIL import Image
from prometheus_client import CollectorRegistry

from batcher.app import StartupError, WorkerApp
from batcher.decode import DecodeBudget, ImageDecoder
from batcher.gpu_decode import JpegBatchDecoder
from conftest import CORPUS, corpus_files, job_ids_by_status, stored_points, upload
from models.acceleration import UnsupportedAcceleration, batch_buckets, bucket_for, check_mode
from models.clip import load_encoder

NO_CUDA = not torch.cuda.is_available()


def photo_jpeg(path, quality=90, **save) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, "JPEG", quality=quality, **save)
    return buf.getvalue()


def stored_vectors(app, product_ids: list[str]) -> np.ndarray:
    points = stored_points(app.settings, product_ids)
    return np.array([points[p][1] for p in product_ids], dtype=np.float32)


def test_buckets_are_powers_of_two_from_8_and_the_largest_batch():
    assert batch_buckets(256) == (8, 16, 32, 64, 128, 256)
    assert batch_buckets(300) == (8, 16, 32, 64, 128, 256, 300)
    assert batch_buckets(4) == (4,)
    assert [bucket_for(n, batch_buckets(300)) for n in (1, 8, 9, 200, 257, 300)] == [8, 8, 16, 256, 300, 300]


def test_modes_a_device_cannot_run_are_refused_with_the_reason():
    check_mode("compile", "cpu", "fp32")
    check_mode("cudagraphs", "cuda", "fp16")
    with pytest.raises(UnsupportedAcceleration, match="cudagraphs needs a CUDA device"):
        check_mode("cudagraphs", "cpu", "fp32")
    with pytest.raises(UnsupportedAcceleration, match="int8"):
        check_mode("compile", "cpu", "int8")
    with pytest.raises(UnsupportedAcceleration, match="use one of"):
        check_mode("fast", "cpu", "fp32")


def test_unknown_option_values_are_rejected_by_the_settings(worker_settings):
    from pydantic import ValidationError

    for bad in ({"clip_compile": "fast"}, {"worker_decode_device": "gpu"}, {"clip_pin_memory": "maybe"}):
        with pytest.raises(ValidationError):
            worker_settings(**bad)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA: the option is valid here")
@pytest.mark.parametrize("option, words", [({"worker_decode_device": "cuda"}, "WORKER_DECODE_DEVICE=cuda"),
                                           ({"clip_compile": "cudagraphs"}, "CLIP_COMPILE=cudagraphs")])
def test_cuda_only_options_stop_a_cpu_worker_at_start_up(worker_settings, option, words):
    with pytest.raises(StartupError, match=words) as info:
        WorkerApp.start(worker_settings(**option), registry=CollectorRegistry())
    assert "CUDA" in str(info.value) and "cpu" in str(info.value).lower()


def test_pinned_copies_are_a_no_op_on_a_cpu(encoder, client, worker_settings):
    unpinned = load_encoder("clipq-tiny", "none", "cpu", seed=0, pin_memory=False)
    pinned = load_encoder("clipq-tiny", "none", "cpu", seed=0, pin_memory=True)
    assert not pinned.pin_memory  # CLIP_PIN_MEMORY only changes a copy to a GPU
    pixels = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    assert np.array_equal(pinned.embed_images(pixels), unpinned.embed_images(pixels))
    for pin in (False, True):  # the worker loads its own model with the option, and indexes
        job = upload(client, CORPUS / "real" / "hopper.jpg", f"pin-{pin}").json()["job_id"]
        app = WorkerApp.start(worker_settings(clip_pin_memory=pin), registry=CollectorRegistry())
        assert app.encoder.pin_memory is False
        assert app.run(burst=True).completed == 1
        assert job_ids_by_status(client, [job]) == {job: "completed"}


@pytest.mark.slow
def test_a_compiled_worker_indexes_the_vectors_of_the_eager_model(client, worker_settings, encoder):
    """CLIP_COMPILE=compile through the real worker: compiled at start-up (batch 8 and 1), then
    batches of 8 and of 3 (the batch dimension is dynamic), vectors as the eager model's."""
    paths = [p for p in corpus_files("index") if p.suffix in (".jpg", ".png")][:11]
    ids = [f"c{i}" for i in range(len(paths))]
    for pid, path in zip(ids, paths):
        assert upload(client, path, pid).status_code == 202
    app = WorkerApp.start(worker_settings(clip_compile="compile", worker_batch_size=8, worker_max_wait_ms=500),
                          registry=CollectorRegistry())
    assert app.encoder.forward.mode == "compile"
    totals = app.run(burst=True)
    assert totals.completed == len(paths) and totals.batches >= 2
    eager = np.concatenate([encoder.embed_images(ImageDecoder(encoder.preprocessing, 40_000_000, None, 1)(
        [p.read_bytes()])[0]) for p in paths])
    cosine = (stored_vectors(app, ids) * eager).sum(axis=1)
    assert cosine.min() > 0.999, cosine


def test_infer_busy_seconds_count_the_forward_passes(client, start_worker):
    for i in range(12):
        upload(client, None, f"b{i}", data=photo_jpeg(CORPUS / "real" / "hopper.jpg", quality=80 + i))
    app = start_worker(worker_batch_size=4)
    t0 = time.perf_counter()
    assert app.run(burst=True).completed == 12
    wall = time.perf_counter() - t0
    busy = app.metrics.registry.get_sample_value("clipq_infer_busy_seconds_total")
    infer_sum = app.metrics.registry.get_sample_value("clipq_stage_duration_seconds_sum", {"stage": "infer"})
    assert 0 < busy < wall and infer_sum == pytest.approx(busy)  # every pass here succeeded


# -- WORKER_DECODE_DEVICE: the JPEG batch decoder, run on the CPU --------------------------------
def mixed_batch() -> list[tuple[str, bytes | None]]:
    real = CORPUS / "real"
    items = [(p.name, p.read_bytes()) for p in corpus_files("index") + corpus_files("reject")]
    good = photo_jpeg(real / "rocket.jpg")
    items += [("progressive.jpg", photo_jpeg(real / "chelsea.png", progressive=True)),
              ("missing", None),
              ("garbage_inside.jpg", good[:800] + bytes(range(256)) * 8 + b"\xff\xd9"),
              ("no_scan.jpg", good[:good.index(b"\xff\xda")] + b"\xff\xd9")]  # a plain header, no pixels
    return items


@pytest.fixture
def decoders(encoder):
    prep = encoder.preprocessing
    cpu = ImageDecoder(prep, 40_000_000, DecodeBudget(1 << 30), 2)
    jpeg = JpegBatchDecoder(ImageDecoder(prep, 40_000_000, DecodeBudget(1 << 30), 2), "cpu", 1 << 30)
    yield cpu, jpeg
    cpu.close()
    jpeg.close()


def test_the_jpeg_path_fails_the_same_images_as_the_cpu_with_the_same_words(decoders, encoder, caplog):
    caplog.set_level("INFO", "clipq.decode")
    cpu, jpeg = decoders
    names, data = zip(*mixed_batch())
    cpu_pixels, cpu_errors = cpu(list(data))
    jpeg_pixels, jpeg_errors = jpeg(list(data))
    assert jpeg_errors == cpu_errors
    assert sum(e is None for e in cpu_errors) >= 20 and sum(e is not None for e in cpu_errors) >= 10
    assert isinstance(jpeg_pixels, torch.Tensor) and jpeg_pixels.shape == cpu_pixels.shape
    taken = [n for n, d in zip(names, data) if jpeg._plain_jpeg(d) is not None]
    assert {"hopper.jpg", "flower.jpg", "rocket.jpg", "progressive.jpg", "no_scan.jpg"} <= set(taken)
    assert "JPEG batch decode on cpu of" in caplog.text  # no_scan.jpg failed its decode call: all of it went to the CPU
    assert cpu_errors[names.index("no_scan.jpg")] is not None
    assert not {"hopper_orientation_6.jpg", "pil_sample_cmyk.jpg", "truncated_jpeg.jpg", "frozenpond.mpo",
                "astronaut.png"} & set(taken)
    cosine = (encoder.embed_images(jpeg_pixels) * encoder.embed_images(cpu_pixels)).sum(axis=1)
    assert cosine.min() > 0.99, dict(zip([n for n, e in zip(names, cpu_errors) if e is None], cosine))
    diff = np.abs(jpeg_pixels.numpy().astype(int) - cpu_pixels.astype(int)).mean()
    assert diff < 6, diff  # full decode + antialiased resize vs DCT-scaled decode + Pillow resize


def test_small_chunks_decode_the_same_pixels(decoders):
    _, jpeg = decoders
    data = [photo_jpeg(CORPUS / "real" / n) for n in ("hopper.jpg", "flower.jpg", "rocket.jpg", "chelsea.png")]
    whole, _ = jpeg(data)
    sizes = [jpeg._plain_jpeg(d) for d in data]
    jpeg.memory = max(sizes)  # the largest image alone fills a decode call
    chunks = list(jpeg._chunks(sizes))
    assert len(chunks) >= 3 and all(sum(sizes[i] for i in c) <= jpeg.memory for c in chunks)
    chunked, errors = jpeg(data)
    assert errors == [None] * 4 and torch.equal(whole, chunked)


def test_a_worker_decoding_jpegs_in_batches_fails_only_the_bad_image(client, run_burst, monkeypatch):
    """The claim stage with the JPEG batch decoder (on the CPU here; nvJPEG on a GPU)."""
    import batcher.gpu_decode as gpu_decode
    import batcher.stages.claim as claim

    made = []

    def jpeg_decoder_on_cpu(decoding, prep, budget):
        made.append(JpegBatchDecoder(gpu_decode.ImageDecoder(prep, decoding.max_pixels, budget, 2), "cpu", 1 << 30))
        return made[-1]

    monkeypatch.setattr(claim, "make_decoder", jpeg_decoder_on_cpu)
    good = [upload(client, CORPUS / "real" / n, n).json()["job_id"]
            for n in ("hopper.jpg", "flower.jpg", "astronaut.png", "pil_sample_cmyk.jpg", "hopper_orientation_6.jpg")]
    bad = upload(client, CORPUS / "hostile" / "truncated_jpeg.jpg", "bad").json()["job_id"]
    _, totals = run_burst(worker_batch_size=16, worker_max_wait_ms=500)
    assert made and totals.completed == 5 and totals.failed == 1 and totals.retried == 0
    assert set(job_ids_by_status(client, good).values()) == {"completed"}
    assert client.get(f"/api/v1/queue/status/{bad}").json()["error_message"].startswith("cannot decode image")
