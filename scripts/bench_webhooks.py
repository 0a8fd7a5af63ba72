#!/usr/bin/env python3
"""Benchmark webhook deliveries: the delay from a job's end to its signed POST reaching the
receiver named by the upload's ``callback_url``.

    .venv/bin/python -m scripts.bench_webhooks --jobs 200 --json webhooks.json

Services, as ``scripts/run_local.py`` starts them: a Redis (``scripts.lib.redis_server``, unless
REDIS_URL is set; keys under a namespace of their own either way), one ``uvicorn api.main:app``
process with WEBHOOK_SECRET set (its deliverer sends the webhooks), and one real worker
(``python -m batcher``, ``nice -n 10``, the ``clipq-tiny`` model with seeded random weights,
Qdrant in memory). A receiver (``scripts.lib.webhook_receiver``) listens on 127.0.0.1
(WEBHOOK_ALLOWED_NETWORKS=127.0.0.0/8) and answers 200 at once.

``--jobs`` uploads (small distinct JPEGs, ``--concurrency`` at a time) each carry the receiver's
URL. For each delivery the figure is its arrival (``time.time()`` at the receiver) minus its job's
end (the body's ``updated_at``: Redis server time, written by the worker's ack script; same host,
same clock). Every signature is checked with the secret.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from api.webhook_config import verify
from scripts.bench_wait import jpeg
from scripts.lib.procs import PY, Supervisor, api_args, api_ready, free_port
from scripts.lib.redis_server import LocalRedis
from scripts.lib.report import cpu_name, utc_now, write_json
from scripts.lib.stats import summary_ms
from scripts.lib.webhook_receiver import Receiver
from scripts.load_test import iso_ms

SECRET = "bench-webhooks-secret"
PATH = "/hook"


def start(sup: Supervisor, workdir: Path, a: argparse.Namespace) -> tuple[str, LocalRedis | None]:
    """Redis (unless REDIS_URL), the API and a worker; returns the API's URL and the Redis started."""
    local = None if os.environ.get("REDIS_URL") else LocalRedis(workdir / "redis", aof=False).start()
    env = dict(os.environ, REDIS_URL=os.environ.get("REDIS_URL") or local.url,
               QUEUE_NAMESPACE=f"bench-hooks-{uuid.uuid4().hex[:8]}", ALLOW_ANONYMOUS="true", LOG_LEVEL="WARNING",
               WEBHOOK_SECRET=SECRET, WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8", CLIP_MODEL=a.model,
               CLIP_PRETRAINED="none", CLIP_DEVICE="cpu", QDRANT_PATH=":memory:", PYTHONUNBUFFERED="1")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sup.start("api", api_args(port), 15, ready=lambda: api_ready(url), env=env)
    sup.start("worker", [PY, "-m", "batcher", "--worker-id", "bench-hooks", "--metrics-port", "0"], 35,
              env=env, nice=10)
    return url, local


def upload_all(api: str, callback_url: str, a: argparse.Namespace) -> list[str]:
    tag = uuid.uuid4().hex[:6]

    def one(i: int) -> str:
        form = {"product_id": f"bh-{tag}-{i:05d}", "name": f"webhook bench {i}", "callback_url": callback_url}
        files = {"image_file": (f"{i}.jpg", jpeg(f"{tag}-{i}"), "image/jpeg")}
        resp = httpx.post(f"{api}/api/v1/index-product-with-image", data=form, files=files, timeout=30,
                          trust_env=False)
        if resp.status_code != 202:
            raise RuntimeError(f"upload {i}: {resp.status_code} {resp.text}")
        return resp.json()["job_id"]

    with ThreadPoolExecutor(a.concurrency) as pool:
        return list(pool.map(one, range(a.jobs)))


def measure(receiver: Receiver, job_ids: list[str], timeout_s: float) -> dict:
    got = receiver.wait_for(PATH, len(job_ids), timeout_s)
    bodies = [json.loads(r.body) for r in got]
    delays = [r.at - iso_ms(b["updated_at"]) / 1000 for r, b in zip(got, bodies)]
    return {"jobs": len(job_ids), "delivered": len({b["job_id"] for b in bodies} & set(job_ids)),
            "statuses": sorted({b["status"] for b in bodies}),
            "bad_signatures": sum(not verify(SECRET, r.body, r.headers["X-Clipq-Signature"], r.at) for r in got),
            "delay_ms": summary_ms(delays, digits=1)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=200, help="uploads, each with a callback_url (default 200)")
    p.add_argument("--concurrency", type=int, default=8, help="uploads in flight (default 8)")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for every delivery")
    p.add_argument("--model", default="clipq-tiny", help="CLIP_MODEL of the worker (random weights)")
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--logs", type=Path, help="keep the services' logs in this folder (default: a temporary one)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-hooks-") as tmp, Receiver() as receiver:
        workdir = a.logs or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        sup, local = Supervisor(workdir, say=None), None
        try:
            api, local = start(sup, workdir, a)
            result = measure(receiver, upload_all(api, receiver.url(PATH), a), a.timeout)
        finally:
            sup.stop_all()
            if local:
                local.stop()
    d = result["delay_ms"]
    print(f"{result['delivered']}/{result['jobs']} delivered ({', '.join(result['statuses'])}), "
          f"{result['bad_signatures']} bad signatures; job end -> received ms p50 {d['p50']} / p95 {d['p95']} "
          f"/ p99 {d['p99']} / max {d['max']}", flush=True)
    if a.json:
        write_json(a.json, {"command": shlex.join(["python -m scripts.bench_webhooks", *sys.argv[1:]]),
                            "date": utc_now(), "machine": cpu_name(), "load_avg_1m": round(os.getloadavg()[0], 1),
                            "result": result})
    return 0 if result["delivered"] == result["jobs"] and not result["bad_signatures"] else 1


if __name__ == "__main__":
    sys.exit(main())
