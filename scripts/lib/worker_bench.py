"""The worker benchmarks' measurements: the model alone, the decoder alone, the real worker end
to end from a filled Redis queue (``bench_worker``, ``_options_bench``, ``_precision_bench``,
``bench_peers``), and how busy other processes kept the machine meanwhile.
"""
from __future__ import annotations

import hashlib
import logging
import os
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from scripts.lib.report import write_json

log = logging.getLogger("bench")


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
            from scripts.lib.redis_server import LocalRedis

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


def print_worker(x: dict) -> None:
    print(f"    {x['images_per_s']:.1f} images/s: {x['images']} jobs in {x['wall_s']:.2f}s "
          f"({x['batches']} batches; first ack at {x['first_ack_s']:.2f}s, last at {x['last_ack_s']:.2f}s, "
          f"then {x['shutdown_s']:.2f}s to return){load_note(x)}", flush=True)


def load_note(x: dict) -> str:
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
        write_json(json_path, result)
        print(f"\nwrote {json_path}")
