"""scripts/run.sh as a user runs it: it starts, serves, stops on Ctrl-C and fails fast.

Each test starts the real script in a process group of its own, as a terminal does, with the
tiny model and its own ports and data folder, so that it never meets a run.sh of the user's.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT
from scripts.lib.photos import SAMPLES
from scripts.lib.procs import free_port, port_free

GRACE_S = 5.0   # WORKER_SHUTDOWN_GRACE for these runs
SLACK_S = 10.0  # "the worker's grace period plus a few seconds"
pytestmark = pytest.mark.slow


class RunSh:
    def __init__(self, tmp_path: Path, api_port: int | None = None, redis_port: int | None = None,
                 args: tuple[str, ...] = (), **env: str) -> None:
        self.api_port, self.redis_port = api_port or free_port(), redis_port or free_port()
        self.out = tmp_path / "run.out"
        self.env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_KEY")} | {
            "API_PORT": str(self.api_port), "REDIS_PORT": str(self.redis_port),
            "WORKER_METRICS_PORT": str(free_port()), "CLIPQ_DATA_DIR": str(tmp_path / "data"),
            "CLIP_MODEL": "clipq-tiny", "CLIP_PRETRAINED": "none", "WORKER_SHUTDOWN_GRACE": str(GRACE_S),
            "PYTHONUNBUFFERED": "1"} | env
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(["bash", "scripts/run.sh", *args], cwd=ROOT, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_for(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.output():
            assert self.proc.poll() is None, f"run.sh exited {self.proc.returncode}:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {text!r} after {timeout_s}s:\n{self.output()}"
            time.sleep(0.2)

    def child_pids(self) -> dict[str, int]:
        pids = {}
        for line in self.output().splitlines():
            if line.startswith("==> starting ") and "(pid " in line:
                name, pid = line.split()[2], line.split("(pid ")[1].split(",")[0]
                pids[name] = int(pid)
        return pids

    def ctrl_c(self) -> float:
        """SIGINT to the whole process group, as a terminal's Ctrl-C; returns seconds to exit."""
        t0 = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(GRACE_S + SLACK_S + 30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            pytest.fail(f"run.sh still running {GRACE_S + SLACK_S + 30:.0f}s after Ctrl-C:\n{self.output()}")
        return time.monotonic() - t0

    def kill_leftovers(self) -> None:
        for pid in self.child_pids().values():
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_ctrl_c_after_a_client_used_the_api_stops_everything_within_the_grace(tmp_path):
    run = RunSh(tmp_path)
    try:
        run.wait_for("==> serving", 180)
        # the hang seen once: a client that used the API and keeps its connection open
        client = httpx.Client(base_url=run.api, timeout=10)
        photo = SAMPLES / "tabby_cat.jpg"
        resp = client.post("/api/v1/index-product-with-image", data={"product_id": "p1", "name": "cat"},
                           files={"image_file": (photo.name, photo.read_bytes())})
        assert resp.status_code == 202, resp.text
        assert client.get(resp.json()["status_url"]).status_code == 200
        pids = run.child_pids()
        assert set(pids) == {"redis", "api", "worker"}, run.output()
        took = run.ctrl_c()
        assert took <= GRACE_S + SLACK_S, f"stopping took {took:.1f}s:\n{run.output()}"
        assert run.proc.returncode == 0, run.output()
        assert not [name for name, pid in pids.items() if running(pid)], run.output()
        assert "search by the photo" in run.output()  # the demo ran in full
        assert f"serving: API http://127.0.0.1:{run.api_port} " in run.output()  # loopback by default
        client.close()
    finally:
        run.kill_leftovers()


@pytest.mark.parametrize("blocked", ["redis", "api"])
def test_a_process_that_cannot_start_stops_the_run_at_once_and_says_which(tmp_path, blocked):
    with socket.socket() as holder:  # another program already listens on the port
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = RunSh(tmp_path, **{f"{blocked}_port": port})
        try:
            t0 = time.monotonic()
            run.proc.wait(90)
            took = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            os.killpg(run.proc.pid, signal.SIGKILL)
            pytest.fail(f"run.sh did not stop when {blocked} could not start:\n{run.output()}")
        finally:
            run.kill_leftovers()
    out = run.output()
    assert run.proc.returncode != 0, out
    assert f"FAILED: {blocked} exited" in out, out
    assert f"last lines of {tmp_path / 'data' / 'logs' / blocked}.log" in out, out
    assert "in use" in out.lower(), out  # the log's own reason is shown
    assert not [n for n, pid in run.child_pids().items() if running(pid)], out
    assert took < 60, f"{took:.0f}s to notice"


def test_opened_to_the_network_without_a_key_the_api_refuses_to_start(tmp_path):
    run = RunSh(tmp_path, API_HOST="0.0.0.0")
    try:
        run.proc.wait(120)
    except subprocess.TimeoutExpired:
        os.killpg(run.proc.pid, signal.SIGKILL)
        pytest.fail(f"run.sh kept running with API_HOST=0.0.0.0 and no key:\n{run.output()}")
    finally:
        run.kill_leftovers()
    assert run.proc.returncode != 0 and "FAILED: api exited" in run.output(), run.output()
    assert "API_KEY" in run.output(), run.output()  # the API's own reason, from its log


def test_smoke_on_a_local_redis_cluster(tmp_path):
    """``run.sh --smoke --cluster``: 3 masters + 3 replicas, the API and the worker speak the
    cluster protocol, the demo indexes the samples and searches; everything stops, exit 0."""
    # 6 node ports and their buses (+10000), below the ephemeral range that clients' sockets use
    base = next(p for p in range(20000 + os.getpid() % 2000, 22700, 7) if all(
        port_free(q) and port_free(q + 10000) for q in range(p, p + 6)))
    run = RunSh(tmp_path, redis_port=base, args=("--smoke", "--cluster"))
    try:
        assert run.proc.wait(240) == 0, run.output()
    finally:
        run.kill_leftovers()
    out = run.output()
    assert "==> starting redis-cluster" in out and "completed" in out
    assert not any(running(pid) for pid in run.child_pids().values())

