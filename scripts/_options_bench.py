"""``bench_worker.py --variants``: the real worker in several option sets, one after the other.

A variant is ``key=value,...`` (``base`` or nothing: the defaults):

    batch    WORKER_BATCH_SIZE (default --batch-size)       pin      CLIP_PIN_MEMORY on|off (on)
    compile  CLIP_COMPILE off|compile|cudagraphs (off)       decode   WORKER_DECODE_DEVICE cpu|cuda (cpu)
    threads  WORKER_DECODE_THREADS (the worker's default)    images   jobs of this run (default --images)

For each: the model alone at its batch size (through the variant's encoder: compiled or not,
pinned or not), then the worker end to end from a filled Redis queue with the variant's
settings, with the share of wall time its infer stage was busy (``clipq_infer_busy_seconds_total``
over the run); the decoder alone on the same JPEGs; and the smallest cosine of its vectors to
the first variant's on the first batch (the same pixels, or the variant's own decode of the same
JPEGs). A variant this machine cannot run (cudagraphs or GPU decode without CUDA) is reported
with its reason and skipped. The JSON is rewritten after every variant, so a run cut short by a
timeout keeps what it measured.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from scripts.lib import worker_bench as bench
from scripts.lib.report import machine_info

KEYS = {"batch": int, "pin": str, "compile": str, "decode": str, "threads": int, "images": int}


def parse(spec: str, a) -> list[dict]:
    """``'batch=64;pin=off'`` -> one dict per variant, every key filled in."""
    variants = []
    for part in [p.strip() for p in spec.split(";")] or [""]:
        v = {"name": part or "base", "batch": a.batch_size, "pin": "on", "compile": "off", "decode": "cpu",
             "threads": a.decode_threads, "images": a.images}
        for item in filter(None, [] if part == "base" else part.split(",")):
            key, _, value = item.partition("=")
            if key.strip() not in KEYS:
                raise SystemExit(f"--variants: unknown key {key!r} in {part!r}; known: {', '.join(KEYS)}")
            v[key.strip()] = KEYS[key.strip()](value.strip())
        variants.append(v)
    return variants


class Encoders:
    """One encoder per (pin, compile, batch) option set, loaded and warmed up once."""

    def __init__(self, a) -> None:
        self.a, self.cache = a, {}

    def get(self, v: dict):
        from models.clip import load_encoder

        key = (v["pin"], v["compile"], v["batch"] if v["compile"] != "off" else 0)
        if key not in self.cache:
            encoder = load_encoder(self.a.model, self.a.pretrained, self.a.device, seed=0,
                                   pin_memory=v["pin"] == "on", compile=v["compile"], max_batch=v["batch"])
            t0 = time.perf_counter()
            encoder.warm_up(v["batch"])
            self.cache[key] = (encoder, round(time.perf_counter() - t0, 2))
        return self.cache[key]


class GpuUtilization:
    """Mean of ``nvidia-smi``'s utilization.gpu (the share of time a kernel ran) while in the block,
    sampled every 100 ms: the GPU's own view of how busy the worker kept it. None without it."""

    def __enter__(self):
        import shutil
        import subprocess

        self.value, self.proc = None, None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "100", "-i", "0"], stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            samples = [float(x) for x in self.proc.communicate(timeout=5)[0].split() if x.replace(".", "").isdigit()]
            self.value = round(sum(samples) / len(samples) / 100, 3) if samples else None
        return False


def decoder_for(v: dict, prep):
    from batcher.decode import DecodeBudget
    from batcher.gpu_decode import check_decode_device, make_decoder
    from batcher.settings import WorkerSettings

    check_decode_device(v["decode"])
    kw = {"worker_decode_device": v["decode"]} | ({"worker_decode_threads": v["threads"]} if v["threads"] else {})
    s = WorkerSettings(**kw)
    return make_decoder(s.decode, prep, DecodeBudget(s.worker_decode_memory)), s.worker_decode_threads


def decode_only(decoder, images: list[bytes], batch: int) -> dict:
    import torch

    decoder(images[:batch])  # warm-up (nvJPEG handles, kernels)
    t0 = time.perf_counter()
    for i in range(0, len(images), batch):
        pixels, _ = decoder(images[i:i + batch])
        if isinstance(pixels, torch.Tensor) and pixels.device.type == "cuda":
            torch.cuda.synchronize(pixels.device)
    return {"images": len(images), "images_per_s": round(len(images) / (time.perf_counter() - t0), 1)}


def measure(v: dict, encoders: Encoders, base, services, a, images: list[bytes], pixels: np.ndarray) -> dict:
    encoder, warm_s = encoders.get(v)
    decoder, threads = decoder_for(v, encoder.preprocessing)
    try:
        out = {"warm_up_s": warm_s, "decode_threads": threads}
        n = v["images"]
        batch_px = pixels[:min(v["batch"], len(pixels))]
        decoded, _ = decoder(images[:len(batch_px)])
        ref = base.embed_images(batch_px)
        out["cosine_to_base_min"] = round(float((encoder.embed_images(decoded) * ref).sum(1).min()), 5)
        out["decode_only"] = decode_only(decoder, images[:n], v["batch"])
    finally:
        decoder.close()
    out["model_only"] = bench.model_only(encoder, pixels, v["batch"], n)
    extra = {"worker_decode_device": v["decode"], "clip_pin_memory": v["pin"] == "on", "clip_compile": v["compile"]}
    if v["threads"]:
        extra["worker_decode_threads"] = v["threads"]
    with GpuUtilization() as gpu:
        out["worker"] = bench.worker_run(services, encoder, a, images[:n], v["batch"], f"v{time.monotonic_ns()}",
                                         warmup=min(n, v["batch"]), extra=extra)
    out["worker"]["nvidia_smi_utilization"] = gpu.value
    return out


def run(a, images: list[bytes], img_info: dict, command: str) -> dict:
    from models.clip import load_encoder

    variants = parse(a.variants, a)
    a.images = max([a.images] + [v["images"] for v in variants])
    print(f"==> loading {a.model} ({a.pretrained}) on {a.device}: eager, the reference", flush=True)
    base = load_encoder(a.model, a.pretrained, a.device, seed=0)
    pixels = bench.decode_batch(base, images[:max(v["batch"] for v in variants)], a.decode_threads or 4)
    result = {"model": a.model, "pretrained": a.pretrained, "machine": machine_info(base), "images": img_info,
              "command": command, "variants": []}
    encoders, services = Encoders(a), bench.Services(a.store)
    try:  # an untimed run first, so that the first variant does not pay for the process's own warm-up
        bench.worker_run(services, base, a, images[:2 * a.batch_size], a.batch_size, "warm", warmup=0)
        for v in variants:
            print(f"==> variant {v['name']}: {json.dumps({k: v[k] for k in KEYS})}", flush=True)
            entry = {"name": v["name"], "options": {k: v[k] for k in KEYS}}
            try:
                entry |= measure(v, encoders, base, services, a, images, pixels)
                w = entry["worker"]
                print(f"    worker {w['images_per_s']:.1f} images/s (infer busy {100 * w['infer_busy_ratio']:.0f}% "
                      f"of the wall time), model only {entry['model_only']['images_per_s']:.1f}, decode only "
                      f"{entry['decode_only']['images_per_s']:.1f}, cosine to base {entry['cosine_to_base_min']}",
                      flush=True)
            except Exception as exc:  # one option that cannot run here must not cost the others
                entry["skipped"] = f"{exc.__class__.__name__}: {exc}"
                print(f"    skipped: {entry['skipped']}", flush=True)
            result["variants"].append(entry)
            if a.json:
                Path(a.json).write_text(json.dumps(result, indent=2, default=str))
    finally:
        services.close()
    return result
