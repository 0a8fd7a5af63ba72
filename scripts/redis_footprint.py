#!/usr/bin/env python3
"""Redis memory per image byte the queue holds: the figure behind MAX_QUEUE_BYTES's sizing.

Starts a fresh local Redis per size (AOF on, as in production), enqueues images of that size
through the real enqueue script until the queue holds ``--hold`` bytes, and prints
``used_memory`` over the bytes held (the byte budget's counter), at rest and at its peak.
``python -m scripts.redis_footprint --hold 64mb``
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import redis

from batcher.queue import calls
from batcher.queue.jobs import JobSpec, new_job_id
from batcher.queue.keys import Keys
from batcher.queue.scripts import Scripts
from scripts.lib.redis_server import LocalRedis

SIZES = (20_000, 200_000, 1_000_000, 10_000_000)
SPEC = JobSpec("sku-000000", "A product name", "A description of a few words", {"brand": "b", "n": 1},
               "0" * 64, "image/jpeg")


def measure(folder: Path, size: int, hold: int) -> tuple[float, float, int]:
    """On a fresh server: (used_memory, peak) over the image bytes held, and the bytes held."""
    server = LocalRedis(folder, aof=True).start()
    client = redis.Redis.from_url(server.url)
    try:
        base = client.info("memory")["used_memory"]
        k, scripts, image = Keys("footprint"), Scripts(client), bytes(size)
        for _ in range(max(1, hold // size)):
            scripts.run(calls.enqueue(k, new_job_id(), SPEC, image, max_depth=10**9))
        memory = client.info("memory")
        held = int(client.get(k.image_bytes))
        return (memory["used_memory"] - base) / held, (memory["used_memory_peak"] - base) / held, held
    finally:
        client.close()
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--hold", type=lambda v: int(v.lower().replace("mb", "")) * 1024**2 if "mb" in v.lower()
                   else int(v), default=64 * 1024**2, help="bytes of images to hold per size (e.g. 64mb)")
    a = p.parse_args()
    print("| image size | images | used_memory / bytes held | peak / bytes held |")
    print("|---:|---:|---:|---:|")
    for size in SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            steady, peak, held = measure(Path(tmp), size, a.hold)
        print(f"| {size:,} B | {held // size:,} | {steady:.3f} | {peak:.3f} |")

if __name__ == "__main__":
    main()
