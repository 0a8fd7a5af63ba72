"""The chaos run's processes: a Redis with an AOF, the API, one worker at a time (a warm spare
waits for the next kill), all started by the one supervisor of scripts/lib/procs.py."""
from __future__ import annotations

import asyncio
import random
import subprocess
import time
import uuid
from pathlib import Path

from scripts.lib.procs import PY, Supervisor, api_args, free_port, gated_worker_code
from scripts.lib.redis_server import LocalRedis

from .plan import HEARTBEAT_TTL, SHUTDOWN_GRACE, SPARE_WARM, Counters, clean_env, log, tail

# A worker started ahead of time: the slow imports happen while the previous worker still
# runs; on "go" it runs the real ``python -m batcher`` entry point with the given flags.
SPARE_CODE = gated_worker_code(SPARE_WARM)


class WorkerProc:
    """One worker process, started as a warm spare."""

    def __init__(self, chaos: "Services", worker_id: str) -> None:
        self.worker_id = worker_id
        s = chaos.args
        self.child = chaos.sup.start(f"worker-{worker_id}", [
            PY, "-c", SPARE_CODE, "--worker-id", worker_id, "--metrics-port", "0",
            "--max-batch-size", str(s.batch_size), "--max-wait-ms", "50"],
            SHUTDOWN_GRACE + 10, env=chaos.worker_env, stdin=subprocess.PIPE)
        self.proc, self.log_path = self.child.proc, self.child.log
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


class Services:
    """The state of a run and its processes; the uploads, events and checks are mixed in (run.py)."""

    def __init__(self, args, directory: Path) -> None:
        from batcher.queue.keys import Keys

        self.args = args
        self.dir = directory
        self.keys = Keys("clipq")
        self.rng = random.Random(args.seed)
        self.c = Counters()
        self.failures: list[str] = []
        self.redis_server = LocalRedis(directory / "redis", aof=True, appendfsync=args.appendfsync)
        self.sup = Supervisor(directory, say=None)  # the API and the workers; logs in the run's folder
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
        self.api_proc = self.sup.start("api", api_args(port), env=clean_env(
            base | {"REDIS_TIMEOUT": "5", "LOG_LEVEL": "WARNING", "ALLOW_ANONYMOUS": "true"})).proc

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

    async def snapshot(self) -> dict:
        k, r = self.keys, self.r
        lists = [key async for key in r.scan_iter(match=f"{k.tag}:processing:*", count=1000)]
        held = {key.decode(): await r.llen(key) for key in lists}
        return {"queue": await r.llen(k.queue), "delayed": await r.zcard(k.delayed),
                "failed": await r.zcard(k.failed), "processing": {x: n for x, n in held.items() if n},
                "workers": sorted(m.decode() for m in await r.smembers(k.workers)),
                "stats": {f.decode(): int(v) for f, v in (await r.hgetall(k.stats)).items()}}
