#!/usr/bin/env python3
"""Run clipq on one machine: a local Redis, the API and one worker; ``scripts/run.sh`` calls it.

Each process logs to ``data/logs/<name>.log``. When any of them fails to start or dies, this
stops the others, says which one failed, prints the end of its log and exits 1. On Ctrl-C
(SIGINT) or SIGTERM it stops the worker first (it finishes its batch within its grace), then
the API, then Redis last; each gets SIGTERM, then SIGKILL once its grace has passed, so the
whole stop is bounded by the worker's grace plus a few seconds.

State lives in ``--data-dir`` (default ``data/``): the Redis AOF, the embedded Qdrant folder
and the logs.

``--smoke`` starts everything, indexes the sample photos, runs one search, shuts down cleanly
and exits 0 only if all of that worked (``.ci/run`` runs it on a clean clone).
"""
from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
API_GRACE_S = 5.0
REDIS_GRACE_S = 5.0


class StartFailed(RuntimeError):
    """A child process died or never became ready."""


def _die_with_parent() -> None:
    """In the child: get SIGTERM if this supervisor dies, so nothing is left behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path
    grace_s: float

    @classmethod
    def start(cls, name: str, args: list[str], logs: Path, grace_s: float, env: dict | None = None,
              nice: int = 0) -> "Child":
        log = logs / f"{name}.log"
        out = open(log, "ab")
        # A session of its own: a Ctrl-C at the terminal reaches only this supervisor, which
        # then stops the children in order; the worker must not lose Redis before it acks.
        proc = subprocess.Popen(["nice", "-n", str(nice), *args] if nice else args, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=ROOT, start_new_session=True, preexec_fn=_die_with_parent)
        out.close()
        return cls(name, proc, log, grace_s)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after the grace; returns the exit status."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(self.grace_s)
            except subprocess.TimeoutExpired:
                print(f"==> {self.name} did not stop within {self.grace_s:.0f}s: SIGKILL", flush=True)
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text[-lines:])


class Supervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children: list[Child] = []
        self.data = Path(args.data_dir).resolve()
        self.logs = self.data / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.stopping = False

    def check(self) -> None:
        """Raise StartFailed naming the first child that has exited."""
        for child in self.children:
            if not child.alive():
                raise StartFailed(f"{child.name} exited with status {child.proc.returncode}")

    def wait_until(self, what: str, ready, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            self.check()
            if time.monotonic() > deadline:
                raise StartFailed(f"{what} is not ready after {timeout_s:.0f}s")
            time.sleep(0.2)

    def start(self, name: str, args: list[str], grace_s: float, ready=None, timeout_s: float = 60,
              **kw) -> None:
        child = Child.start(name, args, self.logs, grace_s, **kw)
        self.children.append(child)
        print(f"==> starting {name} (pid {child.proc.pid}, log: {child.log})", flush=True)
        if ready is not None:
            self.wait_until(name, ready, timeout_s)

    def stop_all(self) -> None:
        """The worker first (it finishes its batch), Redis last."""
        self.stopping = True
        for child in reversed(self.children):
            if child.alive():
                print(f"==> stopping {child.name}", flush=True)
            child.stop()

    def failed_child(self) -> Child | None:
        return next((c for c in self.children if not c.alive()), None)


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def api_ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def choose_weights(env: dict) -> None:
    env.setdefault("CLIP_MODEL", "ViT-B-32")
    env.setdefault("CLIP_PRETRAINED", "laion2b_s34b_b79k")
    if subprocess.run([PY, "scripts/weights_available.py"], env=env, cwd=ROOT).returncode != 0:
        print(f"==> the CLIP weights '{env['CLIP_PRETRAINED']}' cannot be fetched from here and are not cached.\n"
              "    Carrying on with CLIP_PRETRAINED=none: seeded random weights. Indexing and search work,\n"
              "    but similarity means nothing. See README, 'Model weights', to use real weights.", flush=True)
        env["CLIP_PRETRAINED"] = "none"


def start_services(sup: Supervisor, env: dict) -> str:
    """Redis (unless REDIS_URL is set), the API and a worker; returns the API's URL."""
    a = sup.args
    if not env.get("REDIS_URL"):
        env["REDIS_URL"] = f"redis://127.0.0.1:{a.redis_port}/0"
        sup.start("redis", [PY, "scripts/local_redis.py", "--dir", str(sup.data / "redis"), "--port", str(a.redis_port)],
                  REDIS_GRACE_S, ready=lambda: redis_answers(env["REDIS_URL"]), timeout_s=30)
    choose_weights(env)
    env.setdefault("QDRANT_PATH", str(sup.data / "qdrant"))
    # open without a key only on loopback: the API refuses to start keyless otherwise
    env.setdefault("ALLOW_ANONYMOUS", "true" if a.host in ("127.0.0.1", "localhost", "::1") else "false")
    url = f"http://127.0.0.1:{a.port}"
    sup.start("api", [PY, "-m", "uvicorn", "api.main:app", "--host", a.host, "--port", str(a.port),
                      "--log-level", "warning", "--timeout-keep-alive", "30"],
              API_GRACE_S, ready=lambda: api_ready(url), env=env)
    grace = float(env.get("WORKER_SHUTDOWN_GRACE", 30)) + 5
    # one machine for everything: the model yields the CPU to the API, which must answer in milliseconds
    sup.start("worker", [PY, "-m", "batcher"], grace, env=env, nice=10)
    return url


def serve(sup: Supervisor, url: str, env: dict) -> int:
    demo = [PY, "scripts/demo.py", "--api", url, *(["--api-key", env["API_KEY"].split(",")[0]]
                                                  if env.get("API_KEY") else [])]
    demo_proc = subprocess.Popen(demo + (["--strict"] if sup.args.smoke else []), cwd=ROOT, env=env)
    while demo_proc.poll() is None:
        sup.check()
        time.sleep(0.2)
    if sup.args.smoke:
        return demo_proc.returncode
    where = f"{sup.args.host}:{sup.args.port}"
    print(f"==> serving: API http://{where} (docs at /docs), worker metrics "
          f":{env.get('WORKER_METRICS_PORT', 9100)}/metrics, logs in {sup.logs}. Ctrl-C stops.", flush=True)
    while True:
        sup.check()
        time.sleep(0.5)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="index the samples, search once, stop; exit 0 if it all worked")
    p.add_argument("--host", default=os.environ.get("API_HOST", "127.0.0.1"),
                   help="address the API listens on (default 127.0.0.1; API_HOST)")
    p.add_argument("--port", type=int, default=int(os.environ.get("API_PORT", 8000)), help="API port (API_PORT)")
    p.add_argument("--redis-port", type=int, default=int(os.environ.get("REDIS_PORT", 6379)),
                   help="port of the local Redis when REDIS_URL is unset (REDIS_PORT)")
    p.add_argument("--data-dir", default=os.environ.get("CLIPQ_DATA_DIR", str(ROOT / "data")),
                   help="Redis AOF, embedded Qdrant and logs (default data/; CLIPQ_DATA_DIR)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    sup = Supervisor(parse_args(argv))

    def on_signal(signum, _frame):
        if not sup.stopping:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    env = dict(os.environ)
    status = 1
    try:
        status = serve(sup, start_services(sup, env), env)
    except StartFailed as exc:
        print(f"==> FAILED: {exc}", file=sys.stderr, flush=True)
        bad = sup.failed_child()
        if bad is not None:
            print(f"==> last lines of {bad.log}:\n{bad.tail()}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        status = 0
    finally:
        print("==> stopping (worker first: it finishes its batch; Redis last)", flush=True)
        sup.stop_all()
    worker = next((c for c in sup.children if c.name == "worker"), None)
    if sup.args.smoke and status == 0 and worker is not None and worker.proc.returncode != 0:
        print(f"==> FAILED: the worker exited with status {worker.proc.returncode} on shutdown", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
