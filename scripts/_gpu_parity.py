#!/usr/bin/env python3
"""``gpu_check.sh`` step 1: the device's path (fp16 on CUDA) gives the CPU fp32 path's vectors.

Same seeded random weights on both; every image (the corpus ``index`` rows and product JPEGs)
and every text at cosine >= 0.99, a device batch the same as single images, unit vectors.

    python -m scripts._gpu_parity DEVICE MODEL OUT.json      (exit 0: parity holds, 1: it does not)
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch

from batcher.decode import decode
from models.clip import load_encoder
from scripts.lib.bench_images import make_images
from scripts.lib.photos import corpus_files
from scripts.lib.report import write_json

TEXTS = ["a red coffee cup on a wooden table", "a rocket on the launch pad at dusk", "a tabby cat",
         "an astronaut in an orange flight suit", "black leather running shoes, size 42", "",
         "Wireless noise-cancelling headphones with 30 h battery life", "vintage wall clock", "日本語の商品説明"]


def images(prep) -> tuple[list[str], np.ndarray]:
    files = corpus_files("index")
    products, _ = make_images(32, seed=7)
    names = [p.name for p in files] + [f"product-{i}.jpg" for i in range(len(products))]
    data = [p.read_bytes() for p in files] + products
    return names, np.stack([decode(d, prep, 40_000_000) for d in data])


def main(device: str, model: str, out: str) -> int:
    t0 = time.perf_counter()
    cpu = load_encoder(model, "none", "cpu", seed=0)
    dev = load_encoder(model, "none", device, seed=0)
    names, pixels = images(cpu.preprocessing)
    a, b = cpu.embed_images(pixels), dev.embed_images(pixels)
    image_cos = (a * b).sum(axis=1)
    single = np.concatenate([dev.embed_images(pixels[i:i + 1]) for i in range(len(pixels))])
    batch_cos = (single * b).sum(axis=1)
    text_cos = (cpu.embed_texts(TEXTS) * dev.embed_texts(TEXTS)).sum(axis=1)
    w_cpu = cpu.model.visual.conv1.weight.detach()
    w_dev = dev.model.visual.conv1.weight.detach().float().cpu()
    checks = {
        "same_weights": bool(torch.allclose(w_cpu, w_dev, atol=1e-3)),
        "images_cosine_ge_0.99": bool(image_cos.min() >= 0.99),
        "batch_vs_single_cosine_ge_0.99": bool(batch_cos.min() >= 0.99),
        "texts_cosine_ge_0.99": bool(text_cos.min() >= 0.99),
        "finite_unit_vectors": bool(np.isfinite(b).all() and np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-2)),
    }
    worst = int(image_cos.argmin())
    result = {
        "ok": all(checks.values()), "checks": checks, "model": model, "device": str(dev.device),
        "precision": dev.precision, "gpu": torch.cuda.get_device_name(dev.device) if dev.device.type == "cuda" else None,
        "images": len(pixels), "image_cosine_min": float(image_cos.min()), "image_cosine_mean": float(image_cos.mean()),
        "image_cosine_worst": names[worst], "batch_vs_single_cosine_min": float(batch_cos.min()),
        "texts": len(TEXTS), "text_cosine_min": float(text_cos.min()), "seconds": round(time.perf_counter() - t0, 1),
        "per_image": {n: round(float(c), 5) for n, c in zip(names, image_cos)},
    }
    write_json(out, result)
    for k, v in checks.items():
        print(f"    {'ok  ' if v else 'FAIL'} {k}")
    print(f"    {dev.precision} on {dev.device}: images min cosine {image_cos.min():.5f} ({names[worst]}), mean "
          f"{image_cos.mean():.5f}; batch vs single: min {batch_cos.min():.5f}; texts: min {text_cos.min():.5f}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
