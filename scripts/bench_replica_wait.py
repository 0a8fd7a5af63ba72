#!/usr/bin/env python3
"""What REDIS_WAIT_REPLICAS=1 costs an upload: the API's enqueue (``JobQueue.enqueue``, the
script and, when on, its WAIT) against a local Redis with one replica (REPLICAOF), off and on,
interleaved in rounds. Prints p50/p95/p99 in ms of each.

    .venv/bin/python -m scripts.bench_replica_wait --uploads 400 --kb 150
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import redis

from scripts.lib.redis_server import LocalRedis


def attach(master: LocalRedis, directory: Path) -> LocalRedis:
    replica = LocalRedis(directory, aof=False).start()
    with redis.Redis(port=replica.port) as client:
        client.execute_command("REPLICAOF", "127.0.0.1", master.port)
        deadline = time.monotonic() + 10
        while client.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not attach")
            time.sleep(0.05)
    return replica


async def timings(url: str, wait_replicas: int, uploads: int, image: bytes) -> list[float]:
    from api.queue import Connections, JobQueue
    from api.settings import ApiSettings
    from batcher.queue.durable import Durability
    from batcher.queue.jobs import JobSpec

    settings = ApiSettings(redis_url=url, allow_anonymous=True, queue_namespace=f"bench{wait_replicas}")
    connections = Connections.open(settings)
    queue = JobQueue(connections, settings.queue_namespace, 10**9, durability=Durability(wait_replicas, 1000))
    out = []
    try:
        for i in range(uploads):
            spec = JobSpec(f"p{i}", "n", "", "", "sha", "image/jpeg")
            t0 = time.perf_counter()
            await queue.enqueue(spec, image)
            out.append((time.perf_counter() - t0) * 1000)
    finally:
        await connections.aclose()
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=400, help="uploads per setting and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kb", type=int, default=150, help="image size")
    args = parser.parse_args()
    image = os.urandom(args.kb * 1024)
    with tempfile.TemporaryDirectory() as tmp:
        master = LocalRedis(Path(tmp) / "m", aof=False).start()
        replica = attach(master, Path(tmp) / "r")
        try:
            found: dict[int, list[float]] = {0: [], 1: []}
            for _ in range(args.rounds):
                for k in (0, 1):
                    found[k] += asyncio.run(timings(master.url, k, args.uploads, image))
        finally:
            replica.stop(kill=True)
            master.stop(kill=True)
    for k, values in found.items():
        print(f"REDIS_WAIT_REPLICAS={k}: {len(values)} enqueues of {args.kb} KB: p50 {pct(values, 50):.2f} ms, "
              f"p95 {pct(values, 95):.2f} ms, p99 {pct(values, 99):.2f} ms")


if __name__ == "__main__":
    main()
