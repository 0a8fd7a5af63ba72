#!/usr/bin/env python3
"""Benchmark ``GET /api/v1/queue/status/{id}?wait=SECONDS``: many clients waiting at once on one
API process, against the seed's client that polls the status once a second.

    .venv/bin/python -m scripts.bench_wait --jobs 1000 --rounds 2 --json wait.json

Each round starts a worker held at a gate (its slow imports done, not yet claiming), enqueues
``--jobs`` uploads through the API (small distinct JPEGs, so none is skipped as unchanged),
then opens one client per job, all at once, on one aiohttp session:

- ``wait``: one ``?wait=--wait`` request per job (answered when the job is terminal);
- ``poll``: the seed's way, a plain status read every ``--poll-interval`` seconds per job
  (each client starts at a random phase), until the job is terminal.

Once every request has been sent (and a second more), the worker is let through the gate and
indexes the jobs. For each job the figure is the delay from its completion (its ``updated_at``:
Redis server time, in ms, written by the worker's ack script) to the moment the client had the
answer saying so (``time.time()``; same host, same clock). Modes alternate round by round. A
listener process of its own subscribes to the workers' announcements too, which splits each
delay in two: completion to announcement heard, announcement to answer.

While the clients wait, the script samples every 100 ms the TCP connections of the API process
(from /proc): to Redis, and from clients. A waiting request holds no Redis connection of its
own: one pub/sub listener per process wakes them. It also reports the API's CPU seconds per
round (from /proc, not from the client).

Services, as ``scripts/run_local.py`` starts them: a Redis (``scripts.lib.redis_server``, unless
REDIS_URL is set; keys under a namespace of their own either way), one ``uvicorn api.main:app``
process, and one real worker (``python -m batcher``, ``nice -n 10``) with the ``clipq-tiny`` model
and seeded random weights (``--model``), Qdrant in memory. The file-descriptor limit of this
process (and so of the API it starts) is raised to fit ``--jobs`` connections.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import os
import platform
import random
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import aiohttp

from batcher.queue.keys import Keys
from scripts.lib.procs import PY, Child, StartFailed, Supervisor, api_args, api_ready, free_port, gated_worker_code
from scripts.lib.redis_server import LocalRedis
from scripts.lib.report import write_json
from scripts.lib.stats import percentile
from scripts.load_test import iso_ms

STATUS = "/api/v1/queue/status/"
TERMINAL = ("completed", "failed", "superseded")
# A subscriber of its own, in a process of its own (this one is busy with the clients): when
# each announcement reaches a listener, one line "time job_id..." per message.
LISTEN_CODE = """
import sys, time, redis
url, channel, out = sys.argv[1:]
pubsub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
pubsub.subscribe(channel)
with open(out, "a") as f:
    for message in pubsub.listen():
        f.write(f"{time.time()} {message['data'].decode()}\\n")
        f.flush()
"""
GATE_MARK = "bench-wait: worker warm"
# The worker's slow imports run before the gate; on "go" it runs the real entry point.
GATE_CODE = gated_worker_code(GATE_MARK)


def jpeg(seed: str, side: int = 64) -> bytes:
    """A small JPEG of seeded noise: distinct bytes for every job."""
    from PIL import Image

    rng = random.Random(seed)
    im = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    out = io.BytesIO()
    im.save(out, "JPEG", quality=85)
    return out.getvalue()


# -- the API process, seen from /proc ---------------------------------------------------------
def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def connections(pid: int, redis_port: int, api_port: int) -> tuple[int, int]:
    """(established TCP connections of ``pid`` to Redis, from clients to its port)."""
    inodes, to_redis, from_clients = _socket_inodes(pid), 0, 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] != "01" or cols[9] not in inodes:  # 01: ESTABLISHED
                    continue
                local, remote = int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16)
                to_redis += remote == redis_port
                from_clients += local == api_port
    return to_redis, from_clients


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


# -- services ---------------------------------------------------------------------------------
class Services:
    def __init__(self, a: argparse.Namespace, workdir: Path) -> None:
        self.a, self.dir = a, workdir
        self.redis = None if os.environ.get("REDIS_URL") else LocalRedis(workdir / "redis", aof=False)
        self.redis_url = os.environ.get("REDIS_URL") or self.redis.url
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        namespace = f"bench-wait-{uuid.uuid4().hex[:8]}"
        self.finished_channel = Keys(namespace).finished
        self.env = dict(os.environ, REDIS_URL=self.redis_url, QUEUE_NAMESPACE=namespace,
                        ALLOW_ANONYMOUS="true", LOG_LEVEL="WARNING", MAX_QUEUE_DEPTH=str(10 * a.jobs + 1000),
                        CLIP_MODEL=a.model, CLIP_PRETRAINED="none", CLIP_DEVICE="cpu", QDRANT_PATH=":memory:",
                        PYTHONUNBUFFERED="1")
        self.sup = Supervisor(workdir, say=None)
        self.api: Child | None = None

    def spawn(self, name: str, args: list[str], **kw) -> Child:
        return self.sup.start(name, args, grace_s=15, env=self.env, **kw)

    def start(self) -> None:
        if self.redis:
            self.redis.start()
        self.api = self.spawn("api", api_args(self.api_port))  # as scripts/run_local.py starts it
        self.until(lambda: api_ready(self.api_url), 60, "the API")

    def until(self, ready, timeout_s: float, what: str) -> None:
        try:
            self.sup.wait_until(what, ready, timeout_s)
        except StartFailed as exc:
            raise RuntimeError(f"{what} did not start ({exc}); logs in {self.dir}") from None

    def gated_worker(self, n: int) -> Child:
        """A worker whose imports are done, waiting for ``go`` on its stdin."""
        name = f"worker-{n}"
        child = self.spawn(name, [PY, "-c", GATE_CODE, "--worker-id", f"bench-wait-{n}", "--metrics-port", "0",
                                  "--max-batch-size", str(self.a.batch_size)], nice=10, stdin=subprocess.PIPE)
        self.until(lambda: GATE_MARK in child.log_text(), 120, name)
        return child

    def stop(self) -> None:
        self.sup.stop_all()
        if self.redis:
            self.redis.stop()


# -- clients ----------------------------------------------------------------------------------
async def enqueue(session: aiohttp.ClientSession, api: str, n: int, tag: str) -> list[str]:
    sem, ids = asyncio.Semaphore(50), [""] * n

    async def one(i: int) -> None:
        form = aiohttp.FormData()
        form.add_field("product_id", f"bw-{tag}-{i:05d}")
        form.add_field("name", f"wait bench {i}")
        form.add_field("image_file", jpeg(f"{tag}-{i}"), filename=f"{i}.jpg", content_type="image/jpeg")
        async with sem, session.post(f"{api}/api/v1/index-product-with-image", data=form) as resp:
            body = await resp.json()
            if resp.status != 202:
                raise RuntimeError(f"upload {i}: {resp.status} {body}")
            ids[i] = body["job_id"]

    await asyncio.gather(*(one(i) for i in range(n)))
    return ids


async def get_status(session: aiohttp.ClientSession, url: str, **params) -> tuple[float, dict]:
    async with session.get(url, params=params) as resp:
        body = await resp.json()
    if resp.status != 200:  # counted as not terminal; say why
        print(f"{url}: {resp.status} {body}", file=sys.stderr)
    return time.time(), body


async def waiting_client(session, api: str, job_id: str, a: argparse.Namespace) -> tuple[float, dict]:
    """``?wait=``, and again while the job is not terminal (as the README says), up to ``--timeout``."""
    deadline, waits = time.monotonic() + a.timeout, 0
    while True:
        seen, body = await get_status(session, api + STATUS + job_id, wait=str(a.wait))
        waits += 1
        if body.get("status") in TERMINAL or time.monotonic() > deadline:
            return seen, body | {"requests": waits}


async def polling_client(session, api: str, job_id: str, a: argparse.Namespace) -> tuple[float, dict]:
    """The seed's client: read the status every ``poll_interval`` until it is terminal."""
    await asyncio.sleep(random.uniform(0, a.poll_interval))
    deadline, polls = time.monotonic() + a.timeout, 0
    while True:
        seen, body = await get_status(session, api + STATUS + job_id)
        polls += 1
        if body.get("status") in TERMINAL or time.monotonic() > deadline:
            return seen, body | {"requests": polls}
        await asyncio.sleep(a.poll_interval)


def read_notices(path: Path) -> dict[str, float]:
    """job id: when its announcement reached the listener process (the first time)."""
    heard: dict[str, float] = {}
    for line in path.read_text().splitlines():
        at, *job_ids = line.split()
        for job_id in job_ids:
            heard.setdefault(job_id, float(at))
    return heard


def sample_connections(pid: int, redis_port: int, api_port: int, out: str, every_s: float = 0.1) -> None:
    """In a process of its own (parsing /proc would hold up the clients): one line per sample."""
    with open(out, "a") as f:
        while True:
            f.write("%d %d\n" % connections(pid, redis_port, api_port))
            f.flush()
            time.sleep(every_s)


# -- one round --------------------------------------------------------------------------------
async def one_round(svc: Services, mode: str, n_round: int) -> dict:
    a = svc.a
    worker = svc.gated_worker(n_round)
    sent = 0

    async def on_sent(*_args) -> None:
        nonlocal sent
        sent += 1

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(on_sent)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=a.wait + 60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trace_configs=[trace]) as session:
        tag = uuid.uuid4().hex[:6]
        job_ids = await enqueue(session, svc.api_url, a.jobs, tag)
        client = waiting_client if mode == "wait" else polling_client
        sent = 0
        tasks = [asyncio.create_task(client(session, svc.api_url, j, a)) for j in job_ids]
        deadline = time.monotonic() + 60
        while sent < len(job_ids) and time.monotonic() < deadline:  # every request is out
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # ... and read by the API
        sampler, listener = observers(svc, n_round)
        cpu0, t0 = cpu_seconds(svc.api.pid), time.monotonic()
        worker.proc.stdin.write(b"go\n")
        worker.proc.stdin.close()
        answers = await asyncio.gather(*tasks)
        wall, cpu = time.monotonic() - t0, cpu_seconds(svc.api.pid) - cpu0
        sampler.terminate()
    for child in (worker, listener):
        child.stop()
        svc.sup.forget(child)
    conns = [tuple(map(int, line.split())) for line in (svc.dir / f"connections-{n_round}.txt").open()]
    heard = read_notices(svc.dir / f"notices-{n_round}.txt")
    return summarise(mode, answers, heard, conns, wall, cpu)


def observers(svc: Services, n_round: int) -> tuple[multiprocessing.Process, Child]:
    """The connection sampler and the announcement listener, each in a process of its own."""
    redis_port = int(svc.redis_url.rsplit(":", 1)[1].split("/")[0])
    sampler = multiprocessing.get_context("spawn").Process(
        target=sample_connections, daemon=True,
        args=(svc.api.pid, redis_port, svc.api_port, str(svc.dir / f"connections-{n_round}.txt")))
    sampler.start()
    heard = svc.dir / f"notices-{n_round}.txt"
    listener = svc.spawn(f"listener-{n_round}", [PY, "-c", LISTEN_CODE, svc.redis_url, svc.finished_channel,
                                                str(heard)])
    svc.until(heard.exists, 30, "the announcement listener")
    return sampler, listener


def stats_ms(values: list[float]) -> dict | None:
    if not values:
        return None
    return {f"p{q}": round(percentile(values, q), 1) for q in (50, 95, 99)} | {"max": round(max(values), 1)}


def summarise(mode: str, answers: list[tuple[float, dict]], heard: dict[str, float],
              conns: list[tuple[int, int]], wall_s: float, cpu_s: float) -> dict:
    done = [(seen, body, iso_ms(body["updated_at"]) / 1000) for seen, body in answers
            if body.get("status") in TERMINAL]
    clients_now = [c for _, c in conns]
    return {
        "mode": mode, "jobs": len(answers), "terminal": len(done),
        "requests": sum(body["requests"] for _, body in answers),
        "delay_ms": stats_ms([(seen - done_at) * 1000 for seen, _, done_at in done]),
        # the delay in two: completion -> announcement heard by a listener; announcement -> answer
        "announced_ms": stats_ms([(heard[b["job_id"]] - done_at) * 1000 for _, b, done_at in done
                                  if b["job_id"] in heard]),
        "after_announcement_ms": stats_ms([(seen - heard[b["job_id"]]) * 1000 for seen, b, _ in done
                                           if b["job_id"] in heard]),
        "api_redis_connections": {"min": min(r for r, _ in conns), "max": max(r for r, _ in conns)},
        "api_client_connections_max": max(clients_now),
        "per_job": [{"job_id": b["job_id"], "completed": done_at, "announced": heard.get(b["job_id"]), "answered": seen}
                    for seen, b, done_at in done], "wall_s": round(wall_s, 2), "api_cpu_s": round(cpu_s, 2),
    }


def show(r: dict) -> str:
    def ms(key: str) -> str:
        d = r[key] or {}
        return f"{d.get('p50')} / {d.get('p95')} / {d.get('p99')} / {d.get('max')}"

    return (f"{r['mode']:>4}: terminal {r['terminal']}/{r['jobs']} after {r['requests']} requests\n"
            f"      delay ms p50/p95/p99/max {ms('delay_ms')}  (completion -> announced {ms('announced_ms')};"
            f" announced -> answered {ms('after_announcement_ms')})\n      API->Redis conns {r['api_redis_connections']['min']}"
            f"-{r['api_redis_connections']['max']}  clients held (max) {r['api_client_connections_max']}  "
            f"API CPU {r['api_cpu_s']} s over {r['wall_s']} s")


def cpu_name() -> str:
    models = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
              if line.startswith("model name")]
    return models[0] if models else platform.machine()


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=1000, help="jobs, and so clients waiting at once (default 1000)")
    p.add_argument("--wait", type=float, default=30, help="?wait= of each request, and the polling clients' limit")
    p.add_argument("--modes", default="wait,poll", help="comma-separated, alternated: wait, poll")
    p.add_argument("--rounds", type=int, default=1, help="rounds of each mode")
    p.add_argument("--timeout", type=float, default=120, help="a client gives up after this many seconds")
    p.add_argument("--poll-interval", type=float, default=1.0, help="the polling client's interval (the seed's: 1 s)")
    p.add_argument("--batch-size", type=int, default=32, help="the worker's largest micro-batch")
    p.add_argument("--model", default="clipq-tiny", help="CLIP_MODEL of the worker (random weights)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--per-job", action="store_true", help="--json holds each job's times too")
    p.add_argument("--logs", type=Path, help="keep the services' logs in this folder (default: a temporary one)")
    return p.parse_args(argv)


async def run(svc: Services) -> list[dict]:
    modes, results = svc.a.modes.split(","), []
    for n in range(svc.a.rounds * len(modes)):
        results.append(await one_round(svc, modes[n % len(modes)], n))
        print(show(results[-1]), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    raise_fd_limit(2 * a.jobs + 1024)  # the clients' sockets here; the API inherits the limit
    with tempfile.TemporaryDirectory(prefix="bench-wait-") as tmp:
        tmp = a.logs or Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        svc = Services(a, tmp)
        try:
            svc.start()
            print(f"API pid {svc.api.pid} on {svc.api_url}; logs in {tmp}", file=sys.stderr, flush=True)
            results = asyncio.run(run(svc))
        except BaseException:
            print(f"--- API log:\n{(Path(tmp) / 'api.log').read_text(errors='replace')[-3000:]}", file=sys.stderr)
            raise
        finally:
            svc.stop()
    report = {"command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": cpu_name(), "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 1),
              "results": results}
    if a.json:
        if not a.per_job:
            for r in results:
                r.pop("per_job")
        write_json(a.json, report)
    return 0 if all(r["terminal"] == r["jobs"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
