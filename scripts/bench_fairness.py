#!/usr/bin/env python3
"""A tenant's single upload behind another tenant's import, one worker: its completion time with
fair scheduling and without (issue 27), side by side in one run.

    .venv/bin/python -m scripts.bench_fairness                       # 10,000-job import
    .venv/bin/python -m scripts.bench_fairness --jobs 500 --json fair.json

For each mode (``FAIR_SCHEDULING=true``, then ``false``: first come, first served) on a fresh
namespace: tenant ``a``'s import of ``--jobs`` jobs is queued, one real worker process starts
(``python -m batcher``, the ``clipq-tiny`` model with seeded random weights, Qdrant in memory),
and once it has completed ``--head-start`` of a's jobs (it is busy with the import), tenant ``b``
queues one job. The figure is b's completion time: its ``completed_at`` minus its ``created_at``
(both Redis time, written by the scripts), with how many of a's jobs were still queued (not yet
claimed) when b arrived and how many of a's the worker completed from then until b's.

Jobs are queued with the API's own enqueue script (``batcher.queue.calls.enqueue``, JobSpec with
the tenant), not over HTTP: until the tenants' API keys land, an upload has no way to name its
tenant. Images are small JPEGs of seeded noise (no job is skipped as unchanged, none is a near
duplicate of another). A Redis server is
started for the run unless REDIS_URL is set; keys live under a namespace of their own per mode
and are deleted at the end.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import sys
import tempfile
import uuid
from pathlib import Path

import redis
from PIL import Image

from batcher.queue import calls
from batcher.queue.jobs import JobSpec, new_job_id
from batcher.queue.keys import Keys
from batcher.queue.scripts import Scripts
from scripts.lib.procs import PY, Supervisor
from scripts.lib.redis_server import LocalRedis
from scripts.lib.report import commit, machine_info, write_json


def tiny_jpeg(i: int) -> bytes:
    """A small JPEG of seeded noise: distinct bytes and a distinct perceptual hash for every ``i``
    (plain colours would all be near duplicates of each other, and their lookup would dominate)."""
    im = Image.frombytes("RGB", (64, 64), random.Random(i).randbytes(64 * 64 * 3))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def queue_jobs(client, keys: Keys, tenant: str, first: int, count: int) -> list[str]:
    """Queue ``count`` jobs of ``tenant`` (products ``<tenant>-<n>``) as the API does."""
    scripts, ids = Scripts(client), []
    pipe = client.pipeline(transaction=False)
    for i in range(first, first + count):
        data, job_id = tiny_jpeg(i), new_job_id()
        spec = JobSpec(f"{tenant}-{i:06d}", f"product {i}", "", {}, hashlib.sha256(data).hexdigest(),
                       "image/jpeg", tenant=tenant)
        scripts.run(calls.enqueue(keys, job_id, spec, data, max_depth=10**9), client=pipe)
        ids.append(job_id)
        if len(pipe) >= 256:
            pipe.execute()
    pipe.execute()
    return ids


def completed_within(client, keys: Keys, job_ids: list[str], start_ms: int, end_ms: int) -> int:
    """How many of ``job_ids`` completed after ``start_ms`` and by ``end_ms`` (their own Redis
    timestamps: read after the run, so no polling delay counts jobs that completed later)."""
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(keys.job(job_id), "completed_at")
    return sum(1 for t in pipe.execute() if t and start_ms < int(t) <= end_ms)


def completed(client, keys: Keys, tenant: str) -> int:
    return int(client.hget(keys.tenant_stats(tenant), "completed") or 0)


def run_mode(a: argparse.Namespace, redis_url: str, work: Path, fair: bool) -> dict:
    client = redis.Redis.from_url(redis_url)
    keys = Keys("bench-" + uuid.uuid4().hex[:10])
    env = dict(os.environ, REDIS_URL=redis_url, QUEUE_NAMESPACE=keys.namespace, CLIP_MODEL=a.model,
               CLIP_PRETRAINED="none", CLIP_DEVICE="cpu", QDRANT_PATH=":memory:", WORKER_METRICS_PORT="0",
               WORKER_BATCH_SIZE=str(a.batch_size), FAIR_SCHEDULING=str(fair).lower(), PYTHONUNBUFFERED="1")
    sup = Supervisor(work / ("fair" if fair else "fifo"), say=None)
    try:
        a_jobs = queue_jobs(client, keys, "a", 0, a.jobs)
        sup.start("worker", [PY, "-m", "batcher"], env=env, grace_s=10)
        sup.wait_until("the worker's head start on a", lambda: completed(client, keys, "a") >= a.head_start,
                       a.timeout)
        a_queued = int(client.llen(keys.pending("a")))
        b_job = queue_jobs(client, keys, "b", a.jobs, 1)[0]
        # polled, not timed: the figures are the jobs' own Redis timestamps
        sup.wait_until("b's job", lambda: client.hget(keys.job(b_job), "status") == b"completed", a.timeout)
        created, done = (int(x) for x in client.hmget(keys.job(b_job), "created_at", "completed_at"))
        a_meanwhile = completed_within(client, keys, a_jobs, created, done)
    finally:
        sup.stop_all()
        for key in client.scan_iter(match=keys.tag + ":*", count=1000):
            client.delete(key)
        client.close()
    return {"fair_scheduling": fair, "b_completion_s": round((done - created) / 1000, 3),
            "a_queued_when_b_came": a_queued, "a_completed_before_b": a_meanwhile}


def show(results: list[dict], ratio: float) -> None:
    print("| FAIR_SCHEDULING | b's upload -> completed | a's jobs queued ahead | a's jobs completed meanwhile |")
    print("|---|---:|---:|---:|")
    for r in results:
        print(f"| {str(r['fair_scheduling']).lower()} | {r['b_completion_s']:.3f} s | {r['a_queued_when_b_came']} | "
              f"{r['a_completed_before_b']} |")
    print(f"without / with fairness: {ratio}x")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=10_000, help="jobs of tenant a's import")
    p.add_argument("--head-start", type=int, default=100, help="a's jobs completed before b uploads")
    p.add_argument("--batch-size", type=int, default=32, help="WORKER_BATCH_SIZE")
    p.add_argument("--model", default="clipq-tiny", help="CLIP_MODEL (random weights)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds any wait may take")
    p.add_argument("--json", type=Path, help="write the results here")
    a = p.parse_args(argv)
    if a.jobs < 1 or a.batch_size < 1 or not 0 <= a.head_start < a.jobs:
        p.error("--jobs and --batch-size must be positive, --head-start below --jobs")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-fairness-") as tmp:
        work = Path(tmp)
        server = None if os.environ.get("REDIS_URL") else LocalRedis(work / "redis", aof=False).start()
        url = os.environ.get("REDIS_URL") or server.url
        try:
            results = [run_mode(a, url, work, fair) for fair in (True, False)]
        finally:
            if server:
                server.stop()
    ratio = round(results[1]["b_completion_s"] / max(results[0]["b_completion_s"], 1e-3), 1)
    show(results, ratio)
    if a.json:
        write_json(a.json, {"jobs": a.jobs, "head_start": a.head_start, "batch_size": a.batch_size,
                            "model": a.model, "commit": commit(), "machine": machine_info(),
                            "command": " ".join(["python -m scripts.bench_fairness", *sys.argv[1:]]),
                            "modes": results, "without_over_with": ratio})
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
