"""How each compared system is started, found ready and stopped: each in processes of its own.

- clipq as a user runs it: a local Redis (``LocalRedis``), the API under uvicorn and one worker
  (``python -m batcher``), with Qdrant in memory (``QDRANT_PATH=:memory:``);
- LitServe and Ray Serve: the small servers of ``scripts.peers.litserve_server`` and ``scripts.peers.ray_server``.

Every process logs to ``<logs>/<name>.log``; ``scripts.lib.procs.Child`` starts and stops them.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from scripts.lib.procs import Child, api_args, free_port
from scripts.lib.redis_server import LocalRedis

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
INSTALL_PEERS = ".venv/bin/pip install -e '.[peers]'"
# the import each system needs -> what it is called in messages
NEEDS = {"clipq": None, "litserve": "litserve", "ray": "ray"}
LABELS = {"clipq": "clipq, including the Qdrant upsert and Redis bookkeeping",
          "litserve": "LitServe `max_batch_size={batch}`", "ray": "Ray Serve `@serve.batch`"}


@dataclass
class Config:
    model: str
    device: str
    batch_size: int
    window_ms: float
    clients: int
    threads: int
    decode_threads: int
    logs: Path


@dataclass
class Running:
    name: str
    base: str                 # http://127.0.0.1:PORT
    upload_path: str
    children: list[Child] = field(default_factory=list)
    redis: LocalRedis | None = None
    scratch: Path | None = None  # removed on stop (the local Redis's folder)

    @property
    def upload_url(self) -> str:
        return self.base + self.upload_path

    def check_alive(self) -> None:
        for child in self.children:
            if not child.alive():
                raise RuntimeError(f"{self.name}: {child.name} exited with status {child.proc.returncode}; "
                                   f"end of {child.log}:\n{child.tail()}")

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
            _end_group(child.proc.pid)
        if self.redis:
            self.redis.stop()
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


def _end_group(pgid: int) -> None:
    """Kill what the child left behind in its own process group (LitServe's workers outlive it)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def missing(name: str) -> str | None:
    """Why ``name`` cannot run here (its package is not installed), or None."""
    module = NEEDS[name]
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return f"{module} is not installed: `{INSTALL_PEERS}` installs the peers (the `peers` extra)"


def start(name: str, cfg: Config, timeout_s: float = 600) -> Running:
    running = _start_clipq(cfg) if name == "clipq" else _start_peer(name, cfg)
    ready = {"clipq": "/readyz", "litserve": "/health", "ray": running.upload_path}[name]
    try:
        _wait_ready(running, running.base + ready, timeout_s)
    except BaseException:
        running.stop()
        raise
    return running


def _start_clipq(cfg: Config) -> Running:
    scratch = Path(tempfile.mkdtemp(prefix="clipq-peers-"))
    redis = LocalRedis(scratch / "redis", aof=False).start()
    env = dict(os.environ, REDIS_URL=redis.url, QUEUE_NAMESPACE="bench", LOG_LEVEL="WARNING", ALLOW_ANONYMOUS="true",
               CLIP_MODEL=cfg.model, CLIP_PRETRAINED="none", CLIP_DEVICE=cfg.device, QDRANT_PATH=":memory:",
               QDRANT_COLLECTION="bench", WORKER_BATCH_SIZE=str(cfg.batch_size),
               WORKER_MAX_WAIT_MS=str(cfg.window_ms), WORKER_METRICS_PORT="0")
    port = free_port()
    running = Running("clipq", f"http://127.0.0.1:{port}", "/api/v1/index-product-with-image", redis=redis, scratch=scratch)
    running.children.append(Child.start("clipq-api", api_args(port), cfg.logs, 5, env=env))
    running.children.append(Child.start("clipq-worker", [PY, "-m", "batcher"], cfg.logs, 35, env=env))
    return running


def _start_peer(name: str, cfg: Config) -> Running:
    port = free_port()
    env = dict(os.environ)
    args = [PY, "-m", f"scripts.peers.{name}_server", "--port", str(port), "--model", cfg.model, "--device", cfg.device,
            "--batch-size", str(cfg.batch_size), "--window-ms", str(cfg.window_ms), "--threads", str(cfg.threads),
            "--decode-threads", str(cfg.decode_threads), "--max-in-flight", str(max(64, 2 * cfg.clients))]
    running = Running(name, f"http://127.0.0.1:{port}", "/predict" if name == "litserve" else "/embed")
    running.children.append(Child.start(name, args, cfg.logs, 20, env=env))
    return running


def _wait_ready(running: Running, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        running.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{running.name} is not ready at {url} after {timeout_s:.0f}s")
        time.sleep(0.5)
