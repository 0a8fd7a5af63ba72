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
from the real photos of tests/data/corpus (the ``index`` rows of manifest.tsv; CLIPQ_CORPUS picks another) and samples/, by
cropping, flipping and resizing, so that every job has distinct bytes.

A Redis server is started for the run unless REDIS_URL is set; every key lives under a
namespace of its own (``bench-<random>``) and is deleted at the end.

The output shows apart the time ``run()`` takes to return after the last acknowledgement (the
worker wakes its query lane and returns its claimed jobs). Other processes' CPU use during
each measurement is shown too: on a shared machine, figures taken while it is high are noise.

    .venv/bin/python scripts/bench_worker.py --images 128 --batch-size 32
    .venv/bin/python scripts/bench_worker.py --device cuda --batch-size 256 --images 4096 --json out.json
    .venv/bin/python scripts/bench_worker.py --precision fp32,int8 --images 128 --batch-size 32 --repeat 3
    .venv/bin/python scripts/bench_worker.py --device cuda --batch-size 256 --variants "base;pin=off;decode=cuda"

``--variants`` runs the worker with several sets of its options instead (scripts/_options_bench.py;
scripts/gpu_check.sh uses it for every GPU question).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import os
import platform
import random
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("CLIPQ_CORPUS", ROOT / "tests" / "data" / "corpus"))
SAMPLES = ROOT / "samples"
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

log = logging.getLogger("bench")


# -- images ------------------------------------------------------------------------------
def source_photos(min_side: int = 224) -> list[tuple[str, Image.Image]]:
    """The real photos to derive product images from: opaque, at least ``min_side`` px."""
    paths: list[Path] = []
    manifest = CORPUS / "manifest.tsv"
    if manifest.is_file():
        with open(manifest) as f:
            paths += [CORPUS / r["file"] for r in csv.DictReader(f, delimiter="\t") if r["expect"] == "index"]
    if SAMPLES.is_dir():
        paths += sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    photos = []
    for p in paths:
        try:
            im = Image.open(p)
            im.load()
            im = ImageOps.exif_transpose(im)
        except Exception:
            continue
        if im.mode in ("RGBA", "LA", "PA", "P") or "transparency" in im.info or min(im.size) < min_side:
            continue  # logos, icons and thumbnails are not product photos
        if im.mode.startswith("I") or im.mode == "F":
            continue
        im = im.convert("RGB")
        if len(product_jpeg(im, random.Random(0))) < 60_000:
            continue  # blurred or flat: compresses far below a product photo's 100-200 KB
        photos.append((p.name, im))
    if not photos:
        sys.exit(f"no photos of at least {min_side} px found in {CORPUS} or {SAMPLES}")
    return photos


def product_jpeg(photo: Image.Image, rng: random.Random, long_side: int = 1000, quality: int = 90) -> bytes:
    """A distinct product-sized JPEG from ``photo``: random crop (75-100% a side), flip, resize."""
    w, h = photo.size
    cw, ch = round(w * rng.uniform(0.75, 1.0)), round(h * rng.uniform(0.75, 1.0))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    im = photo.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    target = round(long_side * rng.uniform(0.96, 1.04))
    scale = target / max(cw, ch)
    im = im.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    return out.getvalue()


def make_images(n: int, seed: int = 0) -> tuple[list[bytes], dict]:
    photos = source_photos()

    def one(i: int) -> bytes:  # its own generator: the same bytes whatever the thread order
        return product_jpeg(photos[i % len(photos)][1], random.Random(seed * 1_000_003 + i))

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # Pillow releases the GIL here
        images = list(pool.map(one, range(n)))
    sizes = sorted(len(b) for b in images)
    dims = [Image.open(io.BytesIO(b)).size for b in images[: min(n, 32)]]
    info = {"count": n, "sources": [name for name, _ in photos], "format": "JPEG q90",
            "long_side_px": [min(max(d) for d in dims), max(max(d) for d in dims)],
            "kb_min": round(sizes[0] / 1024), "kb_median": round(sizes[len(sizes) // 2] / 1024),
            "kb_max": round(sizes[-1] / 1024), "distinct": len({hashlib.sha256(b).digest() for b in images})}
    return images, info


def cached_images(n: int, path: str | None) -> tuple[list[bytes], dict]:
    """``make_images(n)``, kept in ``path`` when given (a pickle of this script's own making)."""
    import pickle

    if path and Path(path).is_file():
        images, info = pickle.loads(Path(path).read_bytes())
        if len(images) >= n:
            return images[:n], info | {"count": n}
    images, info = make_images(n)
    if path:
        Path(path).write_bytes(pickle.dumps((images, info)))
    return images, info


# -- machine -----------------------------------------------------------------------------
def machine_info(encoder) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    gpu = torch.cuda.get_device_name(encoder.device) if encoder.device.type == "cuda" else None
    return {"cpu": cpu, "cores": cores, "gpu": gpu, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": str(encoder.device), "dtype": str(encoder.dtype).removeprefix("torch.")}


class ForeignLoad:
    """How busy other processes kept the machine during a measurement (0: it had the machine alone).

    Busy CPU time of the whole machine (/proc/stat) minus this process's and our Redis server's,
    divided by the cores and the wall time. Only on Linux; None elsewhere.
    """

    def __init__(self, pids: list[int] | None = None) -> None:
        self.pids = pids or []
        self.value: float | None = None

    @staticmethod
    def _machine_busy() -> float | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def _ours(self) -> float:
        total = time.process_time()
        for pid in self.pids:
            try:
                parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, ValueError, IndexError):
                pass
        return total

    def __enter__(self):
        self._busy, self._own, self._t = self._machine_busy(), self._ours(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy = self._machine_busy()
        if busy is not None and self._busy is not None:
            wall = time.perf_counter() - self._t
            cores = os.cpu_count() or 1
            self.value = max(0.0, (busy - self._busy) - (self._ours() - self._own)) / (cores * max(wall, 1e-9))
        return False


# -- Redis and the store -----------------------------------------------------------------
class Services:
    """The Redis server (ours unless REDIS_URL is set) and the Qdrant store choice."""

    def __init__(self, store: str) -> None:
        self.store = store
        self.tmp = Path(tempfile.mkdtemp(prefix="clipq-bench-"))
        self.redis_server = None
        self.namespaces: list[str] = []
        self.collections: list[str] = []
        if os.environ.get("REDIS_URL"):
            self.redis_url = os.environ["REDIS_URL"]
        else:
            from local_redis import LocalRedis

            self.redis_server = LocalRedis(self.tmp / "redis", aof=False).start()
            self.redis_url = self.redis_server.url
        import redis

        self.client = redis.Redis.from_url(self.redis_url)
        self.pids = [self.redis_server.proc.pid] if self.redis_server else []

    def describe_store(self) -> str:
        if self.store == "memory":
            return "qdrant in-memory (:memory:)"
        if self.store == "embedded":
            return "qdrant embedded (temp folder)"
        return f"qdrant server {self.store}"

    def store_settings(self, name: str) -> dict:
        collection = f"bench_{name}"
        self.collections.append(collection)
        if self.store == "memory":
            return {"qdrant_path": ":memory:", "qdrant_collection": collection}
        if self.store == "embedded":
            return {"qdrant_path": str(self.tmp / "qdrant" / name), "qdrant_collection": collection}
        return {"qdrant_url": self.store, "qdrant_collection": collection}

    def new_namespace(self) -> str:
        ns = "bench-" + uuid.uuid4().hex[:10]
        self.namespaces.append(ns)
        return ns

    def close(self) -> None:
        for ns in self.namespaces:
            try:
                keys = list(self.client.scan_iter(match="{" + ns + "}:*", count=1000))
                for i in range(0, len(keys), 500):
                    self.client.delete(*keys[i:i + 500])
            except Exception as exc:
                log.warning("could not delete the keys of %s: %s", ns, exc)
        if self.store not in ("memory", "embedded"):
            try:
                from qdrant_client import QdrantClient

                q = QdrantClient(url=self.store, timeout=10)
                for c in self.collections:
                    if q.collection_exists(c):
                        q.delete_collection(c)
            except Exception as exc:
                log.warning("could not delete the bench collections: %s", exc)
        self.client.close()
        if self.redis_server:
            self.redis_server.stop()
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)


def fill_queue(client, namespace: str, images: list[bytes], tag: str) -> None:
    """Enqueue one job per image exactly as the API does (the enqueue Lua script)."""
    from batcher.queue import calls
    from batcher.queue.jobs import JobSpec, new_job_id
    from batcher.queue.keys import Keys
    from batcher.queue.scripts import Scripts

    k, scripts = Keys(namespace), Scripts(client)
    pipe = client.pipeline(transaction=False)
    for i, data in enumerate(images):
        spec = JobSpec(product_id=f"{tag}-{i:06d}", name=f"Bench product {i}",
                       description="benchmark image", metadata={"bench": tag, "i": i},
                       image_sha256=hashlib.sha256(data).hexdigest(), content_type="image/jpeg")
        scripts.run(calls.enqueue(k, new_job_id(), spec, data, max_depth=10**9), client=pipe)
        if len(pipe) >= 64:
            pipe.execute()
    pipe.execute()
    depth = client.llen(k.queue)
    if depth != len(images):
        raise RuntimeError(f"queue {namespace} holds {depth} jobs, expected {len(images)}")


# -- the measurements --------------------------------------------------------------------
def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def decode_batch(encoder, images: list[bytes], threads: int) -> np.ndarray:
    from batcher.decode import decode

    prep = encoder.preprocessing
    with ThreadPoolExecutor(threads) as pool:
        return np.stack(list(pool.map(lambda b: decode(b, prep, 40_000_000), images)))


def model_only(encoder, pixels: np.ndarray, batch_size: int, n_images: int) -> dict:
    """Forward passes on ready uint8 batches: images/s over ``n_images`` (whole batches)."""
    batch = pixels[:batch_size]
    if len(batch) < batch_size:
        batch = np.concatenate([batch] * (batch_size // len(batch) + 1))[:batch_size]
    encoder.embed_images(batch)  # warm-up at this exact shape
    passes = max(1, -(-n_images // batch_size))
    with ForeignLoad() as load:
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(passes):
            encoder.embed_images(batch)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"batch_size": batch_size, "images": passes * batch_size, "wall_s": round(wall, 3),
            "images_per_s": passes * batch_size / wall, "cpu_s_per_image": round(cpu / (passes * batch_size), 4),
            "foreign_load": _round(load.value)}


def decode_only(encoder, images: list[bytes], threads: int) -> dict:
    t0 = time.perf_counter()
    decode_batch(encoder, images, threads)
    wall = time.perf_counter() - t0
    return {"threads": threads, "images": len(images), "wall_s": round(wall, 3),
            "images_per_s": len(images) / wall}


class _AckClock:
    """Notes when the worker acknowledged its first and last batch (to split the wall time)."""

    def __enter__(self):
        from batcher.queue.consumer import JobConsumer

        self.first = self.last = None
        self._cls, self._orig = JobConsumer, JobConsumer.ack
        clock = self

        def ack(consumer, outcomes):
            result = clock._orig(consumer, outcomes)
            clock.last = time.perf_counter()
            clock.first = clock.first or clock.last
            return result

        JobConsumer.ack = ack
        return self

    def __exit__(self, *exc):
        self._cls.ack = self._orig
        return False


def worker_run(services: Services, encoder, args, images: list[bytes], batch_size: int, label: str,
               warmup: int, extra: dict | None = None) -> dict:
    """Drain a pre-filled queue with the real worker; images/s = jobs / wall time of run(burst=True).
    ``extra``: more worker settings (e.g. ``worker_decode_device``)."""
    from prometheus_client import CollectorRegistry

    from batcher.app import WorkerApp
    from batcher.settings import WorkerSettings

    def settings(ns: str, name: str) -> WorkerSettings:
        kw = dict(redis_url=services.redis_url, queue_namespace=ns, worker_batch_size=batch_size,
                  worker_max_wait_ms=args.max_wait_ms, worker_metrics_port=0,
                  worker_id=f"bench-{name}", clip_model=args.model, clip_pretrained=args.pretrained,
                  clip_device=str(encoder.device), clip_precision=encoder.precision,
                  **services.store_settings(name))
        if args.decode_threads:
            kw["worker_decode_threads"] = args.decode_threads
        if args.poll_interval:
            kw["worker_poll_interval"] = args.poll_interval
        return WorkerSettings(**kw | (extra or {}))

    if warmup:
        ns = services.new_namespace()
        fill_queue(services.client, ns, images[:warmup], f"warm-{label}")
        app = WorkerApp.start(settings(ns, ns), registry=CollectorRegistry(), encoder=encoder)
        app.run(burst=True)
    ns = services.new_namespace()
    fill_queue(services.client, ns, images, label)
    s = settings(ns, ns)
    app = WorkerApp.start(s, registry=CollectorRegistry(), encoder=encoder)
    acks = _AckClock()
    with ForeignLoad(services.pids) as load:
        c0, t0 = time.process_time(), time.perf_counter()
        with acks:
            totals = app.run(burst=True)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if totals.completed != len(images):
        raise RuntimeError(f"{label}: {totals.completed} of {len(images)} jobs completed "
                           f"({totals.failed} failed, {totals.retried} retried)")
    first, last = (acks.first or t0) - t0, (acks.last or t0) - t0
    busy = app.metrics.registry.get_sample_value("clipq_infer_busy_seconds_total") or 0.0
    return {"infer_busy_s": round(busy, 3), "infer_busy_ratio": round(busy / wall, 3), "batch_size": batch_size, "images": len(images), "batches": totals.batches,
            "wall_s": round(wall, 3), "images_per_s": len(images) / wall,
            "first_ack_s": round(first, 3), "last_ack_s": round(last, 3),
            "shutdown_s": round(wall - last, 3), "cpu_s_per_image": round(cpu / len(images), 4),
            "foreign_load": _round(load.value),
            "decode_threads": s.worker_decode_threads, "max_wait_ms": s.worker_max_wait_ms,
            "poll_interval_s": s.worker_poll_interval,
            "store": services.describe_store()}


# -- output ------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    m, r = result["machine"], result["results"]
    hw = f"{m['cpu']}, {m['cores']} cores" + (f", {m['gpu']}" if m["gpu"] else "")
    lines = [
        f"Machine: {hw}; torch {m['torch']} ({m['torch_threads']} threads), {result['model']} "
        f"({result['pretrained']} weights) on {m['device']} {m['dtype']}; {m['date']}.",
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


def print_worker(x: dict) -> None:
    print(f"    {x['images_per_s']:.1f} images/s: {x['images']} jobs in {x['wall_s']:.2f}s "
          f"({x['batches']} batches; first ack at {x['first_ack_s']:.2f}s, last at {x['last_ack_s']:.2f}s, "
          f"then {x['shutdown_s']:.2f}s to return){_load_note(x)}", flush=True)


def _load_note(x: dict) -> str:
    load = x.get("foreign_load")
    return "" if load is None else f"; other processes used {100 * load:.0f}% of the CPUs meanwhile"


def median_run(runs: list[dict]) -> dict:
    rates = sorted(x["images_per_s"] for x in runs)
    mid = statistics.median(rates)
    best = min(runs, key=lambda x: abs(x["images_per_s"] - mid))
    return best | {"images_per_s": mid, "all_images_per_s": [round(x["images_per_s"], 2) for x in runs],
                   "all_foreign_load": [x.get("foreign_load") for x in runs]}


def report(text: str, result: dict, json_path: str | None) -> None:
    """Print the markdown summary; write the full result as JSON when asked."""
    print()
    print(text)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2, default=str))
        print(f"\nwrote {json_path}")


def _command(argv: list[str] | None) -> str:
    command = "python scripts/bench_worker.py" + ("" if argv is None and len(sys.argv) <= 1 else
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
        import _options_bench

        _options_bench.run(a, images, img_info, _command(argv))
        return 0
    if a.precision:
        import _precision_bench

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
            print(f"    {runs['model_only'][-1]['images_per_s']:.1f} images/s{_load_note(runs['model_only'][-1])}",
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
                      f"{_load_note(runs['model_only_batch1'][-1])}", flush=True)
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
