#!/usr/bin/env python3
"""The API's CPU per upload, read from the API process, with variants side by side.

Each run starts the API as a user does (``python -m uvicorn api.main:app``, no worker), sends
``--warmup`` uploads, then ``--requests`` uploads of the sample photos (``scripts/samples/``, about
52 KB on average) with ``--concurrency`` in flight from one aiohttp client, and reads the API
process's CPU time (utime + stime from ``/proc/<pid>/stat``, its child processes included, so
``workers=N`` counts them all) before and after: CPU ms per upload is measured from the
server, not the client, which shares the machine. Then ``--idle`` uploads one at a time give
the idle latency p50 / p99 as the client sees it. Redis's own CPU (``INFO cpu``) is reported
beside it, and the commands the API sent per upload (its round trips: ``MONITOR`` during 20
more uploads, the commands a Lua script runs not counted). Every upload must answer 202.

A variant is ``LABEL:key=value,...``; keys: ``rev`` (run that git revision's code, exported
with ``git archive``; default: this checkout), ``loop`` and ``http`` (uvicorn's options;
default ``auto``: uvloop and httptools when installed), ``workers``, ``without`` (a package the
API must not see, ``+``-separated: ``without=hiredis``) and any upper-case name, passed to the
API as an environment variable. Variants alternate, ``--rounds`` times (the
order reversed every other round); the table shows medians. Redis comes from REDIS_URL, else
one is started (``scripts.lib.redis_server``, no AOF) for the whole run.

  .venv/bin/python -m scripts.bench_api_cpu --rounds 3 \\
      --variant 'before:rev=406e17b,loop=asyncio,http=h11' --variant 'now'
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import redis

from scripts.lib import ROOT
from scripts.lib.photos import sample_photos
from scripts.lib.procs import Child, api_args, free_port
from scripts.lib.redis_server import LocalRedis
from scripts.lib.report import write_json
from scripts.lib.stats import percentile

UPLOAD_PATH = "/api/v1/index-product-with-image"
BOUNDARY = "clipq-bench-3f9a1c"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Variant:
    label: str
    rev: str | None = None
    uvicorn: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    without: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, spec: str) -> "Variant":
        label, _, options = spec.partition(":")
        v = cls(label)
        for item in filter(None, options.split(",")):
            key, _, value = item.partition("=")
            if key == "rev":
                v.rev = value
            elif key == "without":
                v.without += value.split("+")
            elif key in ("loop", "http", "workers"):
                v.uvicorn += [f"--{key}", value]
            elif key.isupper():
                v.env[key] = value
            else:
                raise SystemExit(f"unknown variant option {key!r} in {spec!r}")
        return v


# -- the API's CPU, from /proc --------------------------------------------------------------
def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` and of every live descendant, plus what reaped children used."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
            except (OSError, IndexError):
                continue
    tree, grew = {pid}, True
    while grew:
        children = {p for p, parent in parents.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    total = 0
    for p in tree:
        try:
            s = _stat(p)
        except OSError:
            continue
        total += sum(int(s[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return total / TICKS


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def api_commands(r: redis.Redis, redis_url: str, url: str, uploads: int) -> float:
    """Commands the API sends Redis per upload, read with MONITOR (scripts' own calls excluded)."""
    mark, seen = "bench-api-cpu-" + uuid.uuid4().hex, []
    marker = redis.Redis.from_url(redis_url)
    marker.ping()  # its connection is open before MONITOR starts: no HELLO of ours is counted

    def listen() -> None:
        with r.monitor() as m:
            for entry in m.listen():
                if mark in entry["command"]:
                    return
                if entry.get("client_type") != "lua":
                    seen.append(entry["command"])

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    time.sleep(0.5)  # MONITOR is on
    seen.clear()
    asyncio.run(upload_many(url, uploads, 1, "count"))
    marker.echo(mark)
    thread.join(10)
    marker.close()
    return len(seen) / uploads


# -- the uploads ----------------------------------------------------------------------------
def photos() -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sample_photos() if p.suffix == ".jpg"]


def multipart(i: int, tag: str, name: str, data: bytes) -> bytes:
    """The form of ``scripts.load_test``: four text fields and the photo."""
    fields = {"product_id": f"bench-{tag}-{i:06d}", "name": f"Bench product {i}",
              "description": f"bench upload of {name}", "metadata": json.dumps({"source": "bench", "photo": name})}
    out = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
           for k, v in fields.items()]
    out.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image_file"; filename="{name}"\r\n'
               f'Content-Type: image/jpeg\r\n\r\n'.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode())
    return b"".join(out)


async def send(session: aiohttp.ClientSession, url: str, body: bytes) -> float | None:
    """The upload's latency in seconds; None (and a line on stderr) when it was not answered 202."""
    start = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}) as r:
        answer = await r.read()
        if r.status != 202:
            print(f"upload answered {r.status}: {answer[:200]!r}", file=sys.stderr)
            return None
    return time.perf_counter() - start


async def upload_many(url: str, count: int, concurrency: int, tag: str) -> list[float | None]:
    images = photos()
    bodies = iter([multipart(i, tag, *images[i % len(images)]) for i in range(count)])
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def client() -> None:
            for body in bodies:
                latencies.append(await send(session, url + UPLOAD_PATH, body))

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies


# -- one run of one variant -----------------------------------------------------------------
def code_dir(rev: str | None, cache: dict[str, Path], scratch: Path) -> Path:
    if rev is None:
        return ROOT
    if rev not in cache:
        folder = Path(tempfile.mkdtemp(prefix=f"rev-{rev[:10]}-", dir=scratch))
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
        cache[rev] = folder
    return cache[rev]


def hide(packages: list[str], scratch: Path) -> list[str]:
    """A folder of modules that fail to import, put first on the path: the API runs without them."""
    if not packages:
        return []
    folder = Path(tempfile.mkdtemp(prefix="without-", dir=scratch))
    for name in packages:
        (folder / f"{name}.py").write_text(f"raise ImportError('{name} hidden by bench_api_cpu.py')\n")
    return [str(folder)]


def start_api(v: Variant, cwd: Path, redis_url: str, namespace: str, scratch: Path) -> tuple[Child, str]:
    port = free_port()
    path = os.pathsep.join([*hide(v.without, scratch), str(cwd)])
    env = dict(os.environ, REDIS_URL=redis_url, ALLOW_ANONYMOUS="true", QUEUE_NAMESPACE=namespace,
               PYTHONPATH=path) | v.env
    env.pop("API_KEY", None)
    api = Child.start(f"api-{v.label}", api_args(port, "127.0.0.1", *v.uvicorn), scratch, 10, env=env, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not ready(url):
        if not api.alive() or time.monotonic() > deadline:
            api.stop(kill=True)
            raise RuntimeError(f"the API of variant {v.label} did not start:\n{api.tail()}")
        time.sleep(0.1)
    return api, url


def ready(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def run_once(v: Variant, cwd: Path, args: argparse.Namespace, r: redis.Redis, redis_url: str,
             scratch: Path) -> dict:
    namespace = "bench" + uuid.uuid4().hex[:8]
    proc, url = start_api(v, cwd, redis_url, namespace, scratch)
    try:
        asyncio.run(upload_many(url, args.warmup, min(args.concurrency, args.warmup), "warm"))
        cpu0, rcpu0, t0 = tree_cpu_s(proc.pid), redis_cpu_s(r), time.perf_counter()
        failed = asyncio.run(upload_many(url, args.requests, args.concurrency, "load")).count(None)
        wall = time.perf_counter() - t0
        cpu, rcpu = tree_cpu_s(proc.pid) - cpu0, redis_cpu_s(r) - rcpu0
        idle = sorted(t for t in asyncio.run(upload_many(url, args.idle, 1, "idle")) if t is not None)
        calls = api_commands(r, redis_url, url, 20)
    finally:
        proc.stop()
        for keys in batched(r.scan_iter(match="{" + namespace + "}*", count=1000), 1000):
            r.unlink(*keys)
    return {"cpu_ms": 1000 * cpu / args.requests, "uploads_s": args.requests / wall,
            "redis_cpu_ms": 1000 * rcpu / args.requests, "redis_calls": calls, "not_202": failed,
            "idle_p50_ms": 1000 * percentile(idle, 50), "idle_p99_ms": 1000 * percentile(idle, 99)}


def batched(items, n: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# -- the report -----------------------------------------------------------------------------
METRICS = ("cpu_ms", "uploads_s", "idle_p50_ms", "idle_p99_ms", "redis_cpu_ms", "redis_calls")


def report(variants: list[Variant], runs: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for v in variants:
        row = {"variant": v.label, **{m: statistics.median(r[m] for r in runs[v.label]) for m in METRICS}}
        row["cpu_ms_runs"] = [round(r["cpu_ms"], 2) for r in runs[v.label]]
        row["not_202"] = sum(r["not_202"] for r in runs[v.label])
        rows.append(row)
    base = rows[0]["cpu_ms"]
    print("| variant | API CPU ms/upload | / first | uploads/s | idle p50 / p99 (ms) | Redis CPU ms/upload | "
          "Redis commands/upload | not 202 | CPU ms, run by run |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---|")
    for row in rows:
        print(f"| {row['variant']} | {row['cpu_ms']:.2f} | {row['cpu_ms'] / base:.2f}x | {row['uploads_s']:.0f} | "
              f"{row['idle_p50_ms']:.1f} / {row['idle_p99_ms']:.1f} | {row['redis_cpu_ms']:.3f} | "
              f"{row['redis_calls']:.2f} | {row['not_202']} | "
              f"{', '.join(f'{c:.2f}' for c in row['cpu_ms_runs'])} |")
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", default=[], help="LABEL[:key=value,...] (repeatable)")
    p.add_argument("--requests", type=int, default=2000, help="uploads per loaded run (default 2000)")
    p.add_argument("--concurrency", type=int, default=100, help="uploads in flight (default 100)")
    p.add_argument("--warmup", type=int, default=200, help="uploads before measuring (default 200)")
    p.add_argument("--idle", type=int, default=300, help="one-at-a-time uploads for the idle latency (default 300)")
    p.add_argument("--rounds", type=int, default=3, help="runs of every variant, alternating (default 3)")
    p.add_argument("--json", help="write the runs and the medians here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    variants = [Variant.parse(s) for s in args.variant or ["current"]]
    runs: dict[str, list[dict]] = {v.label: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="bench-api-cpu-") as scratch:
        server = None if os.environ.get("REDIS_URL") else LocalRedis(Path(scratch) / "redis", aof=False).start()
        redis_url = os.environ.get("REDIS_URL") or server.url
        r, code = redis.Redis.from_url(redis_url), {}
        try:
            for round_ in range(args.rounds):
                for v in (variants if round_ % 2 == 0 else variants[::-1]):
                    result = run_once(v, code_dir(v.rev, code, Path(scratch)), args, r, redis_url, Path(scratch))
                    runs[v.label].append(result)
                    print(f"round {round_ + 1} {v.label}: " + ", ".join(f"{k}={x:.2f}" for k, x in result.items()),
                          file=sys.stderr, flush=True)
        finally:
            r.close()
            if server is not None:
                server.stop()
    rows = report(variants, runs)
    if args.json:
        write_json(args.json, {"args": vars(args), "rows": rows, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
