"""Start processes, wait until they are ready, notice one that died, stop them in order.

One ``Supervisor`` serves ``scripts/run_local.py`` (Redis, API, worker), the benchmarks that
start clipq and the chaos tests (tests/chaos/). Each child logs to ``<logs>/<name>.log``.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from scripts.lib import ROOT

PY = sys.executable


class StartFailed(RuntimeError):
    """A child process died or never became ready."""


# Servers started here listen on ports below the kernel's range for outgoing connections
# (32768-60999 on Linux by default), and so do cluster bus ports (port + 10000): a client socket
# can then never take a server's port, between the pick and the start or across a restart on the
# same port ("Address already in use", now and then, with ports the kernel handed out).
PICK_FROM, PICK_BELOW = 12000, 22768
_cursor = PICK_FROM + (os.getpid() * 37) % (PICK_BELOW - PICK_FROM)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(bus: bool = False) -> int:
    """A port free now and not handed out before by this process; ``bus``: port + 10000 too."""
    global _cursor
    for _ in range(PICK_BELOW - PICK_FROM):
        port, _cursor = _cursor, PICK_FROM + (_cursor + 1 - PICK_FROM) % (PICK_BELOW - PICK_FROM)
        if port_free(port) and (not bus or port_free(port + 10000)):
            return port
    raise RuntimeError(f"no free port in {PICK_FROM}..{PICK_BELOW - 1}")


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the thread that started it dies, so nothing is left behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def tail(path: Path, lines: int = 25, indent: str = "    ") -> str:
    """The last ``lines`` of a log, indented."""
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(indent + line for line in text[-lines:])


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path
    grace_s: float

    @classmethod
    def start(cls, name: str, args: list[str], logs: Path, grace_s: float = 5.0, env: dict | None = None,
              nice: int = 0, stdin=subprocess.DEVNULL, session: bool = True, cwd: Path = ROOT) -> "Child":
        """Start ``args`` with stdout and stderr appended to ``logs/<name>.log``.

        ``session``: a session of its own (a Ctrl-C at the terminal reaches only the supervisor,
        which then stops the children in order) and SIGTERM when the starting thread dies."""
        logs = Path(logs)
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(["nice", "-n", str(nice), *args] if nice else args, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=stdin, env=env, cwd=cwd,
                                    start_new_session=session, preexec_fn=_die_with_parent if session else None)
        return cls(name, proc, log, grace_s)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, kill: bool = False) -> int | None:
        """SIGTERM (SIGKILL with ``kill``), then SIGKILL after the grace; returns the exit status."""
        if self.alive():
            (self.proc.kill if kill else self.proc.terminate)()
            try:
                self.proc.wait(self.grace_s)
            except subprocess.TimeoutExpired:
                print(f"==> {self.name} did not stop within {self.grace_s:.0f}s: SIGKILL", flush=True)
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 25) -> str:
        return tail(self.log, lines)


class Supervisor:
    """Children started in order and stopped in reverse order (the worker first, Redis last).

    ``say``: where the "==> starting/stopping" lines go (None: nowhere)."""

    def __init__(self, logs: Path, say=print) -> None:
        self.logs = Path(logs)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.children: list[Child] = []
        self.stopping = False
        self.say = say or (lambda *_a, **_k: None)

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

    def start(self, name: str, args: list[str], grace_s: float = 5.0, ready=None, timeout_s: float = 60,
              **kw) -> Child:
        child = Child.start(name, args, self.logs, grace_s, **kw)
        self.children.append(child)
        self.say(f"==> starting {name} (pid {child.pid}, log: {child.log})", flush=True)
        if ready is not None:
            self.wait_until(name, ready, timeout_s)
        return child

    def forget(self, child: Child) -> None:
        """No longer watch ``child`` (it was stopped on purpose)."""
        if child in self.children:
            self.children.remove(child)

    def stop_all(self, kill: bool = False) -> None:
        """In reverse order of start; SIGKILL at once with ``kill``."""
        self.stopping = True
        for child in reversed(self.children):
            if child.alive():
                self.say(f"==> stopping {child.name}", flush=True)
            child.stop(kill=kill)

    def failed_child(self) -> Child | None:
        return next((c for c in self.children if not c.alive()), None)

    def get(self, name: str) -> Child | None:
        return next((c for c in self.children if c.name == name), None)


# -- clipq's processes, as scripts/run_local.py starts them ------------------------------------
def api_args(port: int, host: str = "127.0.0.1", *extra: str) -> list[str]:
    """The API under uvicorn (loop and HTTP parser at auto: uvloop and httptools)."""
    return [PY, "-m", "uvicorn", "api.main:app", "--host", host, "--port", str(port), "--log-level", "warning",
            "--timeout-keep-alive", "30", *extra]


def api_ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/readyz", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def gated_worker_code(mark: str) -> str:
    """``python -c`` code of a worker started ahead of time: the slow imports (torch, open_clip,
    qdrant_client) happen at once, then it prints ``mark`` and waits for a ``go`` line on stdin
    before it runs the real ``python -m batcher`` entry point with its own arguments."""
    return f"""
import sys
import torch, open_clip, qdrant_client  # noqa: F401  (the slow part of a worker start)
import batcher.app, batcher.__main__
print({mark!r}, flush=True)
if sys.stdin.readline().strip() != "go":
    sys.exit(3)
sys.exit(batcher.__main__.main(sys.argv[1:]))
"""
