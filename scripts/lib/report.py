"""JSON reports, and the machine a measurement ran on."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path


def write_json(path, data) -> Path:
    """Write ``data`` as indented JSON (anything else as its str), making the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info(encoder=None) -> dict:
    """CPU, cores, Python and date; with an encoder also torch, its threads, the GPU, device, precision."""
    info = {"cpu": cpu_name(), "cores": cores(), "python": platform.python_version(), "date": utc_now()}
    if encoder is not None:
        import torch

        gpu = torch.cuda.get_device_name(encoder.device) if encoder.device.type == "cuda" else None
        info |= {"gpu": gpu, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                 "device": str(encoder.device), "precision": encoder.precision}
    return info


def commit() -> str:
    """The checkout's short commit, with ``-dirty`` when tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    return sha + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
