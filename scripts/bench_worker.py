#!/usr/bin/env python3
"""Benchmark the worker against the model alone, in one run, on one machine, model and image set.

Three figures, in images per second:

1. model only: ``encoder.embed_images`` on uint8 batches that are already decoded, resized and
   cropped, at ``--batch-size``: the ceiling no worker can pass on this machine;
2. seed-style worker: the real worker (``WorkerApp``, real Redis, the chosen Qdrant store) with
   a largest batch of 1, draining a pre-filled queue (``run(burst=True)``);
3. micro-batching worker: the same at ``--batch-size``.

Worker figures are end to end: jobs / wall time of ``run(burst=True)``, which claims, reads
the image bytes from Redis, decodes, embeds, upserts into Qdrant and acknowledges every job.
The model is loaded and warmed up once, before any timing, and handed to ``WorkerApp.start``;
each worker configuration first drains a small warm-up queue of its own.

Images are product-sized JPEGs (about 1000 px on the long side, quality 90) derived in memory
from the real photos of tests/data/corpus (the ``index`` rows of manifest.tsv; CLIPQ_CORPUS picks another) and scripts/samples/, by
cropping, flipping and resizing, so that every job has distinct bytes.

A Redis server is started for the run unless REDIS_URL is set; every key lives under a
namespace of its own (``bench-<random>``) and is deleted at the end.

The output shows apart the time ``run()`` takes to return after the last acknowledgement (the
worker wakes its query lane and returns its claimed jobs). Other processes' CPU use during
each measurement is shown too: on a shared machine, figures taken while it is high are noise.

    .venv/bin/python -m scripts.bench_worker --images 128 --batch-size 32
    .venv/bin/python -m scripts.bench_worker --device cuda --batch-size 256 --images 4096 --json out.json
    .venv/bin/python -m scripts.bench_worker --precision fp32,int8 --images 128 --batch-size 32 --repeat 3
    .venv/bin/python -m scripts.bench_worker --device cuda --batch-size 256 --variants "base;pin=off;decode=cuda"

``--variants`` runs the worker with several sets of its options instead (scripts/_options_bench.py;
scripts/gpu_check.sh uses it for every GPU question).
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from scripts import _options_bench, _precision_bench
from scripts.lib.bench_images import cached_images
from scripts.lib.report import machine_info
from scripts.lib.worker_bench import (Services, decode_batch, decode_only, load_note, median_run, model_only,
                                      print_worker, report, worker_run)

log = logging.getLogger("bench")


# -- output ------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    m, r = result["machine"], result["results"]
    hw = f"{m['cpu']}, {m['cores']} cores" + (f", {m['gpu']}" if m["gpu"] else "")
    lines = [
        f"Machine: {hw}; torch {m['torch']} ({m['torch_threads']} threads), {result['model']} "
        f"({result['pretrained']} weights) on {m['device']} {m['precision']}; {m['date']}.",
        f"Images: {result['images']['count']} distinct JPEGs, long side {result['images']['long_side_px'][0]}-"
        f"{result['images']['long_side_px'][1]} px, q90, {result['images']['kb_min']}-"
        f"{result['images']['kb_max']} KB (median {result['images']['kb_median']} KB).",
        f"Command: `{result['command']}`",
        f"Worker: real WorkerApp, Redis {result['redis']}, {r['batched_worker']['decode_threads']} decode threads, "
        f"batch window {r['batched_worker']['max_wait_ms']:.0f} ms, WORKER_POLL_INTERVAL "
        f"{r['batched_worker']['poll_interval_s']:g} s; model loaded and warmed up before timing.",
        "",
        "| measurement | batch | images | store | images/s | other processes' CPU use |",
        "|---|---:|---:|---|---:|---:|",
    ]
    rows = [("model only (`embed_images`, pre-decoded uint8)", r["model_only"], "-"),
            ("model only, batch 1", r["model_only_batch1"], "-"),
            ("seed-style worker (batch <= 1), end to end", r["seed_worker"], None),
            ("micro-batching worker, end to end", r["batched_worker"], None)]
    for name, x, store in rows:
        if x is None:
            continue
        load = x.get("foreign_load")
        lines.append(f"| {name} | {x['batch_size']} | {x['images']} | {store or x['store']} | "
                     f"{x['images_per_s']:.1f} | {'-' if load is None else f'{100 * load:.0f}%'} |")
    d = r.get("decode_only")
    if d:
        lines.append(f"| decode only ({d['threads']} threads, no model) | - | {d['images']} | - | "
                     f"{d['images_per_s']:.1f} | - |")
    ra = result["ratios"]
    lines += ["",
              ("micro-batching / seed-style: " + (f"**{ra['batched_over_seed']:.2f}x**; " if ra["batched_over_seed"]
                                                   else "not measured; ")) +
              f"micro-batching / model-only ceiling: **{100 * ra['batched_over_model']:.0f}%**"
              + (f" (medians of {result['repeat']} runs)" if result["repeat"] > 1 else "")]
    b = r["batched_worker"]
    lines.append(f"(worker wall times include the return from `run()` after the last acknowledgement: "
                 f"{b['shutdown_s']:.2f}s of the micro-batching run's {b['wall_s']:.2f}s; up to the last "
                 f"acknowledgement it reached {100 * ra['batched_over_model_to_last_ack']:.0f}% of the ceiling)")
    if 0 < result["seed_images"] < result["images"]["count"]:
        lines.append(f"(the seed-style run drains {result['seed_images']} jobs, not "
                     f"{result['images']['count']}: it is slow; its rate is still jobs / wall time)")
    return "\n".join(lines)


def _command(argv: list[str] | None) -> str:
    command = "python -m scripts.bench_worker" + ("" if argv is None and len(sys.argv) <= 1 else
                                                  " " + shlex.join(sys.argv[1:] if argv is None else argv))
    return ("REDIS_URL=... " + command) if os.environ.get("REDIS_URL") else command


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--pretrained", default="none", help="weight tag or checkpoint; `none`: seeded random weights")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--images", type=int, default=256, help="jobs of the micro-batching run and the model-only run")
    p.add_argument("--seed-images", type=int, help="jobs of the seed-style run (default: min(images, 64))")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:n]")
    p.add_argument("--store", default="memory", help="memory, embedded (a temp folder) or a Qdrant URL")
    p.add_argument("--decode-threads", type=int, help="worker decode threads (default: the worker's)")
    p.add_argument("--max-wait-ms", type=float, default=50, help="worker batch window")
    p.add_argument("--poll-interval", type=float,
                   help="WORKER_POLL_INTERVAL (default: the worker's, 1 s)")
    p.add_argument("--repeat", type=int, default=1, help="repeat every measurement, report medians")
    p.add_argument("--skip-seed", action="store_true", help="skip the seed-style worker run")
    p.add_argument("--precision", help="compare CLIP_PRECISION values side by side instead, e.g. fp32,int8: "
                   "model only and the worker end to end, alternating (see scripts/_precision_bench.py)")
    p.add_argument("--variants", help="run the worker in several option sets instead, ';'-separated, each "
                   "'key=value,...' of batch, pin (on|off), compile (off|compile|cudagraphs), decode (cpu|cuda), "
                   "threads, images; '' or 'base' for the defaults (see scripts/_options_bench.py)")
    p.add_argument("--image-cache", help="keep the generated JPEGs in this file and reuse them")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--log-level", default="WARNING")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    seed_n = min(a.images, a.seed_images or 64)

    from models.clip import load_encoder

    print(f"==> building {a.images} product JPEGs from real photos", flush=True)
    images, img_info = cached_images(max(a.images, seed_n), a.image_cache)
    print(f"    {img_info['distinct']} distinct, {img_info['kb_min']}-{img_info['kb_max']} KB "
          f"(median {img_info['kb_median']} KB), from {', '.join(img_info['sources'])}", flush=True)
    if a.variants is not None:
        _options_bench.run(a, images, img_info, _command(argv))
        return 0
    if a.precision:
        _precision_bench.run(a, images, img_info, _command(argv))
        return 0
    print(f"==> loading {a.model} ({a.pretrained}) on {a.device}", flush=True)
    encoder = load_encoder(a.model, a.pretrained, a.device, seed=0)
    machine = machine_info(encoder)
    threads = a.decode_threads or min(8, os.cpu_count() or 1)
    pixels = decode_batch(encoder, images[:a.batch_size], threads)
    encoder.warm_up(a.batch_size)
    encoder.embed_images(pixels[:1])

    services = Services(a.store)
    runs: dict[str, list[dict]] = {"model_only": [], "model_only_batch1": [], "decode_only": [],
                                   "seed_worker": [], "batched_worker": []}
    try:
        for rep in range(a.repeat):  # each figure beside the one it is compared with
            tag = f" (run {rep + 1}/{a.repeat})" if a.repeat > 1 else ""
            print(f"==> model only, batch {a.batch_size}, {a.images} images{tag}", flush=True)
            runs["model_only"].append(model_only(encoder, pixels, a.batch_size, a.images))
            print(f"    {runs['model_only'][-1]['images_per_s']:.1f} images/s{load_note(runs['model_only'][-1])}",
                  flush=True)
            print(f"==> micro-batching worker, batch {a.batch_size}, {a.images} jobs, "
                  f"{services.describe_store()}{tag}", flush=True)
            runs["batched_worker"].append(worker_run(services, encoder, a, images[:a.images], a.batch_size,
                                                     f"batch{rep}", warmup=min(a.images, a.batch_size)))
            print_worker(runs["batched_worker"][-1])
            if not a.skip_seed:
                print(f"==> seed-style worker, batch 1, {seed_n} jobs, {services.describe_store()}{tag}",
                      flush=True)
                runs["seed_worker"].append(worker_run(services, encoder, a, images[:seed_n], 1,
                                                      f"seed{rep}", warmup=4))
                print_worker(runs["seed_worker"][-1])
                print(f"==> model only, batch 1, {seed_n} images{tag}", flush=True)
                runs["model_only_batch1"].append(model_only(encoder, pixels, 1, seed_n))
                print(f"    {runs['model_only_batch1'][-1]['images_per_s']:.1f} images/s"
                      f"{load_note(runs['model_only_batch1'][-1])}", flush=True)
            runs["decode_only"].append(decode_only(encoder, images[:a.images], threads))
            print(f"==> decode only, {threads} threads: {runs['decode_only'][-1]['images_per_s']:.1f} images/s",
                  flush=True)
    finally:
        services.close()

    redis_kind = "from REDIS_URL" if os.environ.get("REDIS_URL") else "started by this script"
    results = {k: (median_run(v) if v else None) for k, v in runs.items()}
    model, batched, seed = results["model_only"], results["batched_worker"], results["seed_worker"]
    ratios = {"batched_over_model": batched["images_per_s"] / model["images_per_s"],
              "batched_over_seed": batched["images_per_s"] / seed["images_per_s"] if seed else None,
              "batched_over_model_per_run": [round(b["images_per_s"] / m["images_per_s"], 3) for b, m in
                                             zip(runs["batched_worker"], runs["model_only"])],
              "batched_over_model_to_last_ack": (batched["images"] / batched["last_ack_s"]) / model["images_per_s"]}
    command = _command(argv)
    result = {"model": a.model, "pretrained": a.pretrained, "machine": machine, "images": img_info,
              "seed_images": seed_n if not a.skip_seed else 0, "repeat": a.repeat,
              "command": command, "results": results, "ratios": ratios, "redis": redis_kind,
              "targets": {"batched_over_seed_min": 1.3, "batched_over_model_min": 0.85,
                          "met": (ratios["batched_over_seed"] or 0) >= 1.3 and ratios["batched_over_model"] >= 0.85}}
    report(markdown(result), result, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
