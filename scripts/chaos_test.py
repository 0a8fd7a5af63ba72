#!/usr/bin/env python3
"""Chaos test: kill workers and Redis while photos are uploaded; prove no job is lost.

Starts, on loopback only and in a temporary folder:

* a Redis-compatible server with an append-only file (``LocalRedis(dir, aof=True)``, with
  ``--appendfsync everysec`` (default) or ``always``),
* the API (``uvicorn api.main:app``) on a free port,
* one worker at a time (``python -m batcher``) with embedded Qdrant in one folder. Embedded
  Qdrant lets one process open a folder, so a worker is always dead (SIGKILL, then waited
  for: the kernel releases its file lock) before the next one opens the store. To keep the
  gap short, the next worker is started ahead as a *warm spare*: a process that has already
  imported torch/open_clip/qdrant_client and waits for a ``go`` line on stdin before calling
  ``batcher.__main__.main`` with its own, new ``--worker-id``. If the store is still locked
  the worker exits 2 with a clear message (``batcher/store.py``), and is started again.

Then it uploads ``--uploads`` real photos (the ``index`` rows of manifest.tsv in
tests/data/corpus/, else in ../shared/corpus/, cycled) with ``--concurrency`` concurrent httpx
clients; about a fifth of the uploads re-index a product id already used. The uploads come in
portions, one at the start and one at each chaos event below, in bursts of ``--concurrency``,
so that every worker gets fresh work and holds claimed jobs when it is killed. Uploaders retry
503s, 429s and connection errors; only uploads answered 202 count as accepted jobs. The chaos
events, in order:

* SIGKILL the worker (after it has run a few seconds and holds claimed jobs), and start a
  new one under a NEW worker id: the dead worker's processing list comes back only through
  the new worker's reaper, once the dead heartbeat expires (WORKER_HEARTBEAT_TTL=2s);
* kill Redis once (SIGKILL) and restart it on the same AOF folder and port. A SIGKILL loses
  what Redis had not yet written to its AOF: with ``appendfsync always`` nothing it answered;
  with ``everysec`` the writes of up to 2 s while a slow background fsync postpones the
  write (see scripts/chaos_loss.py). ``--redis-kill friendly`` (default) kills at a moment
  chosen here: uploads are paused, in-flight uploads finish, 1.5 s pass, ``WAITAOF 1 0`` waits
  until the local AOF is fsynced, and only then SIGKILL. ``--redis-kill unfriendly`` kills at a
  seeded random moment while uploads flow: its portion of uploads (three times the others) is
  released and Redis is SIGKILLed once a random quarter to half of it has been answered 202,
  with no pause and no WAITAOF. The worker is not paused. Uploads go on while Redis is down
  (the API must answer 503, which the uploaders retry); the running worker must ride out the
  outage;
* SIGTERM a worker while it holds claimed jobs: it must exit 0 within its grace period,
  with its processing list empty (unstarted jobs returned) and its heartbeat gone.

Version races (``--races`` at each portion's release, on products of their own, amid the
kills): an undecodable photo fails and its manual retry races a good re-upload of the product
(202, then it fails again or ends superseded, or 409 ``superseded``); a DELETE races the job of
the product's only upload, still queued or in progress (it must answer 200 and the product
must stay deleted); a DELETE and a re-upload are sent at once after an upload (the newer
version wins). The API gives every upload and delete its version; the checks below compare
each product's point with its newest event.

Amid the events, queries the API would refuse (a float filter, odd keys, a limit that is no
number, not JSON) are pushed straight onto the query lane; once the uploads are done they are
pushed again, and the last worker must answer every one (an error reply counts) and then a
plain search through the API (``hostile_answered`` in the summary).

Finally a last worker drains everything and is stopped with SIGTERM; then the checks:

* every accepted job is ``completed`` or ``superseded`` (GET /api/v1/queue/status/<id>); the
  undecodable photos of the races may also be ``failed``. An accepted job whose record is
  gone or in no such state is ``lost``; ``lost_at_redis_kill`` counts those answered 202
  in the Redis kill window (2.5 s before the kill until the restart; ``at_risk`` counts all
  202s of that window). A loss fails the run, except, after an unfriendly kill with everysec,
  a loss within the window: that one is measured and reported;
* the queue, the delayed set and every processing list are empty, the failed set holds the
  failed undecodable photos only; no worker is left registered and no other image key is left;
  the byte budget counts exactly the bytes of the failed photos' images, kept for a retry;
* the counters (GET /api/v1/queue/stats, and the raw stats hash) equal the job records
  found by scanning the job hashes;
* the embedded Qdrant folder, opened after the last worker exited, holds exactly one point
  per product id with a job record, at ``point_id(product_id)`` (``missing_points`` counts
  those without one). A product whose every accepted job was lost may still have the point a
  worker wrote before Redis forgot the job (``points_of_lost``); any other point fails;
* last upload wins, a delete sticks: each product's point holds the version, image sha256 and
  job id of its newest accepted upload, whose job is ``completed``; a product whose newest
  event is a DELETE has no point (``deleted``); ``stale_points`` counts the products that
  differ. A ``superseded`` job is never its product's newest upload.

The API's Redis clients retry a call once after a connection error (a pooled connection
opened before the Redis restart fails once). The status reads of the final check retry a 503
too, and count it as ``late_503``: a 503 to a status read long after the restart.

A job record that no 202 answered (an upload whose answer was lost to a time-out and was
then retried) is reported as ``extra``: allowed, but it must be completed too and its
product counts. MAX_ATTEMPTS is raised to 20 for this run: the deliberate kill rate is far
above a real one, and a job reaped from several killed workers must not fail as a poison pill.

Prints ONE summary line on stdout, e.g.
``chaos: accepted=340 completed=310 superseded=25 ... stale_points=0 OK``; progress goes to stderr.
Exit status 0 only when every check passed; 1 on a loss not allowed above, a duplicate, a
mismatch or a time-out.

  .venv/bin/python scripts/chaos_test.py            # 300 uploads, 5 worker kills
  .venv/bin/python scripts/chaos_test.py --short    # 60 uploads, 2 kills: for the test suite
  .venv/bin/python scripts/chaos_test.py --redis-kill unfriendly --appendfsync always
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The test photos: in the repository, else the shared corpus beside it (same layout).
CORPUS = next((d for d in (ROOT / "tests" / "data" / "corpus", ROOT.parent / "shared" / "corpus")
               if (d / "manifest.tsv").is_file()), ROOT / "tests" / "data" / "corpus")
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from chaos_loss import kill_window, loss_failures, split_lost  # noqa: E402
from local_redis import LocalRedis, free_port  # noqa: E402

PY = sys.executable
T0 = time.monotonic()
UPLOAD_PATH = "/api/v1/index-product-with-image"
HEARTBEAT_TTL = 2.0
SHUTDOWN_GRACE = 20.0
SPARE_WARM = "chaos: spare warm"
RACES = ("retry", "delete", "reupload")  # Chaos.race_<kind>
BAD_PHOTO = ROOT / "tests" / "data" / "corpus" / "hostile" / "truncated_jpeg.jpg"  # passes the API, fails to decode

# A worker started ahead of time: the slow imports happen while the previous worker still
# runs; on "go" it runs the real ``python -m batcher`` entry point with the given flags.
SPARE_CODE = f"""
import sys
import torch, open_clip, qdrant_client  # noqa: the slow part of a worker start
import batcher.app, batcher.__main__
print({SPARE_WARM!r}, flush=True)
if sys.stdin.readline().strip() != "go":
    sys.exit(3)
sys.exit(batcher.__main__.main(sys.argv[1:]))
"""

# Every child process, so that the finally in main() can end them all.
CHILDREN: list[subprocess.Popen] = []


def log(msg: str) -> None:
    print(f"[chaos {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def index_photos() -> list[tuple[str, bytes]]:
    with open(CORPUS / "manifest.tsv") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["expect"] == "index"]
    if not rows:
        raise SystemExit(f"no 'index' photos listed in {CORPUS / 'manifest.tsv'}")
    return [(Path(r["file"]).name, (CORPUS / r["file"]).read_bytes()) for r in rows]


@dataclass(frozen=True)
class Upload:
    index: int
    product_id: str
    filename: str
    data: bytes


def plan_uploads(n: int, seed: int, reindex: float) -> list[Upload]:
    """``n`` uploads of the corpus photos, cycled; a fraction re-index an earlier product id."""
    rng = random.Random(seed)
    photos = index_photos()
    products: list[str] = []
    plan = []
    for i in range(n):
        if products and rng.random() < reindex:
            pid = rng.choice(products)
        else:
            pid = f"chaos-{seed}-{len(products):05d}"
            products.append(pid)
        name, data = photos[i % len(photos)]
        plan.append(Upload(i, pid, name, data))
    return plan


def portion_starts(n: int, weights: list[int]) -> list[int]:
    """Where each portion of ``n`` uploads starts, the portions sized in proportion to ``weights``."""
    total, starts, acc = sum(weights), [], 0
    for w in weights:
        starts.append(acc * n // total)
        acc += w
    return starts


def plan_events(kills: int) -> list[str]:
    """Worker kills with one Redis kill after the first and one SIGTERM before the last."""
    events = ["kill"] * kills
    events.insert(min(1, len(events)), "redis")
    events.insert(max(len(events) - 1, 0), "sigterm")
    return events


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without any clipq setting of the caller's, plus ``extra``."""
    ours = ("WORKER_", "CLIP_", "QDRANT_", "RETRY_", "API_", "MAX_", "SEARCH_", "CORS_", "REDIS_",
            "QUEUE_", "JOB_", "FAILED_", "LOG_LEVEL", "UPLOAD_", "ALLOW_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def spawn(args: list[str], log_path: Path, env: dict[str, str], stdin=None) -> subprocess.Popen:
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdin=stdin, stdout=out, stderr=subprocess.STDOUT)
    CHILDREN.append(proc)
    return proc


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class WorkerProc:
    """One worker process, started as a warm spare."""

    def __init__(self, chaos: "Chaos", worker_id: str) -> None:
        self.worker_id = worker_id
        self.log_path = chaos.dir / f"worker-{worker_id}.log"
        s = chaos.args
        self.proc = spawn([PY, "-c", SPARE_CODE, "--worker-id", worker_id, "--metrics-port", "0",
                           "--max-batch-size", str(s.batch_size), "--max-wait-ms", "50"],
                          self.log_path, chaos.worker_env, stdin=subprocess.PIPE)
        self.ready_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def warm(self) -> bool:
        try:
            return SPARE_WARM in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def go(self) -> None:
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
        self.proc.wait(30)


@dataclass
class Counters:
    accepted: list[tuple[str, str]] = field(default_factory=list)  # (job_id, product_id)
    accepted_at: dict[str, float] = field(default_factory=dict)    # job_id: when its 202 came
    api_503: int = 0
    conn_errors: int = 0
    worker_kills: int = 0
    orphaned: int = 0            # jobs in a killed worker's processing list at kill time
    reap_s: list[float] = field(default_factory=list)
    redis_restarts: int = 0
    redis_killed_at: float | None = None
    redis_back_at: float | None = None
    inflight_at_kill: int = 0     # upload requests in flight when Redis was SIGKILLed
    sigterm_exit: int | None = None
    sigterm_held: int = 0         # jobs the SIGTERMed worker held when signalled
    final_exit: int | None = None
    lock_retries: int = 0
    late_503: int = 0             # 503s to status reads long after the Redis restart
    # versions (see Chaos.version_races): the last upload of a product wins, a delete sticks
    versions: dict[str, int] = field(default_factory=dict)  # job_id: the version its 202 gave
    shas: dict[str, str] = field(default_factory=dict)      # job_id: sha256 of its image
    deletes: list[tuple[str, int]] = field(default_factory=list)  # (product_id, version) answered
    doomed: set[str] = field(default_factory=set)            # jobs of undecodable photos: fail on purpose
    races: dict[str, int] = field(default_factory=dict)      # outcome of each raced retry and delete
    hostile_sent: int = 0         # queries the API would refuse, pushed straight onto the lane
    hostile_answered: int = 0     # ... that got a reply (an error reply counts)


class Chaos:
    def __init__(self, args: argparse.Namespace, directory: Path) -> None:
        from batcher.queue.keys import Keys

        self.args = args
        self.dir = directory
        self.keys = Keys("clipq")
        self.rng = random.Random(args.seed)
        self.c = Counters()
        self.failures: list[str] = []
        self.redis_server = LocalRedis(directory / "redis", aof=True, appendfsync=args.appendfsync)
        self.qdrant_path = directory / "qdrant"
        self.api_url = ""
        self.worker_env: dict[str, str] = {}
        self.api_proc: subprocess.Popen | None = None
        self.current: WorkerProc | None = None
        self.spare: WorkerProc | None = None
        self.n_workers = 0
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.released: list[asyncio.Event] = []
        self.released_at: dict[int, float] = {}
        self.first: list[int] = []  # where each portion of the plan starts
        self.planned = 0
        self.bg: list[asyncio.Task] = []
        self.r = None  # redis.asyncio client

    def fail(self, reason: str) -> None:
        log("FAILURE: " + reason)
        self.failures.append(reason)

    # -- processes -------------------------------------------------------------------------
    def start_services(self) -> None:
        self.redis_server.start()
        log(f"redis on {self.redis_server.url} (AOF in {self.redis_server.directory})")
        base = {"REDIS_URL": self.redis_server.url}
        self.worker_env = clean_env(base | {
            "CLIP_MODEL": "clipq-tiny", "CLIP_PRETRAINED": "none", "CLIP_DEVICE": "cpu",
            "QDRANT_PATH": str(self.qdrant_path), "WORKER_HEARTBEAT_TTL": str(HEARTBEAT_TTL),
            "WORKER_POLL_INTERVAL": "0.5", "WORKER_DECODE_THREADS": "2",
            "WORKER_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE), "RETRY_BACKOFF_BASE_MS": "50",
            "RETRY_BACKOFF_MAX_MS": "500", "MAX_ATTEMPTS": "20", "LOG_LEVEL": "INFO"})
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        self.api_proc = spawn([PY, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port),
                               "--log-level", "warning"], self.dir / "api.log",
                              clean_env(base | {"REDIS_TIMEOUT": "5", "LOG_LEVEL": "WARNING",
                                                 "ALLOW_ANONYMOUS": "true"}))

    def new_redis_client(self):
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(self.redis_server.url, socket_timeout=5, socket_connect_timeout=2)

    def new_spare(self) -> WorkerProc:
        self.n_workers += 1
        w = WorkerProc(self, f"chaos-w{self.n_workers}-{uuid.uuid4().hex[:4]}")
        log(f"spare worker {w.worker_id} starting (pid {w.proc.pid})")
        return w

    async def start_worker(self, prewarm_next: bool) -> WorkerProc:
        """Turn the warm spare (or a new process) into the running worker; wait for its heartbeat."""
        for attempt in range(4):
            w, self.spare = self.spare or self.new_spare(), None
            if not await self.until(w.warm, 90, lambda: not w.alive):
                raise RuntimeError(f"spare {w.worker_id} did not warm up:\n{tail(w.log_path)}")
            w.go()
            hb = self.keys.heartbeat(w.worker_id)
            ok = await self.until_async(lambda: self._exists(hb), 60, lambda: not w.alive)
            if ok:
                w.ready_at = time.monotonic()
                self.current = w
                log(f"worker {w.worker_id} is ready")
                if prewarm_next:
                    self.spare = self.new_spare()
                return w
            w.proc.wait(10)
            text = tail(w.log_path, 40)
            if w.proc.returncode == 2 and "already opened" in text:
                self.c.lock_retries += 1
                log(f"worker {w.worker_id}: the Qdrant folder is still locked; starting again")
                await asyncio.sleep(1)
                continue
            raise RuntimeError(f"worker {w.worker_id} did not start (rc={w.proc.returncode}):\n{text}")
        raise RuntimeError("the Qdrant folder stayed locked")

    async def _exists(self, key: str) -> bool:
        try:
            return bool(await self.r.exists(key))
        except Exception:
            return False

    async def until(self, cond, timeout_s: float, abort=lambda: False, step: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if cond():
                return True
            if abort():
                return bool(cond())
            await asyncio.sleep(step)
        return bool(cond())

    async def until_async(self, cond, timeout_s: float, abort=lambda: False, step: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await cond():
                return True
            if abort():
                return bool(await cond())
            await asyncio.sleep(step)
        return bool(await cond())

    async def held(self, w: WorkerProc) -> int:
        try:
            return int(await self.r.llen(self.keys.processing(w.worker_id)))
        except Exception:
            return 0

    # -- uploads ---------------------------------------------------------------------------
    def release(self, portion: int) -> None:
        """Let the uploads of ``portion`` go (each portion once; later ones wait)."""
        if portion < len(self.released) and not self.released[portion].is_set():
            self.released_at[portion] = time.monotonic()
            self.released[portion].set()

    async def upload_all(self, plan: list[Upload]) -> None:
        """Upload ``plan`` in the portions ``self.first``, each in bursts of ``--concurrency`` 0.25 s apart."""
        import httpx

        a, first = self.args, self.first
        portions = len(first)
        todo: asyncio.Queue[Upload] = asyncio.Queue()
        for up in plan:
            todo.put_nowait(up)
        limits = httpx.Limits(max_connections=a.concurrency, max_keepalive_connections=a.concurrency)
        async with httpx.AsyncClient(base_url=self.api_url, timeout=30, limits=limits, trust_env=False) as client:
            async def uploader() -> None:
                while not todo.empty():
                    up = todo.get_nowait()
                    portion = max(p for p in range(portions) if first[p] <= up.index)
                    await self.released[portion].wait()
                    due = self.released_at[portion] + (up.index - first[portion]) // a.concurrency * 0.25
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    await self.upload_one(client, up)

            await asyncio.gather(*(uploader() for _ in range(a.concurrency)))
        log(f"uploads done: {len(self.c.accepted)} accepted so far (version races included), {len(plan)} planned")

    async def upload_one(self, client, up: Upload) -> str | None:
        import httpx

        form = {"product_id": up.product_id, "name": f"Chaos product {up.product_id}",
                "description": f"photo {up.filename}, upload {up.index}",
                "metadata": json.dumps({"upload": up.index, "file": up.filename})}
        files = {"image_file": (up.filename, up.data, "application/octet-stream")}
        deadline = time.monotonic() + self.args.upload_deadline
        backoff = 0.1
        for _ in range(500):
            await self.gate.wait()
            self.in_flight += 1
            status, body = None, ""
            try:
                resp = await client.post(UPLOAD_PATH, data=form, files=files)
                status, body = resp.status_code, resp.text
            except httpx.TransportError:
                self.c.conn_errors += 1
            finally:
                self.in_flight -= 1
            if status == 202:
                job_id = json.loads(body)["job_id"]
                self.c.accepted.append((job_id, up.product_id))
                self.c.accepted_at[job_id] = time.monotonic()
                self.c.versions[job_id] = json.loads(body)["version"]
                self.c.shas[job_id] = hashlib.sha256(up.data).hexdigest()
                return job_id
            if status is not None and status not in (429, 503):
                self.fail(f"upload {up.index} ({up.filename}): unexpected HTTP {status}: {body[:200]}")
                return
            self.c.api_503 += status == 503
            if time.monotonic() > deadline:
                self.fail(f"upload {up.index}: no 202 within {self.args.upload_deadline:.0f}s")
                return
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 1.0)
        self.fail(f"upload {up.index}: too many attempts")

    # -- versions: re-uploads racing retries and reaps, deletes racing queued uploads ---------
    async def version_races(self) -> None:
        """At the release of each portion of uploads (so amid the worker kills and the Redis
        kill), start ``--races`` races on products of their own, then wait for them all."""
        import httpx

        tasks = []
        async with httpx.AsyncClient(base_url=self.api_url, timeout=30, trust_env=False) as client:
            for portion, released in enumerate(self.released):
                await released.wait()
                for k in range(self.args.races):
                    kind = RACES[(portion + k) % len(RACES)]
                    pid = f"race-{self.args.seed}-{portion}-{k}"
                    tasks.append(asyncio.create_task(getattr(self, f"race_{kind}")(client, pid)))
            await asyncio.gather(*tasks)
        log(f"version races done: {self.c.races}")

    def race_photo(self, product_id: str) -> Upload:
        name, data = self.rng.choice(index_photos())
        return Upload(-1, product_id, name, data)

    async def race_retry(self, client, product_id: str) -> None:
        """An undecodable upload fails; its manual retry races a good re-upload of the product.
        The retry is 202 (then the job fails again, or ends superseded) or 409 superseded."""
        bad = await self.upload_one(client, Upload(-1, product_id, BAD_PHOTO.name, BAD_PHOTO.read_bytes()))
        if bad is None:
            return
        self.c.doomed.add(bad)
        if not await self.until_async(lambda: self.job_is(client, bad, "failed"), 60, step=0.2):
            log(f"race: job {bad} did not fail within 60 s; re-uploading anyway")
        await asyncio.gather(self.retry_job(client, bad, self.rng.uniform(0, 0.2)),
                             self.upload_one(client, self.race_photo(product_id)))

    async def race_delete(self, client, product_id: str) -> None:
        """A DELETE while the product's only upload is queued or in progress: it must stay deleted."""
        await self.upload_one(client, self.race_photo(product_id))
        await asyncio.sleep(self.rng.uniform(0, 0.3))
        await self.delete_product(client, product_id, must_find=True)

    async def race_reupload(self, client, product_id: str) -> None:
        """An upload, then a DELETE and a re-upload at once: the newer of the two wins."""
        await self.upload_one(client, self.race_photo(product_id))
        await asyncio.gather(self.delete_product(client, product_id, must_find=True),
                             self.upload_one(client, self.race_photo(product_id)))

    async def job_is(self, client, job_id: str, status: str) -> bool:
        try:
            resp = await client.get(f"/api/v1/queue/status/{job_id}")
        except Exception:
            return False
        return resp.status_code == 200 and resp.json()["status"] == status

    async def race_call(self, client, method: str, path: str, what: str):
        """``method path`` until an answer other than 503/504 or a lost connection (an outage,
        a worker being replaced); None after --upload-deadline. Counts 504s (no answer in time)."""
        import httpx

        deadline, timed_out = time.monotonic() + self.args.upload_deadline, 0
        while time.monotonic() < deadline:
            await self.gate.wait()
            try:
                resp = await client.request(method, path)
            except httpx.TransportError:
                resp = None
            if resp is not None and resp.status_code not in (503, 504):
                return resp, timed_out
            timed_out += resp is not None and resp.status_code == 504
            await asyncio.sleep(0.2 + 0.3 * random.random())
        self.fail(f"{what}: no answer but 503/504 within {self.args.upload_deadline:.0f}s")
        return None, timed_out

    def race_outcome(self, name: str) -> None:
        self.c.races[name] = self.c.races.get(name, 0) + 1

    async def retry_job(self, client, job_id: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)  # sometimes before the re-upload's 202, sometimes after
        resp, _ = await self.race_call(client, "POST", f"/api/v1/queue/retry/{job_id}", f"retry of {job_id}")
        if resp is None:
            return
        code = resp.json().get("error", {}).get("code") if resp.status_code == 409 else None
        if resp.status_code != 202 and code not in ("superseded", "job_not_failed"):
            self.fail(f"retry of {job_id}: HTTP {resp.status_code} {resp.text[:200]}")
        self.race_outcome(f"retry_{code or resp.status_code}")

    async def delete_product(self, client, product_id: str, must_find: bool) -> None:
        """DELETE until answered; with an upload of the product accepted before, only 200 is
        right (or 404 after a 504 whose delete had already happened)."""
        resp, timed_out = await self.race_call(client, "DELETE", f"/api/v1/products/{product_id}",
                                               f"DELETE {product_id}")
        if resp is None:
            return
        if resp.status_code not in (200, 404) or (must_find and resp.status_code == 404 and not timed_out):
            self.fail(f"DELETE {product_id} after an accepted upload: HTTP {resp.status_code} {resp.text[:200]}")
            return
        self.c.deletes.append((product_id, int(resp.json()["version"])))
        self.race_outcome(f"delete_{resp.status_code}")

    def newest(self) -> dict[str, tuple[int, str | None]]:
        """Per product, its newest accepted event by version: (version, job_id of an upload, or
        None for a delete). A 404 DELETE counts too: it came after every upload it did not see."""
        newest: dict[str, tuple[int, str | None]] = {}
        for job_id, pid in self.c.accepted:
            if job_id in self.c.versions and self.c.versions[job_id] > newest.get(pid, (0, None))[0]:
                newest[pid] = (self.c.versions[job_id], job_id)
        for pid, version in self.c.deletes:
            if version > newest.get(pid, (0, None))[0]:
                newest[pid] = (version, None)
        return newest

    def check_newest_points(self, statuses: dict[str, str], lost: set[str]) -> int:
        """Every product's point is its newest upload's (version, sha, job id); a product whose
        newest event is a delete has no point. Products of a lost job are not judged. Returns
        the number of products whose point is not what their newest event says."""
        from qdrant_client import QdrantClient

        from batcher.store import point_id

        newest = self.newest()
        judged = {pid: e for pid, e in newest.items() if pid not in lost}
        client = QdrantClient(path=str(self.qdrant_path))
        try:
            found = client.retrieve("products", [point_id(p) for p in judged], with_payload=True)
        finally:
            client.close()
        points = {p.payload["product_id"]: p.payload for p in found}
        wrong = []
        for pid, (version, job_id) in judged.items():
            p = points.get(pid)
            want = None if job_id is None else (version, self.c.shas[job_id], job_id)
            got = None if p is None else (p.get("version"), p.get("image_sha256"), p.get("job_id"))
            if got != want or (job_id is not None and statuses.get(job_id) != "completed"):
                wrong.append(f"{pid}: want {want} ({statuses.get(job_id)}), stored {got}")
        if wrong:
            self.fail(f"{len(wrong)} products do not hold their newest upload, e.g. {wrong[:3]}")
        product_of = dict(self.c.accepted)
        for job_id, status in statuses.items():
            if status == "superseded" and self.c.versions.get(job_id, 0) >= newest[product_of[job_id]][0]:
                self.fail(f"job {job_id} is superseded but is its product's newest upload")
        return len(wrong)

    # -- chaos events ----------------------------------------------------------------------
    async def wait_some_work(self, min_s: float, portion: int | None) -> WorkerProc:
        """Let the current worker run ``min_s`` seconds, release the uploads of ``portion``,
        then wait up to 5 s more until the worker holds claimed jobs."""
        w = self.current
        await asyncio.sleep(max(0.0, w.ready_at + min_s - time.monotonic()))
        if self.spare is not None:  # the next worker must be warm first, to keep the gap short
            await self.until(self.spare.warm, 90, lambda: not self.spare.alive)
        if portion is not None:
            self.release(portion)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and w.alive:
            if await self.held(w) > 0:
                break
            await asyncio.sleep(0.02)
        if not w.alive:
            self.fail(f"worker {w.worker_id} exited by itself (rc={w.proc.returncode}):\n{tail(w.log_path)}")
        return w

    async def event_kill(self, portion: int, last: bool) -> None:
        w = await self.wait_some_work(max(1.0, self.args.kill_every * self.rng.uniform(0.6, 1.4)), portion)
        w.kill()
        self.c.worker_kills += 1
        held = await self.held(w)
        self.c.orphaned += held
        log(f"SIGKILLed worker {w.worker_id} holding {held} claimed jobs")
        if held:
            self.bg.append(asyncio.create_task(self.watch_reap(w, time.monotonic())))
        await self.start_worker(prewarm_next=not last)

    async def watch_reap(self, w: WorkerProc, killed_at: float) -> None:
        key = self.keys.processing(w.worker_id)
        while True:
            try:
                if not await self.r.exists(key):
                    break
            except Exception:
                pass
            await asyncio.sleep(0.1)
        self.c.reap_s.append(time.monotonic() - killed_at)
        log(f"the jobs of dead worker {w.worker_id} were reaped {self.c.reap_s[-1]:.1f}s after the kill")

    async def event_redis(self, portion: int) -> None:
        w = await self.wait_some_work(1.0, None)
        if self.args.redis_kill == "friendly":
            total_before = await self.kill_redis_synced(w)
            self.release(portion)  # these uploads meet the outage: 503, retried
        else:
            total_before = await self.kill_redis_mid_flow(w, portion)
        await self.probe_outage()
        await asyncio.sleep(self.args.redis_down)
        await self.restart_redis(w, total_before)

    async def kill_redis_synced(self, w: WorkerProc) -> int:
        """The friendly kill: pause uploads, let in-flight ones finish, wait 1.5 s and for
        ``WAITAOF`` (the AOF fsynced), then SIGKILL. Uploads resume while Redis is down."""
        import redis

        self.gate.clear()
        if not await self.until(lambda: self.in_flight == 0, 30):
            self.fail("uploads did not pause for the Redis kill")
        await asyncio.sleep(1.5)
        try:
            await self.r.set("chaos:aof-marker", str(time.time()))
            await self.r.execute_command("WAITAOF", 1, 0, 3000)
        except redis.ResponseError as exc:  # a server without WAITAOF: the 1.5 s above must do
            log(f"WAITAOF not available ({exc}); relying on the 1.5 s pause")
        total_before = await self.kill_redis(w)
        self.gate.set()
        return total_before

    async def kill_redis_mid_flow(self, w: WorkerProc, portion: int) -> int:
        """The unfriendly kill: release the uploads of ``portion`` and SIGKILL Redis as soon as
        a seeded random number of them (a quarter to a half) has been answered 202, while the
        others are in flight. No pause, no wait for the AOF."""
        size = (self.first + [self.planned])[portion + 1] - self.first[portion]
        after = self.rng.randint(max(1, size // 4), max(1, size // 2))
        start = len(self.c.accepted)
        self.release(portion)
        if not await self.until(lambda: len(self.c.accepted) - start >= after, 60, step=0.002):
            self.fail(f"only {len(self.c.accepted) - start} of {after} uploads answered before the Redis kill")
        return await self.kill_redis(w)

    async def kill_redis(self, w: WorkerProc) -> int:
        total_before = int(await self.r.hget(self.keys.stats, "total") or 0)
        self.c.inflight_at_kill = self.in_flight
        self.c.redis_killed_at = time.monotonic()
        self.redis_server.stop(kill=True)
        log(f"SIGKILLed redis ({self.args.redis_kill}, appendfsync {self.args.appendfsync}; jobs so far: "
            f"{total_before}, {self.in_flight} uploads in flight); worker {w.worker_id} keeps running")
        return total_before

    async def probe_outage(self) -> None:
        """With Redis down the API must answer 503 to readyz and to an upload."""
        import httpx

        async with httpx.AsyncClient(base_url=self.api_url, timeout=10, trust_env=False) as client:
            ready = await client.get("/readyz")
            up = Upload(-1, "chaos-probe", *index_photos()[0])
            probe = await client.post(UPLOAD_PATH, data={"product_id": up.product_id, "name": "probe"},
                                      files={"image_file": (up.filename, up.data)})
        if probe.status_code == 202:  # cannot be, but then it is an accepted job like any other
            self.c.accepted.append((probe.json()["job_id"], up.product_id))
            self.c.accepted_at[probe.json()["job_id"]] = time.monotonic()
        if ready.status_code != 503 or probe.status_code != 503:
            self.fail(f"with Redis down the API answered readyz={ready.status_code} upload={probe.status_code}")

    async def restart_redis(self, w: WorkerProc, total_before: int) -> None:
        await asyncio.to_thread(self.redis_server.start)
        self.c.redis_back_at = time.monotonic()
        self.c.redis_restarts += 1
        await self.r.aclose()
        self.r = self.new_redis_client()
        total_after = int(await self.r.hget(self.keys.stats, "total") or 0)
        log(f"redis restarted on the same AOF and port: {total_after} jobs")
        if total_after < total_before:
            why = f"redis lost jobs across the restart: {total_before} -> {total_after}"
            if self.args.redis_kill == "unfriendly" and self.args.appendfsync == "everysec":
                log(why + " (measured: everysec may lose the last writes)")
            else:
                self.fail(why)
        if not await self.until_async(lambda: self._exists(self.keys.heartbeat(w.worker_id)), 15,
                                      lambda: not w.alive):
            self.fail(f"worker {w.worker_id} did not come back after the Redis restart "
                      f"(rc={w.proc.poll()}):\n{tail(w.log_path)}")

    async def event_sigterm(self, portion: int) -> None:
        w = await self.wait_some_work(max(1.0, self.args.kill_every * self.rng.uniform(0.6, 1.4)), portion)
        self.c.sigterm_held = await self.held(w)
        w.proc.send_signal(signal.SIGTERM)
        t = time.monotonic()
        log(f"SIGTERM to worker {w.worker_id} holding {self.c.sigterm_held} claimed jobs")
        await self.until(lambda: not w.alive, SHUTDOWN_GRACE + 10)
        took = time.monotonic() - t
        if w.alive:
            w.kill()
            self.fail(f"worker {w.worker_id} still ran {took:.0f}s after SIGTERM")
        self.c.sigterm_exit = w.proc.returncode
        log(f"worker {w.worker_id} exited {w.proc.returncode} {took:.1f}s after SIGTERM")
        await self.check_clean_exit(w, took)
        await self.start_worker(prewarm_next=True)

    async def check_clean_exit(self, w: WorkerProc, took: float) -> None:
        k = self.keys
        if w.proc.returncode != 0 or took > SHUTDOWN_GRACE:
            self.fail(f"worker {w.worker_id}: exit {w.proc.returncode} after {took:.1f}s "
                      f"(grace {SHUTDOWN_GRACE:.0f}s):\n{tail(w.log_path)}")
        left = await self.r.llen(k.processing(w.worker_id))
        registered = await self.r.sismember(k.workers, w.worker_id)
        beating = await self.r.exists(k.heartbeat(w.worker_id))
        if left or registered or beating:
            self.fail(f"worker {w.worker_id} stopped with {left} jobs in its processing list, "
                      f"registered={bool(registered)}, heartbeat={bool(beating)}")

    # -- the run ---------------------------------------------------------------------------
    async def run(self, plan: list[Upload]) -> dict:
        import httpx

        self.start_services()
        self.r = self.new_redis_client()
        self.spare = self.new_spare()
        async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
            async def api_up() -> bool:
                try:
                    return (await client.get(f"{self.api_url}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            if not await self.until_async(api_up, 60, lambda: self.api_proc.poll() is not None, 0.2):
                raise RuntimeError(f"the API did not start:\n{tail(self.dir / 'api.log')}")
        log(f"API on {self.api_url}")
        events = plan_events(self.args.worker_kills)
        log("events: " + " ".join(events))
        self.gate.set()
        self.released = [asyncio.Event() for _ in range(len(events) + 1)]
        # an unfriendly Redis kill happens amid its portion: a bigger one keeps uploads flowing
        unfriendly, self.planned = self.args.redis_kill == "unfriendly", len(plan)
        self.first = portion_starts(len(plan), [1] + [3 if e == "redis" and unfriendly else 1 for e in events])
        self.release(0)  # a backlog for the first worker
        uploads = asyncio.create_task(self.upload_all(plan))
        races = asyncio.create_task(self.version_races())
        await self.start_worker(prewarm_next=True)
        for i, event in enumerate(events, 1):
            if i == 2:  # amid the kills: queries the API would refuse, straight onto the lane
                self.bg.append(asyncio.create_task(self.hostile_searches(final=False)))
            if event == "kill":
                await self.event_kill(i, last=i == len(events))
            elif event == "redis":
                await self.event_redis(i)
            else:
                await self.event_sigterm(i)
        await uploads
        await races
        await self.hostile_searches(final=True)  # the last worker's lane must still answer
        await self.drain()
        return await self.check()

    # -- hostile searches: the query lane must outlive them -------------------------------------
    async def hostile_searches(self, final: bool) -> None:
        """Push queries the API would refuse (a float filter, odd keys, a limit that is no
        number, not JSON) straight onto the lane. Mid-run a worker may be killed holding them,
        so missing replies are only counted; at the end (``final``) every one must be answered
        (an error reply counts) and a plain search through the API must answer 200."""
        from batcher.queue.messages import QueryRequest

        oddities = [{"filter": {"price": 1.5}}, {"filter": {"": "x"}}, {"filter": {"k" * 5000: 1}},
                    {"filter": {"a.b": [1, {"c": None}]}}, {"limit": "ten"}, {"filter": "no object"}]
        bodies = [json.loads(QueryRequest("text", text="hostile").to_json()) | odd for odd in oddities]
        try:
            await self.r.rpush(self.keys.requests, *map(json.dumps, bodies), "not json", '{"kind": 3}')
        except Exception as exc:  # noqa: BLE001  (Redis may be down mid-run)
            log(f"hostile searches not sent: {exc!r}")
            return
        self.c.hostile_sent += len(bodies)
        answered = await asyncio.gather(*(self.reply_seen(b["id"]) for b in bodies))
        self.c.hostile_answered += sum(answered)
        log(f"hostile searches: {sum(answered)} of {len(bodies)} answered ({'final' if final else 'mid-run'})")
        if final:
            if not all(answered):
                self.fail(f"the query lane left {answered.count(False)} hostile searches unanswered")
            await self.plain_search_answers()

    async def reply_seen(self, request_id: str) -> bool:
        try:
            return await self.r.blpop([self.keys.reply(request_id)], timeout=20) is not None
        except Exception:  # noqa: BLE001
            return False

    async def plain_search_answers(self) -> None:
        import httpx

        async with httpx.AsyncClient(base_url=self.api_url, timeout=30, trust_env=False) as client:
            resp = await client.post("/api/v1/search", json={"text": "a product photo", "limit": 3})
        if resp.status_code != 200 or not resp.json().get("results"):
            self.fail(f"after the hostile searches a plain search answered {resp.status_code}: {resp.text[:200]}")

    async def snapshot(self) -> dict:
        k, r = self.keys, self.r
        lists = [key async for key in r.scan_iter(match=f"{k.tag}:processing:*", count=1000)]
        held = {key.decode(): await r.llen(key) for key in lists}
        return {"queue": await r.llen(k.queue), "delayed": await r.zcard(k.delayed),
                "failed": await r.zcard(k.failed), "processing": {x: n for x, n in held.items() if n},
                "workers": sorted(m.decode() for m in await r.smembers(k.workers)),
                "stats": {f.decode(): int(v) for f, v in (await r.hgetall(k.stats)).items()}}

    async def drain(self) -> None:
        """Wait until the last worker has finished everything, then stop it with SIGTERM."""
        w = self.current
        log(f"draining with worker {w.worker_id}")
        last = {}
        while True:
            try:
                last = await self.snapshot()
            except Exception as exc:
                last = {"error": repr(exc)}
            s = last.get("stats", {})
            if (not last.get("error") and last["queue"] == 0 and last["delayed"] == 0
                    and not last["processing"] and last["workers"] == [w.worker_id]
                    and s.get("queued", 0) == 0 and s.get("processing", 0) == 0):
                break
            if not w.alive:
                raise RuntimeError(f"the last worker exited (rc={w.proc.returncode}) before the end:\n"
                                   f"{tail(w.log_path)}\nstate: {last}")
            await asyncio.sleep(0.25)
        log(f"drained: {last}")
        w.proc.send_signal(signal.SIGTERM)
        t = time.monotonic()
        await self.until(lambda: not w.alive, SHUTDOWN_GRACE + 10)
        if w.alive:
            w.kill()
        self.c.final_exit = w.proc.returncode
        await self.check_clean_exit(w, time.monotonic() - t)
        if self.spare is not None:
            self.spare.kill()
        await asyncio.gather(*self.bg)

    async def check(self) -> dict:
        import httpx

        k, r = self.keys, self.r
        # job records, by scanning the job hashes
        records: dict[str, tuple[str, str]] = {}
        async for key in r.scan_iter(match=f"{k.tag}:job:*", count=1000):
            status, pid = await r.hmget(key, "status", "product_id")
            records[key.decode().rsplit(":", 1)[1]] = ((status or b"").decode(), (pid or b"").decode())
        images = [key async for key in r.scan_iter(match=f"{k.tag}:image:*", count=1000)]
        snap = await self.snapshot()
        # every accepted job, through the API
        accepted = dict(self.c.accepted)
        statuses: dict[str, str] = {}
        async with httpx.AsyncClient(base_url=self.api_url, timeout=10, trust_env=False) as client:
            sem = asyncio.Semaphore(16)

            async def one(job_id: str) -> None:
                async with sem:
                    for _ in range(10):
                        resp = await client.get(f"/api/v1/queue/status/{job_id}")
                        if resp.status_code != 503:
                            break
                        self.c.late_503 += 1  # see the docstring: pooled connections of before the restart
                        await asyncio.sleep(0.2)
                    statuses[job_id] = resp.json()["status"] if resp.status_code == 200 else f"http-{resp.status_code}"

            await asyncio.gather(*(one(j) for j in accepted))
            api_stats = (await client.get("/api/v1/queue/stats")).json()
        completed = sum(s == "completed" for s in statuses.values())
        superseded = sum(s == "superseded" for s in statuses.values())
        losses = self.judge_losses(accepted, statuses)
        extra = sorted(set(records) - set(accepted))
        by_status = {s: sum(st == s for st, _ in records.values())
                     for s in ("queued", "processing", "completed", "failed", "superseded")}
        for j in extra:
            if records[j][0] not in ("completed", "superseded"):
                self.fail(f"extra job {j} (no 202 seen) is {records[j][0]}")
        # queue structures; only the undecodable photos of the version races stay failed
        for name in ("queue", "delayed"):
            if snap[name]:
                self.fail(f"{k.tag}:{name} still holds {snap[name]} jobs")
        failed_ok = {j for j in self.c.doomed if statuses.get(j) == "failed"}
        if {m.decode() for m in await r.zrange(k.failed, 0, -1)} != failed_ok:
            self.fail(f"{k.tag}:failed holds {snap['failed']} jobs; {len(failed_ok)} undecodable uploads failed")
        kept = [key for key in images if key.decode().rsplit(":", 1)[1] in failed_ok]
        kept_bytes = sum([await r.strlen(key) for key in kept])
        images = [key for key in images if key not in kept]
        if snap["processing"]:
            self.fail(f"processing lists not empty: {snap['processing']}")
        if snap["workers"]:
            self.fail(f"workers still registered: {snap['workers']}")
        if images:
            self.fail(f"{len(images)} image keys left behind, e.g. {images[0].decode()}")
        if api_stats.get("image_bytes") != kept_bytes:  # the byte budget's counter: exact through every crash
            self.fail(f"the byte budget counts {api_stats.get('image_bytes')} image bytes; "
                      f"the failed photos kept for a retry hold {kept_bytes}")
        # counters == records
        want = dict(by_status, total=len(records))
        if api_stats.get("jobs") != want:
            self.fail(f"GET /api/v1/queue/stats jobs={api_stats.get('jobs')} but the records say {want}")
        raw = {s: snap["stats"].get(s, 0) for s in want}
        if raw != want:
            self.fail(f"raw counters {snap['stats']} but the records say {want}")
        # Qdrant: one point per product with a job record, read after the last worker exited;
        # a product whose every accepted job was lost may have a point or not
        deleted = {pid for pid, (_, job_id) in self.newest().items() if job_id is None}
        products = {pid for _, pid in records.values()} - deleted
        kept = {pid for j, pid in accepted.items() if statuses[j] == "completed"}
        if kept - products - deleted:
            self.fail(f"{len(kept - products - deleted)} products of completed jobs have no job record")
        unfinished = {pid for j, pid in accepted.items() if not self.finished(j, statuses[j])}
        maybe = unfinished - products - deleted
        points, missing, duplicates, of_lost = self.check_points(products, maybe)
        stale = self.check_newest_points(statuses, unfinished)
        return dict(losses, accepted=len(accepted), completed=completed, superseded=superseded,
                    extra=len(extra), products=len(products), deleted=len(deleted), points=points,
                    points_of_lost=of_lost, missing_points=missing, duplicates=duplicates, stale_points=stale)

    def finished(self, job_id: str, status: str) -> bool:
        """Where an accepted job may end: completed, or superseded by a newer upload or a delete;
        an undecodable photo of the version races may also fail."""
        return status in ("completed", "superseded") or (status == "failed" and job_id in self.c.doomed)

    def judge_losses(self, accepted: dict[str, str], statuses: dict[str, str]) -> dict:
        """Accepted jobs not completed at the end, split by the Redis kill window (chaos_loss)."""
        c, a = self.c, self.args
        window = kill_window(c.redis_killed_at, c.redis_back_at) if c.redis_back_at is not None else None
        lost_at = {j: c.accepted_at.get(j, 0.0) for j, s in statuses.items() if not self.finished(j, s)}
        at_kill, other = split_lost(lost_at, window)
        for j in (other + at_kill)[:10]:
            when = f"{lost_at[j] - c.redis_killed_at:+.2f}s from the Redis kill" if window else "no Redis kill"
            log(f"lost: accepted job {j} (product {accepted[j]}) is {statuses[j]}; 202 at {when}")
        for reason in loss_failures(len(at_kill), len(other), a.redis_kill, a.appendfsync):
            self.fail(reason)
        at_risk = sum(window.holds(t) for t in c.accepted_at.values()) if window else 0
        return {"lost": len(lost_at), "lost_at_redis_kill": len(at_kill), "at_risk": at_risk}

    def check_points(self, products: set[str], maybe: set[str]) -> tuple[int, int, int, int]:
        """(points, products without a point, duplicate or unknown points, points of ``maybe``)."""
        from qdrant_client import QdrantClient

        from batcher.store import point_id

        client = QdrantClient(path=str(self.qdrant_path))
        try:
            count = client.count("products", exact=True).count
            seen: list[tuple[str, str | None]] = []
            offset = None
            for _ in range(10_000):
                page, offset = client.scroll("products", limit=1000, offset=offset, with_payload=True,
                                             with_vectors=False)
                seen += [(str(p.id), (p.payload or {}).get("product_id")) for p in page]
                if offset is None:
                    break
            ids = sorted(point_id(p) for p in products | maybe)
            found = {str(p.id) for p in client.retrieve("products", ids, with_payload=False)}
        finally:
            client.close()
        missing = [p for p in products if point_id(p) not in found]
        of_lost = sum(point_id(p) in found for p in maybe)
        in_points = [pid for _, pid in seen]
        duplicates = len(in_points) - len(set(in_points))
        strangers = {pid for pid in in_points if pid not in products | maybe}
        wrong_id = [pid for i, pid in seen if pid is not None and i != point_id(pid)]
        if count != len(products) + of_lost or len(seen) != count:
            self.fail(f"qdrant holds {count} points ({len(seen)} scrolled) for {len(products)} products "
                      f"and {of_lost} products of lost jobs")
        if missing:
            self.fail(f"{len(missing)} products have no point, e.g. {sorted(missing)[:5]}")
        if duplicates or strangers or wrong_id:
            self.fail(f"qdrant: {duplicates} duplicate products, unknown {sorted(strangers)[:5]}, "
                      f"wrong ids {wrong_id[:5]}")
        return count, len(missing), duplicates + len(strangers) + len(wrong_id), of_lost


def cleanup(chaos: Chaos | None) -> None:
    for proc in CHILDREN:
        if proc.poll() is None:
            proc.kill()
    for proc in CHILDREN:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
    if chaos is not None:
        chaos.redis_server.stop(kill=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--short", action="store_true",
                   help="quick run for the test suite: 60 uploads, 2 worker kills (flags still override)")
    p.add_argument("--uploads", type=int, help="photos to upload (default 300; --short 60)")
    p.add_argument("--concurrency", type=int, help="concurrent upload clients (default 32; --short 16)")
    p.add_argument("--kill-every", type=float, help="seconds a worker runs before it is killed (default 3; --short 2)")
    p.add_argument("--worker-kills", type=int, help="worker SIGKILLs (default 5; --short 2)")
    p.add_argument("--redis-down", type=float, default=2.0, help="seconds Redis stays down")
    p.add_argument("--redis-kill", choices=("friendly", "unfriendly"), default="friendly",
                   help="friendly: pause uploads and wait for the AOF before the SIGKILL; unfriendly: "
                        "SIGKILL at a seeded random moment while uploads flow")
    p.add_argument("--appendfsync", choices=("everysec", "always"), default="everysec",
                   help="the Redis AOF fsync policy")
    p.add_argument("--reindex", type=float, default=0.2, help="fraction of uploads re-indexing a used product id")
    p.add_argument("--races", type=int, help="version races started with each portion of uploads: a retry "
                   "racing a re-upload, a DELETE racing a queued upload, a DELETE racing a re-upload "
                   "(default 3; --short 2)")
    p.add_argument("--batch-size", type=int, default=8, help="worker --max-batch-size")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, help="seconds for the whole run (default 420; --short 200)")
    p.add_argument("--upload-deadline", type=float, default=60, help="seconds one upload may keep retrying")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (always kept on failure)")
    a = p.parse_args(argv)
    short = a.short
    a.uploads = a.uploads or (60 if short else 300)
    a.concurrency = a.concurrency or (16 if short else 32)
    a.kill_every = a.kill_every or (2.0 if short else 3.0)
    a.worker_kills = a.worker_kills if a.worker_kills is not None else (2 if short else 5)
    a.timeout = a.timeout or (200 if short else 420)
    a.races = a.races if a.races is not None else (2 if short else 3)
    if a.uploads < 1 or a.concurrency < 1 or a.worker_kills < 0 or a.kill_every <= 0:
        p.error("--uploads, --concurrency and --kill-every must be positive, --worker-kills >= 0")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below
    directory = Path(tempfile.mkdtemp(prefix="clipq-chaos-"))
    plan = plan_uploads(args.uploads, args.seed, args.reindex)
    chaos: Chaos | None = None
    result: dict = {}
    ok = False
    try:
        chaos = Chaos(args, directory)
        log(f"{args.uploads} uploads ({len({u.product_id for u in plan})} products), concurrency "
            f"{args.concurrency}, {args.worker_kills} worker kills, folder {directory}")

        async def go() -> dict:
            try:
                return await asyncio.wait_for(chaos.run(plan), args.timeout)
            except (TimeoutError, asyncio.TimeoutError):
                try:
                    log(f"state at the time-out: {await asyncio.wait_for(chaos.snapshot(), 5)}")
                except Exception as exc:  # noqa: BLE001
                    log(f"no state at the time-out: {exc!r}")
                raise
            finally:
                for task in chaos.bg:
                    task.cancel()
                if chaos.r is not None:
                    await chaos.r.aclose()

        try:
            result = asyncio.run(go())
        except (TimeoutError, asyncio.TimeoutError):
            chaos.fail(f"timeout: the run took over {args.timeout:.0f}s")
        except Exception as exc:  # noqa: BLE001  (any error is a failed run, with its reason)
            if not isinstance(exc, RuntimeError):
                traceback.print_exc()
            chaos.fail(f"{exc.__class__.__name__}: {exc}")
        ok = not chaos.failures
    finally:
        cleanup(chaos)
    c = chaos.c
    fields = {"accepted": result.get("accepted", len(c.accepted)), "completed": result.get("completed", "?"),
              "superseded": result.get("superseded", "?"), "doomed": len(c.doomed),
              "extra": result.get("extra", "?"), "products": result.get("products", "?"),
              "points": result.get("points", "?"), "points_of_lost": result.get("points_of_lost", "?"),
              "worker_kills": c.worker_kills, "orphaned": c.orphaned,
              "reap_max_s": f"{max(c.reap_s):.1f}" if c.reap_s else "-", "redis_restarts": c.redis_restarts,
              "api_503": c.api_503, "late_503": c.late_503, "sigterm_held": c.sigterm_held,
              "hostile_answered": f"{c.hostile_answered}/{c.hostile_sent}",
              "sigterm_exit": "?" if c.sigterm_exit is None else c.sigterm_exit,
              "final_exit": "?" if c.final_exit is None else c.final_exit,
              "redis_kill": args.redis_kill, "appendfsync": args.appendfsync,
              "inflight_at_kill": c.inflight_at_kill, "at_risk": result.get("at_risk", "?"),
              "lost": result.get("lost", "?"), "lost_at_redis_kill": result.get("lost_at_redis_kill", "?"),
              "missing_points": result.get("missing_points", "?"), "duplicates": result.get("duplicates", "?"),
              "deleted": result.get("deleted", "?"), "stale_points": result.get("stale_points", "?"),
              **{f"race_{k}": v for k, v in sorted(c.races.items())},
              "elapsed": f"{time.monotonic() - T0:.0f}s"}
    line = "chaos: " + " ".join(f"{k}={v}" for k, v in fields.items())
    if ok:
        print(line + " OK", flush=True)
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
        return 0
    print(line + f" FAIL ({len(chaos.failures)} failures: {chaos.failures[0].splitlines()[0]}; "
          f"logs in {directory})", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
