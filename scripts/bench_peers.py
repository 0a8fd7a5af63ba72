#!/usr/bin/env python3
"""clipq side by side with LitServe and Ray Serve: same images, model, client, batch and window.

Every system serves the same encoder (``--model``, seeded random weights, as
``load_encoder(model, "none", device)``) and decodes with clipq's own decoder; every system gets
the same multipart uploads of the same product-sized JPEGs from ``--clients`` concurrent
clients (aiohttp, in this process). Each runs in processes of its own, started for its
measurement and stopped after it:

- clipq, as a user runs it: a local Redis, the API (uvicorn) and one worker (``python -m
  batcher``) with Qdrant in memory (``QDRANT_PATH=:memory:``), ``WORKER_BATCH_SIZE`` and
  ``WORKER_MAX_WAIT_MS`` set from ``--batch-size`` and ``--window-ms``; timed from the first
  upload until the worker has completed the last job (including the Qdrant upsert and the Redis
  bookkeeping);
- LitServe (``max_batch_size``, ``batch_timeout``) and Ray Serve (``@serve.batch``,
  ``max_ongoing_requests`` raised above the batch), small servers of ``scripts/peers/``, each as
  its documentation shows: LitServe decodes in ``decode_request``, one request after another in
  its inference worker, Ray Serve in a thread pool as the worker does; timed from the first
  upload until the last vector came back.

The systems take turns (``--rounds`` rounds, clipq, LitServe, Ray Serve in each). Before the
first measurement and after each one, with no server running, this process times the bare
model (``embed_images`` on pre-decoded batches of ``--batch-size``): each figure's share of the
bare model is taken against the mean of the timings just before and just after it.

The peers need the ``peers`` extra (``.venv/bin/pip install -e '.[peers]'``); where it is not
installed they are skipped with that message and clipq is measured alone.

    .venv/bin/python -m scripts.bench_peers                       # the README's figures (CPU)
    .venv/bin/python -m scripts.bench_peers --quick               # a smoke run: 32 images, 1 round
    .venv/bin/python -m scripts.bench_peers --device cuda --batch-size 256 --clients 512 --images 8192

A peer's batch holds at most ``--clients`` requests: give at least twice ``--batch-size``.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

from scripts.lib.bench_images import make_images
from scripts.lib.report import machine_info, write_json
from scripts.lib.worker_bench import decode_batch, model_only
from scripts.peers import measure, systems

ALL = ("clipq", "litserve", "ray")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", default=",".join(ALL), help="comma-separated, of: " + ", ".join(ALL))
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    p.add_argument("--images", type=int, default=480, help="uploads timed per measurement")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--window-ms", type=float, default=50, help="how long a batch waits for more after its first")
    p.add_argument("--rounds", type=int, default=2, help="measurements of each system, taking turns")
    p.add_argument("--model-images", type=int, default=160, help="images of each bare-model timing")
    p.add_argument("--quick", action="store_true", help="smoke run: 32 images, 16 clients, 1 round")
    p.add_argument("--logs", help="folder of the servers' logs (default: a temporary folder)")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    a.systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    unknown = set(a.systems) - set(ALL)
    if unknown:
        p.error(f"unknown systems {sorted(unknown)}; known: {', '.join(ALL)}")
    if a.quick:
        a.images, a.clients, a.rounds, a.model_images = 32, 16, 1, 16
    return a


def available(names: list[str]) -> list[str]:
    runnable = []
    for name in names:
        why = systems.missing(name)
        if why:
            print(f"==> skipping {name}: {why}", flush=True)
        else:
            runnable.append(name)
    return runnable


def run_all(a, names: list[str], encoder, images: list[bytes], warmup: list[bytes]) -> list[dict]:
    import torch

    from batcher.settings import WorkerSettings

    logs = Path(a.logs or tempfile.mkdtemp(prefix="clipq-bench-peers-"))
    logs.mkdir(parents=True, exist_ok=True)
    cfg = systems.Config(a.model, a.device, a.batch_size, a.window_ms, a.clients, torch.get_num_threads(),
                         WorkerSettings.model_fields["worker_decode_threads"].default_factory(), logs)
    print(f"==> servers' logs: {logs}", flush=True)
    if a.clients < a.batch_size and set(names) - {"clipq"}:
        print(f"==> note: {a.clients} clients keep at most {a.clients} requests in a peer's batch of "
              f"{a.batch_size}; use --clients of at least twice --batch-size", flush=True)
    pixels = decode_batch(encoder, images[:a.batch_size], cfg.decode_threads)
    bare = [_bare(encoder, pixels, a)]
    runs = []
    for round_no in range(1, a.rounds + 1):
        for name in names:
            print(f"==> round {round_no}: {name} ...", flush=True)
            run = measure.measure(name, cfg, images, warmup, encoder.dim, round_no)
            bare.append(_bare(encoder, pixels, a))
            around = (bare[-2] + bare[-1]) / 2  # the machine may have changed during the run
            run |= {"model_only_images_per_s": [round(bare[-2], 3), round(bare[-1], 3)],
                    "share": run["images_per_s"] / around}
            print(f"    {name}: {run['images_per_s']:.2f} images/s ({run['images']} in {run['wall_s']:.1f}s), "
                  f"{run['share']:.2f} of the bare model; load {run['load_1min']}, other processes "
                  f"{_pct(run['foreign_load'])} of the CPUs (started in {run['start_s']:.0f}s)", flush=True)
            runs.append(run)
    return runs


def _bare(encoder, pixels, a) -> float:
    rate = model_only(encoder, pixels, a.batch_size, a.model_images)["images_per_s"]
    print(f"    bare model: {rate:.2f} images/s", flush=True)
    return rate


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def summary(runs: list[dict], names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        mine = [r for r in runs if r["system"] == name]
        rows.append({"system": name, "images_per_s": statistics.mean(r["images_per_s"] for r in mine),
                     "share": statistics.mean(r["share"] for r in mine),
                     "runs": [round(r["images_per_s"], 2) for r in mine],
                     "bare": [r["model_only_images_per_s"] for r in mine],
                     "foreign_load": [r["foreign_load"] for r in mine]})
    return rows


def markdown(result: dict, a) -> str:
    m, im = result["machine"], result["images"]
    hw = f"{m['cpu']}, {m['cores']} cores" + (f", {m['gpu']}" if m["gpu"] else "")
    lines = [f"Machine: {hw}; torch {m['torch']} ({m['torch_threads']} threads); {a.model} (seeded random "
             f"weights) on {m['device']} {m['precision']}; {m['date']}; load average (1 min) "
             f"{result['load_1min'][0]:.1f} at the start, {result['load_1min'][1]:.1f} at the end.",
             f"{im['count']} distinct JPEGs ({im['kb_min']}-{im['kb_max']} KB), {a.clients} concurrent clients, "
             f"batch {a.batch_size}, window {a.window_ms:g} ms, {a.rounds} alternating run(s) each; "
             f"clipq with Qdrant in memory (`QDRANT_PATH=:memory:`).",
             f"Command: `{result['command']}`", "",
             "| system | images/s | share of the bare model | runs (images/s) | bare model before, after "
             "| other processes' CPU use |", "|---|---:|---:|---|---|---|"]
    for row in result["summary"]:
        label = systems.LABELS[row["system"]].format(batch=a.batch_size)
        lines.append(f"| {label} | {row['images_per_s']:.1f} | {row['share']:.2f} | "
                     f"{', '.join(f'{x:.1f}' for x in row['runs'])} | "
                     f"{'; '.join(f'{b:.1f}, {e:.1f}' for b, e in row['bare'])} | "
                     f"{', '.join(_pct(x) for x in row['foreign_load'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    names = available(a.systems)
    if not names:
        print("==> nothing to measure", flush=True)
        return 2
    from models.clip import load_encoder

    load_start = os.getloadavg()[0]
    print(f"==> building {a.images} product JPEGs (+{a.batch_size} for warm-up)", flush=True)
    images, info = make_images(a.images + a.batch_size)
    images, warmup = images[:a.images], images[a.images:]
    info["count"] = a.images
    print(f"==> loading {a.model} (seeded random weights) on {a.device} for the bare-model timings", flush=True)
    encoder = load_encoder(a.model, "none", a.device, seed=0)
    encoder.warm_up(a.batch_size)
    runs = run_all(a, names, encoder, images, warmup)
    command = shlex.join(["python", "-m", "scripts.bench_peers", *(sys.argv[1:] if argv is None else argv)])
    result = {"machine": machine_info(encoder), "images": info, "command": command,
              "load_1min": [load_start, os.getloadavg()[0]], "runs": runs, "summary": summary(runs, names)}
    print()
    print(markdown(result, a))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(a.json, result)
        print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
