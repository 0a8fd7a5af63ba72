#!/usr/bin/env python3
"""Load test: upload product photos through the API with many concurrent clients (aiohttp).

    python -m scripts.load_test --api http://127.0.0.1:8000 --concurrency 100 --requests 1000 \\
        --wait --json load.json --plot load.png

Phase 1 sends ``--requests`` uploads (the photos of ``--images``, cycled) with
``--concurrency`` requests in flight, and measures each upload's latency as the client sees
it (connect + send + the API storing and queueing the job + the 202).

Phase 2 (``--wait``) polls the job statuses until every job is ``completed`` or ``failed``
and measures end-to-end latency from the moment the upload was sent to the moment the job
was completed. Polling is adaptive and looks only at the oldest unfinished jobs (the queue
is FIFO), so the polls stay proportional to the throughput and do not steal much CPU from
the worker. When the server's clock agrees with ours (same host), the completion time is the
job's ``updated_at`` (Redis time, millisecond resolution); otherwise it is the time of the
first poll that saw the job completed (resolution: ``--poll-interval``).

The client is aiohttp (one session, ``--concurrency`` connections): a slower client, such
as httpx at 100 connections on a small machine, would measure itself instead of the API.

The script only ever talks to ``--api``. Every loop is bounded (``--requests`` uploads,
``--timeout`` seconds of waiting). Exit status: 0 when every upload got a 2xx and every job
completed; 1 when an upload failed (non-2xx or exception), a job failed, or a job was still
unfinished at ``--timeout``; 2 when the test could not run (no photos, API unreachable).
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import mimetypes
import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp
from tqdm import tqdm

from scripts.lib.photos import CORPUS, IMAGE_SUFFIXES, SAMPLES, upload_photos
from scripts.lib.report import write_json
from scripts.lib.stats import summary_ms

FALLBACK = CORPUS / "real"
UPLOAD_PATH = "/api/v1/index-product-with-image"
STATUS_PATH = "/api/v1/queue/status/"
TERMINAL = ("completed", "failed")
CLOCK_SLACK_S = 0.005  # Redis TIME is whole milliseconds; allow rounding either way


@dataclass
class Upload:
    index: int
    product_id: str
    photo: str
    sent_perf: float = 0.0            # perf_counter() when the request was sent
    sent_wall: float = 0.0            # time.time() at the same moment
    answered_perf: float = 0.0
    answered_wall: float = 0.0
    status_code: int | None = None
    error: str | None = None          # exception, or the body of a non-2xx
    job_id: str | None = None
    # filled in by --wait
    final: str | None = None          # completed / failed / None (unfinished at --timeout)
    seen_perf: float | None = None    # first poll that saw the job terminal
    created_ms: int | None = None     # server timestamps from the status document
    updated_ms: int | None = None
    error_message: str | None = None
    retry_count: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300

    @property
    def latency_s(self) -> float:
        return self.answered_perf - self.sent_perf


@dataclass
class Run:
    args: argparse.Namespace
    uploads: list[Upload] = field(default_factory=list)
    t0_perf: float = 0.0
    t0_wall: float = 0.0
    upload_done_perf: float = 0.0
    wait_done_perf: float = 0.0
    polls: int = 0
    poll_errors: int = 0


class Unreachable(Exception):
    """The API does not answer: the test cannot run."""


# -- helpers ------------------------------------------------------------------------------
def iso_ms(value: str | None) -> int | None:
    if not value:
        return None
    return round(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def headers(args: argparse.Namespace) -> dict[str, str]:
    return {"X-API-Key": args.api_key} if args.api_key else {}


def upload_form(u: Upload, tag: str, name: str, data: bytes) -> aiohttp.FormData:
    """The multipart body of one upload (a FormData is consumed by the request that sends it)."""
    form = aiohttp.FormData()
    form.add_field("product_id", u.product_id)
    form.add_field("name", f"Load test product {u.index}")
    form.add_field("description", f"load test upload of {name}")
    form.add_field("metadata", json.dumps({"source": "load_test", "run": tag, "photo": name}))
    form.add_field("image_file", data, filename=name,
                   content_type=mimetypes.guess_type(name)[0] or "application/octet-stream")
    return form


async def fetch(session: aiohttp.ClientSession, method: str, url: str, **kwargs) -> tuple[int, bytes]:
    """Send one request and read the whole answer: (status, body)."""
    async with session.request(method, url, **kwargs) as resp:
        return resp.status, await resp.read()


# -- phase 1: uploads ---------------------------------------------------------------------
async def upload_all(run: Run, session: aiohttp.ClientSession, photos: list[tuple[str, bytes]]) -> None:
    args = run.args
    tag = uuid.uuid4().hex[:8]
    run.uploads = [Upload(i, f"lt-{tag}-{i:06d}", photos[i % len(photos)][0]) for i in range(args.requests)]
    todo = iter(run.uploads)
    bar = tqdm(total=args.requests, desc="upload", unit="req", file=sys.stderr, dynamic_ncols=True)

    async def one(u: Upload) -> None:
        name, data = photos[u.index % len(photos)]
        form = upload_form(u, tag, name, data)
        u.sent_wall, u.sent_perf = time.time(), time.perf_counter()
        try:
            status, body = await fetch(session, "POST", args.api + UPLOAD_PATH, data=form)
        except Exception as exc:  # aiohttp.ClientError, time-outs, refused connections, protocol errors
            u.answered_perf, u.answered_wall = time.perf_counter(), time.time()
            u.error = f"{exc.__class__.__name__}: {exc}"[:300]
            return
        u.answered_perf, u.answered_wall = time.perf_counter(), time.time()
        u.status_code = status
        if 200 <= status < 300:
            try:
                u.job_id = json.loads(body)["job_id"]
            except (ValueError, KeyError, TypeError) as exc:
                u.error = f"2xx without a job_id: {exc}"
        else:
            u.error = body.decode(errors="replace")[:300]

    errors = 0

    async def client_loop() -> None:
        nonlocal errors
        for u in todo:  # the shared iterator bounds the total to --requests
            await one(u)
            bar.update(1)
            if not u.ok:
                errors += 1
                bar.set_postfix(errors=errors)

    run.t0_wall, run.t0_perf = time.time(), time.perf_counter()
    try:
        await asyncio.gather(*(client_loop() for _ in range(min(args.concurrency, args.requests))))
    finally:
        bar.close()
    run.upload_done_perf = time.perf_counter()


# -- phase 2: wait for the jobs -------------------------------------------------------------
async def wait_all(run: Run, session: aiohttp.ClientSession) -> None:
    args = run.args
    pending = deque(u for u in run.uploads if u.job_id)  # send order = queue order
    bar = tqdm(total=len(pending), desc="index ", unit="job", file=sys.stderr, dynamic_ncols=True)
    sem = asyncio.Semaphore(args.pollers)
    window, min_w, max_w = 16, 4, 512
    deadline = time.monotonic() + args.timeout

    async def poll(u: Upload) -> bool:
        async with sem:
            try:
                status, body = await fetch(session, "GET", args.api + STATUS_PATH + u.job_id)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                run.poll_errors += 1
                return False
            finally:
                run.polls += 1
        if status != 200:
            run.poll_errors += 1
            return False
        doc = json.loads(body)
        u.retry_count = int(doc.get("retry_count") or 0)
        if doc.get("status") not in TERMINAL:
            return False
        u.final = doc["status"]
        u.seen_perf = time.perf_counter()
        u.created_ms, u.updated_ms = iso_ms(doc.get("created_at")), iso_ms(doc.get("updated_at"))
        u.error_message = doc.get("error_message")
        return True

    try:
        while pending and time.monotonic() < deadline:
            head = list(itertools.islice(pending, window))
            done = await asyncio.gather(*(poll(u) for u in head))
            finished = {id(u) for u, d in zip(head, done) if d}
            if finished:
                pending = deque(u for u in pending if id(u) not in finished)
                bar.update(len(finished))
                failed = sum(1 for u in run.uploads if u.final == "failed")
                if failed:
                    bar.set_postfix(failed=failed)
            # Grow the window while most of it keeps finishing, shrink it when little does:
            # the poll rate follows the completion rate.
            if len(finished) >= len(head) * 3 / 4:
                window = min(window * 2, max_w)
            elif len(finished) < len(head) / 4:
                window = max(window // 2, min_w)
            if pending and len(finished) < len(head):  # a full window: more are likely done behind it
                await asyncio.sleep(args.poll_interval)
    finally:
        bar.close()
    run.wait_done_perf = time.perf_counter()


# -- report ---------------------------------------------------------------------------------
def clocks_agree(run: Run) -> bool:
    """True when the server's created_at falls inside each upload's send..answer interval."""
    jobs = [u for u in run.uploads if u.created_ms is not None]
    if not jobs:
        return False
    inside = sum(1 for u in jobs
                 if u.sent_wall - CLOCK_SLACK_S <= u.created_ms / 1000 <= u.answered_wall + CLOCK_SLACK_S)
    return inside == len(jobs)


def completion_offsets(run: Run, server_clock: bool) -> dict[int, float]:
    """Seconds from the start of the run to each job's completion, by upload index."""
    out = {}
    for u in run.uploads:
        if u.final != "completed":
            continue
        if server_clock and u.updated_ms is not None:
            out[u.index] = u.updated_ms / 1000 - run.t0_wall
        elif u.seen_perf is not None:
            out[u.index] = u.seen_perf - run.t0_perf
    return out


def build_report(run: Run) -> dict:
    args = run.args
    ok = [u for u in run.uploads if u.ok]
    bad = [u for u in run.uploads if not u.ok]
    codes = Counter(str(u.status_code) if u.status_code is not None else "exception" for u in run.uploads)
    upload_s = run.upload_done_perf - run.t0_perf
    report: dict = {
        "api": args.api,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "images": len(set(u.photo for u in run.uploads)),
        "errors": len(bad),
        "status_counts": dict(sorted(codes.items())),
        "error_examples": [{"product_id": u.product_id, "status": u.status_code, "error": u.error}
                           for u in bad[:10]],
        "enqueue_ms": summary_ms([u.latency_s for u in ok]),
        "upload_seconds": round(upload_s, 3),
        "uploads_per_s": round(len(ok) / upload_s, 2) if upload_s > 0 else None,
        "waited": bool(args.wait),
    }
    if not args.wait:
        return report
    jobs = [u for u in ok if u.job_id]
    completed = [u for u in jobs if u.final == "completed"]
    failed = [u for u in jobs if u.final == "failed"]
    unfinished = [u for u in jobs if u.final is None]
    server_clock = clocks_agree(run)
    ends = completion_offsets(run, server_clock)
    if server_clock:
        e2e = [u.updated_ms / 1000 - u.sent_wall for u in completed]
    else:
        e2e = [u.seen_perf - u.sent_perf for u in completed]
    span = max(ends.values()) if ends else 0.0
    report.update({
        "e2e_ms": summary_ms(e2e),
        "e2e_source": "server updated_at (same clock as this client)" if server_clock
                      else f"first poll that saw the job completed (poll interval {args.poll_interval}s)",
        "e2e_poll_ms": summary_ms([u.seen_perf - u.sent_perf for u in completed]),
        "server_ms": summary_ms([(u.updated_ms - u.created_ms) / 1000 for u in completed
                                 if u.updated_ms is not None and u.created_ms is not None]),
        "indexed_per_s": round(len(completed) / span, 2) if span > 0 else None,
        "run_seconds": round(span, 3),
        "jobs": {"completed": len(completed), "failed": len(failed), "unfinished": len(unfinished),
                 "retried": sum(1 for u in jobs if u.retry_count)},
        "failed_jobs": len(failed),
        "failed_job_examples": [{"job_id": u.job_id, "product_id": u.product_id, "photo": u.photo,
                                 "error_message": u.error_message} for u in failed[:20]],
        "unfinished_jobs": len(unfinished),
        "polls": run.polls,
        "poll_errors": run.poll_errors,
    })
    return report


def print_summary(report: dict) -> None:
    def fmt(d: dict) -> str:
        return "  ".join(f"{k} {v:.1f}" if isinstance(v, (int, float)) else f"{k} -"
                         for k, v in d.items())

    print()
    print(f"API            {report['api']}")
    print(f"uploads        {report['requests']} at concurrency {report['concurrency']} "
          f"({report['images']} distinct photos) in {report['upload_seconds']:.2f}s "
          f"= {report['uploads_per_s']} uploads/s")
    print(f"HTTP status    {report['status_counts']}  errors {report['errors']}")
    for e in report["error_examples"][:3]:
        print(f"  e.g. {e['product_id']}: {e['status']} {e['error']}")
    print(f"enqueue ms     {fmt(report['enqueue_ms'])}")
    if report["waited"]:
        j = report["jobs"]
        print(f"jobs           completed {j['completed']}  failed {j['failed']}  unfinished {j['unfinished']}"
              f"  retried {j['retried']}")
        for f in report["failed_job_examples"][:3]:
            print(f"  e.g. {f['job_id']} ({f['photo']}): {f['error_message']}")
        print(f"end to end ms  {fmt(report['e2e_ms'])}   [{report['e2e_source']}]")
        print(f"in service ms  {fmt(report['server_ms'])}   [created_at -> updated_at]")
        print(f"indexed        {report['indexed_per_s'] or '-'} jobs/s over {report['run_seconds']:.2f}s "
              f"(first upload sent -> last job completed); {report['polls']} status polls")


def plot(run: Run, report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    lat = [u.latency_s * 1000 for u in run.uploads if u.ok]
    if lat:
        ax1.hist(lat, bins=min(60, max(10, len(lat) // 10)), color="#4C78A8")
        for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            v = report["enqueue_ms"][q]
            ax1.axvline(v, color="#E45756", linestyle=style, label=f"{q} {v:.1f} ms")
        ax1.legend()
    ax1.set_title(f"Upload (enqueue) latency, concurrency {report['concurrency']}")
    ax1.set_xlabel("ms")
    ax1.set_ylabel("requests")

    sent = sorted(u.answered_perf - run.t0_perf for u in run.uploads if u.ok)
    ax2.step(sent, range(1, len(sent) + 1), where="post", label="uploads accepted (202)")
    if report["waited"]:
        ends = sorted(completion_offsets(run, clocks_agree(run)).values())
        ax2.step(ends, range(1, len(ends) + 1), where="post", label="jobs completed")
        failed = sorted(u.seen_perf - run.t0_perf for u in run.uploads if u.final == "failed")
        if failed:
            ax2.step(failed, range(1, len(failed) + 1), where="post", label="jobs failed", color="#E45756")
    ax2.set_title("Over time")
    ax2.set_xlabel("seconds since the first upload")
    ax2.set_ylabel("cumulative count")
    ax2.legend(loc="lower right")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main -----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--api", default="http://localhost:8000", help="base URL of the API (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=100, help="uploads in flight (default %(default)s)")
    p.add_argument("--requests", type=int, default=1000, help="uploads to send (default %(default)s)")
    p.add_argument("--images", type=Path,
                   help=f"folder of photos to upload, cycled (default {SAMPLES}, else {FALLBACK})")
    p.add_argument("--wait", action="store_true", help="wait for every job and measure end-to-end latency")
    p.add_argument("--json", type=Path, help="write the report as JSON here")
    p.add_argument("--plot", type=Path, help="write a PNG: latency histogram and completions over time")
    p.add_argument("--api-key", help="X-API-Key for the uploads")
    p.add_argument("--timeout", type=float, default=600,
                   help="seconds --wait waits for the jobs to finish (default %(default)s)")
    p.add_argument("--request-timeout", type=float, default=60,
                   help="seconds one HTTP request may take (default %(default)s)")
    p.add_argument("--poll-interval", type=float, default=0.2,
                   help="seconds between rounds of status polls (default %(default)s)")
    p.add_argument("--pollers", type=int, default=16, help="status polls in flight (default %(default)s)")
    args = p.parse_args(argv)
    for name in ("concurrency", "requests", "pollers"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.timeout <= 0 or args.request_timeout <= 0 or args.poll_interval <= 0:
        p.error("--timeout, --request-timeout and --poll-interval must be positive")
    args.api = args.api.rstrip("/")
    return args


async def run_test(args: argparse.Namespace, photos: list[tuple[str, bytes]]) -> Run:
    run = Run(args)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers(args),
                                     timeout=aiohttp.ClientTimeout(total=args.request_timeout)) as session:
        await check_health(args, session)
        await upload_all(run, session, photos)
        if args.wait:
            await wait_all(run, session)
    return run


async def check_health(args: argparse.Namespace, session: aiohttp.ClientSession) -> None:
    try:
        async with session.get(args.api + "/healthz", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            resp.raise_for_status()
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        reason = f"{exc.__class__.__name__}: {exc}"  # aiohttp's messages alone can be bare (a URL, or empty)
        raise Unreachable(f"load_test: the API at {args.api} does not answer /healthz: {reason}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = upload_photos(args.images)
    if not paths:
        where = args.images or f"{SAMPLES} or {FALLBACK}"
        print(f"load_test: no photos ({', '.join(IMAGE_SUFFIXES)}) in {where}", file=sys.stderr)
        return 2
    photos = [(p.name, p.read_bytes()) for p in paths]
    try:
        run = asyncio.run(run_test(args, photos))
    except Unreachable as exc:
        print(exc, file=sys.stderr)
        return 2
    report = build_report(run)
    report["photos_dir"] = str(paths[0].parent)
    print_summary(report)
    if args.json:
        write_json(args.json, report)
        print(f"report         {args.json}")
    if args.plot:
        plot(run, report, args.plot)
        print(f"plot           {args.plot}")
    failed = report["errors"] or report.get("failed_jobs") or report.get("unfinished_jobs")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
