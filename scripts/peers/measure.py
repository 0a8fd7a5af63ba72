"""One measurement of one system: start it, warm it up, time the images through it, stop it.

A system's figure is images / wall time, from the first upload to the last answer (a peer) or
to the last job completed by the worker (clipq: the latest ``updated_at`` of its jobs). Before
the timing, each system gets one batch of warm-up uploads (clipq: completed too), so that no
figure pays for start-up. Other processes' CPU use during the timing (the machine's busy time
less this process tree's, per core) is noted beside it: on a shared machine it says which
figures are noise.
"""
from __future__ import annotations

import os
import time

from scripts.lib.worker_bench import ForeignLoad
from scripts.peers import client, systems


def descendants(root: int) -> list[int]:
    """The pids of every process below ``root`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _checker(name: str, dim: int):
    def check(status: int, body) -> None:
        if name == "clipq":
            if status != 202 or "job_id" not in body:
                raise RuntimeError(f"clipq answered {status}: {body}")
        elif status != 200 or len(body.get("vector", ())) != dim:
            raise RuntimeError(f"{name} answered {status}: {str(body)[:300]}")
    return check


def drive(running: systems.Running, images: list[bytes], clients: int, tag: str, dim: int,
          expected_jobs: int) -> float:
    """Send ``images``; returns the seconds until the last answer or, for clipq, the last completed job."""
    t0 = time.time()
    answers = client.upload_all(running.upload_url, images, clients, tag, _checker(running.name, dim))
    if running.name != "clipq":
        return time.time() - t0
    jobs = [a["job_id"] for a in answers]
    last = client.wait_completed(running.base, jobs, expected_jobs, timeout_s=max(600, 10 * len(images)))
    return last - t0


def measure(name: str, cfg: systems.Config, images: list[bytes], warmup: list[bytes], dim: int,
            round_no: int) -> dict:
    """Start ``name``, warm it up, time ``images`` through it, stop it."""
    t_start = time.monotonic()
    running = systems.start(name, cfg)
    try:
        start_s = time.monotonic() - t_start
        drive(running, warmup, cfg.clients, f"warm{round_no}", dim, expected_jobs=len(warmup))
        load_before = os.getloadavg()[0]
        with ForeignLoad(descendants(os.getpid())) as foreign:
            wall = drive(running, images, cfg.clients, f"run{round_no}", dim,
                         expected_jobs=len(warmup) + len(images))
        running.check_alive()
    finally:
        running.stop()
    return {"system": name, "round": round_no, "images": len(images), "wall_s": round(wall, 3),
            "images_per_s": len(images) / wall, "start_s": round(start_s, 1),
            "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "foreign_load": None if foreign.value is None else round(foreign.value, 3)}
