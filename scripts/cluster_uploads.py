#!/usr/bin/env python3
"""Uploads through the API on a local Redis Cluster while workers start: how many are refused?

Starts a local cluster (scripts/lib/redis_cluster.py; ``--single``: one Redis instead), the API as
run.sh starts it (uvicorn, ``REDIS_CLUSTER=true``), then ``--workers`` workers (``python -m batcher``)
and at the same moment ``--uploads`` uploads from ``--clients`` concurrent clients (httpx). Prints
the answers by status and error code, and the API's log lines about Redis.

    python -m scripts.cluster_uploads --uploads 240 --clients 16 --workers 2
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from redis.cluster import RedisCluster

from scripts.lib.photos import sample_photos
from scripts.lib.procs import PY, Supervisor, api_args, api_ready, free_port
from scripts.lib.redis_cluster import LocalCluster
from scripts.lib.redis_server import LocalRedis


async def fire(api: str, n: int, clients: int, photo: bytes) -> collections.Counter:
    answers: collections.Counter = collections.Counter()
    todo = iter(range(n))

    async def client(http: httpx.AsyncClient) -> None:
        for i in todo:
            try:
                r = await http.post(f"{api}/api/v1/index-product-with-image",
                                    data={"product_id": f"p{i}", "name": f"product {i}"},
                                    files={"image_file": ("p.jpg", photo, "image/jpeg")})
                code = r.json().get("error", {}).get("code", "") if r.status_code >= 400 else ""
                answers[f"{r.status_code} {code}".strip()] += 1
            except httpx.HTTPError as exc:
                answers[type(exc).__name__] += 1

    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return answers


def pause(cluster: LocalCluster, which: str, after_s: float, for_s: float) -> None:
    with RedisCluster.from_url(cluster.url) as rc:
        owner = rc.get_node_from_key("{clipq}").port
    port = {"owner": owner, "replica": cluster.replicas_of(owner)[0],
            "other": next(p for p in cluster.masters_now() if p != owner)}[which]
    time.sleep(after_s)
    print(f"SIGSTOP {which} node {port} for {for_s}s", flush=True)
    cluster.nodes[port].proc.send_signal(signal.SIGSTOP)
    time.sleep(for_s)
    cluster.nodes[port].proc.send_signal(signal.SIGCONT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--uploads", type=int, default=240)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="workers started as the uploads begin (default 2)")
    p.add_argument("--single", action="store_true", help="one Redis instead of the 3+3 cluster")
    p.add_argument("--delay", type=float, default=0, help="seconds between the workers' start and the uploads")
    p.add_argument("--nice", type=int, default=10, help="the workers' niceness (run.sh: 10)")
    p.add_argument("--photo", default=None, help="the photo uploaded (default: the largest sample)")
    p.add_argument("--stop-node", choices=("owner", "other", "replica"), default=None,
                   help="SIGSTOP a node during the uploads: the master of the queue's slot, another master, "
                        "or the owner's replica (a starved server, as on a busy 2-core machine)")
    p.add_argument("--stop-for", type=float, default=2.0, help="seconds the node stays stopped (default 2)")
    p.add_argument("--stop-after", type=float, default=0.3, help="seconds into the uploads (default 0.3)")
    p.add_argument("--model", default=os.environ.get("CLIP_MODEL", "clipq-tiny"))
    p.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    a = p.parse_args(argv)
    work = Path(a.dir or tempfile.mkdtemp(prefix="cluster_uploads-")).resolve()
    server = LocalRedis(work / "redis", aof=False) if a.single else LocalCluster(work / "cluster", 3, 1)
    server.start()
    env = dict(os.environ, REDIS_URL=server.url, REDIS_CLUSTER="false" if a.single else "true",
               ALLOW_ANONYMOUS="true", CLIP_MODEL=a.model, CLIP_PRETRAINED="none", PYTHONUNBUFFERED="1",
               QDRANT_PATH=str(work / "qdrant"), WORKER_METRICS_PORT="0")
    sup = Supervisor(work / "logs", say=None)
    try:
        api_port = free_port()
        api = f"http://127.0.0.1:{api_port}"
        sup.start("api", api_args(api_port), ready=lambda: api_ready(api), env=env)
        for i in range(a.workers):
            sup.start(f"worker{i}", [PY, "-m", "batcher"], env=env | {"QDRANT_PATH": str(work / f"qdrant{i}")},
                      nice=a.nice)
        photo = Path(a.photo) if a.photo else max(sample_photos(), key=lambda f: f.stat().st_size)
        time.sleep(a.delay)
        start = time.perf_counter()
        if a.stop_node and not a.single:
            threading.Thread(target=pause, args=(server, a.stop_node, a.stop_after, a.stop_for), daemon=True).start()
        answers = asyncio.run(fire(api, a.uploads, a.clients, photo.read_bytes()))
        wall = time.perf_counter() - start
    finally:
        sup.stop_all(kill=True)
        server.stop(kill=True)
    refused = sum(v for k, v in answers.items() if not k.startswith("202"))
    print(json.dumps({"redis": "single" if a.single else "cluster 3+3", "uploads": a.uploads, "clients": a.clients,
                      "workers": a.workers, "refused": refused, "answers": dict(answers), "wall_s": round(wall, 2)}))
    log = (work / "logs" / "api.log").read_text(errors="replace").splitlines()
    lines = [line for line in log if "redis" in line.lower() or "503" in line]
    print(f"API log: {len(lines)} lines about Redis or 503 in {work / 'logs' / 'api.log'}")
    print("\n".join(lines[:15]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
