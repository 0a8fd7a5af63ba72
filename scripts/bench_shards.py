#!/usr/bin/env python3
"""The queue alone, no model: one shard on one Redis against QUEUE_SHARDS=6 on a local Redis
Cluster of 3 masters (no replicas), side by side in one run (issue 25, item 8).

    .venv/bin/python -m scripts.bench_shards --images 3000 --json bench_shards.json

Each setup moves ``--images`` images of ``--image-kb`` KB (random bytes: the queue never
decodes them) through the queue in rounds of ``--round`` images (so that Redis holds one round
at a time), each round in two timed phases:

- in: ``--enqueuers`` threads run the API's enqueue script (``batcher.queue.calls.enqueue``),
  each image to the shard of its product and under a job id that names it, as
  ``api.queue.JobQueue.enqueue`` does;
- out: ``--consumers`` threads, each a worker's consumer (``batcher.queue.shards.make_consumer``),
  claim as the worker does (a blocking take, then up to ``--batch`` - 1 more), fetch the records
  and images, mark them started and acknowledge them ``completed``.

Figures per setup: images/s in and out (wall time: on a small machine the Python client is the
bottleneck, so these say little about the servers), and the server CPU per image of each
master: ``used_cpu_sys + used_cpu_user`` of ``INFO cpu`` before and after each phase, divided by
the images. One server core per shard group is what bounds the queue, so the ratio that matters
is the busiest master's CPU per image, one shard against the cluster.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import redis

from batcher.queue import calls
from batcher.queue.calls import Outcome
from batcher.queue.config import QueueConfig
from batcher.queue.connect import sync_client
from batcher.queue.jobs import JobSpec, new_job_id
from batcher.queue.keys import product_shard, shard_keys
from batcher.queue.scripts import Scripts
from batcher.queue.shards import make_consumer
from scripts.lib.redis_cluster import LocalCluster
from scripts.lib.redis_server import LocalRedis, server_binary
from scripts.lib.report import machine_info, write_json

NAMESPACE = "bench-shards"


def server_cpu_s(ports: list[int]) -> dict[int, float]:
    """used_cpu_sys + used_cpu_user of each server, in seconds."""
    out = {}
    for port in ports:
        with redis.Redis(port=port, socket_timeout=5) as r:
            info = r.info("cpu")
        out[port] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return out


class Setup:
    """One queue to measure: its servers (the masters whose CPU is read) and its shard count."""

    def __init__(self, name: str, url: str, cluster: bool, shards: int, ports: list[int]) -> None:
        self.name, self.url, self.cluster, self.shards, self.ports = name, url, cluster, shards, ports
        self.config = QueueConfig(NAMESPACE, max_attempts=3, job_ttl=3600, failed_job_ttl=3600,
                                  failed_image_ttl=0, shards=shards)
        self.keys = shard_keys(NAMESPACE, shards)

    def client(self):
        return sync_client(self.url, self.cluster, socket_timeout=30)


@contextmanager
def single_redis(workdir: Path):
    server = LocalRedis(workdir / "single", aof=False).start()
    try:
        yield Setup("1 shard, 1 Redis", server.url, False, 1, [server.port])
    finally:
        server.stop()


@contextmanager
def local_cluster(workdir: Path, masters: int, shards: int):
    cluster = LocalCluster(workdir / "cluster", masters=masters, replicas=0).start()
    try:
        yield Setup(f"{shards} shards, {masters} masters", cluster.url, True, shards, cluster.masters_now())
    finally:
        cluster.stop(kill=True)


def run_threads(count: int, target) -> list:
    """``target(i)`` in ``count`` threads at once; their results, or the first error raised."""
    results: list = [None] * count

    def run(i: int) -> None:
        try:
            results[i] = target(i)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def enqueue_phase(setup: Setup, clients: list, products: list[str], image: bytes) -> int:
    """Enqueue one image per product, split over one thread per client; the jobs enqueued."""
    spec = dict(name="bench", description="", metadata={}, image_sha256="0" * 64, content_type="image/jpeg")
    depth = 10 * len(products) + 1000

    def enqueue(i: int) -> int:
        scripts, done = Scripts(clients[i]), 0
        for product in products[i::len(clients)]:
            shard = product_shard(product, setup.shards)
            job_id = new_job_id(shard if setup.shards > 1 else None)
            ok, *_ = scripts.run(calls.enqueue(setup.keys[shard], job_id, JobSpec(product, **spec), image, depth))
            if ok != 1:
                raise RuntimeError(f"enqueue refused: {ok} {_}")
            done += 1
        return done

    return sum(run_threads(len(clients), enqueue))


def consume_phase(setup: Setup, clients: list, total: int, batch: int, round_no: int, consumers: list) -> int:
    """Claim, fetch, mark started and ack ``total`` jobs with one consumer per client (each
    appended to ``consumers``, to be released once the phase is timed: a sharded consumer's
    standing BLMOVEs outlive its last claim)."""
    lock, acked = threading.Lock(), [0]

    def consume(i: int) -> int:
        consumer = make_consumer(clients[i], setup.config, f"bench-{round_no}-{i}")
        with lock:
            consumers.append(consumer)
        mine = 0
        while True:
            with lock:
                if acked[0] >= total:
                    return mine
            ids = consumer.take_blocking(0.05)
            if not ids:
                continue
            ids = ids + consumer.take_now(batch - len(ids))
            jobs = consumer.fetch(ids)
            consumer.mark_started([j.job_id for j in jobs])
            result = consumer.ack([Outcome(j.job_id, "completed") for j in jobs])
            if bad := [r for r in result.results if r != "completed"]:
                raise RuntimeError(f"ack recorded {bad[:3]}")
            mine += len(jobs)
            with lock:
                acked[0] += len(jobs)

    return sum(run_threads(len(clients), consume))


def measure(setup: Setup, a: argparse.Namespace, image: bytes) -> dict:
    clients = [setup.client() for _ in range(max(a.enqueuers, a.consumers))]
    before = server_cpu_s(setup.ports)
    time.sleep(a.idle_s)  # what each server burns doing nothing (cluster cron, bus): part of every phase
    idle = {str(p): round((s - before[p]) / a.idle_s * 1e3, 2) for p, s in server_cpu_s(setup.ports).items()}
    wall = {"in": 0.0, "out": 0.0}
    cpu = {phase: {p: 0.0 for p in setup.ports} for phase in wall}
    moved = {"in": 0, "out": 0}
    try:
        for r, start in enumerate(range(0, a.images, a.round)):
            products = [f"p{i:07d}" for i in range(start, min(start + a.round, a.images))]
            for phase in ("in", "out"):
                before, t0 = server_cpu_s(setup.ports), time.perf_counter()
                if phase == "in":
                    moved[phase] += enqueue_phase(setup, clients[:a.enqueuers], products, image)
                else:
                    consumers: list = []
                    moved[phase] += consume_phase(setup, clients[:a.consumers], len(products), a.batch, r, consumers)
                wall[phase] += time.perf_counter() - t0
                for port, after in server_cpu_s(setup.ports).items():
                    cpu[phase][port] += after - before[port]
                if phase == "out" and (stray := sum(c.release() for c in consumers)):
                    raise RuntimeError(f"{stray} jobs were left in the consumers' lists")
        left = sum(clients[0].llen(k.queue) for k in setup.keys)
    finally:
        for c in clients:
            c.close()
    out = {"setup": setup.name, "masters": len(setup.ports), "shards": setup.shards,
           "images_in": moved["in"], "images_out": moved["out"], "left_in_queue": left,
           "idle_server_cpu_ms_per_s": idle}
    for phase in wall:
        per_master = {str(p): round(s / moved[phase] * 1e6, 1) for p, s in cpu[phase].items()}
        out |= {f"wall_s_{phase}": round(wall[phase], 3),
                f"images_per_s_{phase}": round(moved[phase] / wall[phase], 1),
                f"server_cpu_us_per_image_{phase}": per_master,
                f"busiest_master_cpu_us_per_image_{phase}": max(per_master.values()),
                f"all_masters_cpu_us_per_image_{phase}": round(sum(per_master.values()), 1)}
    return out


def ratios(one: dict, many: dict) -> dict:
    """Cluster over one shard: wall rates, and the capacity the busiest master's CPU allows."""
    out = {}
    for phase in ("in", "out"):
        out[f"images_per_s_{phase}"] = round(many[f"images_per_s_{phase}"] / one[f"images_per_s_{phase}"], 2)
        key = f"busiest_master_cpu_us_per_image_{phase}"
        out[f"server_bound_capacity_{phase}"] = round(one[key] / many[key], 2) if many[key] else None
    return out


def show(results: list[dict], ratio: dict) -> None:
    print(f"{'':<24}" + "".join(f"{r['setup']:>26}" for r in results))
    rows = [("images/s in", "images_per_s_in"), ("images/s out", "images_per_s_out"),
            ("busiest master us/img in", "busiest_master_cpu_us_per_image_in"),
            ("busiest master us/img out", "busiest_master_cpu_us_per_image_out"),
            ("all masters us/img in", "all_masters_cpu_us_per_image_in"),
            ("all masters us/img out", "all_masters_cpu_us_per_image_out")]
    for label, key in rows:
        print(f"{label:<26}" + "".join(f"{r[key]:>24}" for r in results))
    for r in results:
        print(f"{r['setup']}: CPU us per image per master, in {r['server_cpu_us_per_image_in']}, "
              f"out {r['server_cpu_us_per_image_out']}; idle CPU ms/s {r['idle_server_cpu_ms_per_s']}")
    print("cluster / one shard:", ", ".join(f"{k} {v}x" for k, v in ratio.items()))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=3000, help="images through each setup")
    p.add_argument("--image-kb", type=int, default=150, help="size of each image, KB")
    p.add_argument("--round", type=int, default=500, help="images enqueued, then consumed, per round")
    p.add_argument("--enqueuers", type=int, default=4, help="enqueuing threads")
    p.add_argument("--consumers", type=int, default=4, help="consumer threads (one worker id each)")
    p.add_argument("--batch", type=int, default=32, help="jobs a consumer claims at once, at most")
    p.add_argument("--idle-s", type=float, default=2.0, help="seconds the idle CPU of each server is read over")
    p.add_argument("--masters", type=int, default=3, help="masters of the cluster")
    p.add_argument("--shards", type=int, default=6, help="QUEUE_SHARDS on the cluster")
    p.add_argument("--dir", type=Path, help="where the servers keep their files (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="write the results here")
    a = p.parse_args(argv)
    if a.idle_s <= 0:
        p.error("--idle-s must be positive")
    if min(a.images, a.image_kb, a.round, a.enqueuers, a.consumers, a.batch, a.masters, a.shards) < 1:
        p.error("every count must be at least 1")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    image, load = os.urandom(a.image_kb * 1024), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        workdir = a.dir or Path(tmp)
        results = []
        with single_redis(workdir) as setup:
            results.append(measure(setup, a, image))
        with local_cluster(workdir, a.masters, a.shards) as setup:
            results.append(measure(setup, a, image))
    ratio = ratios(*results)
    show(results, ratio)
    report = {"images": a.images, "image_bytes": len(image), "round": a.round, "enqueuers": a.enqueuers,
              "consumers": a.consumers, "batch": a.batch, "machine": machine_info() | {"load_average_at_start": load},
              "server": os.path.basename(server_binary()),
              "setups": results, "cluster_over_one_shard": ratio}
    if a.json:
        write_json(a.json, report)
        print(f"wrote {a.json}")
    return 0 if all(r["images_out"] == a.images and r["left_in_queue"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
