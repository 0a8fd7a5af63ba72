"""The chaos run, short version: worker SIGKILLs, a Redis SIGKILL + restart and a SIGTERM
while photos are uploaded, re-uploaded, retried and deleted; every accepted job must complete
(or be superseded by a newer upload or a delete), with one Qdrant point per product, from its
newest upload, and none for a deleted product.

It runs ``scripts/chaos_test.py --short`` as a subprocess (it starts its own Redis, API and
workers, on loopback, in a temporary folder) in a session of its own, so that a time-out can
end the script and every process it started.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240


def _end_group(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def test_short_chaos_run_loses_nothing():
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "chaos_test.py"), "--short"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _end_group(proc)
        out, err = proc.communicate()
        raise AssertionError(f"chaos run still going after {TIMEOUT_S}s\n{out}\n{err[-6000:]}") from None
    finally:
        if proc.poll() is None:
            _end_group(proc)
    summary = [line for line in out.splitlines() if line.startswith("chaos:")]
    assert len(summary) == 1, f"no summary line\nstdout:\n{out}\nstderr:\n{err[-6000:]}"
    line = summary[0]
    assert proc.returncode == 0 and line.endswith(" OK"), f"{line}\nstderr:\n{err[-6000:]}"
    fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
    assert fields["lost"] == "0" and fields["missing_points"] == "0" and fields["duplicates"] == "0"
    assert fields["stale_points"] == "0" and fields["products"] == fields["points"]
    deletes = sum(int(v) for k, v in fields.items() if k.startswith("race_delete_"))
    assert int(fields["deleted"]) >= 1 and deletes >= 1, line
    assert fields["redis_kill"] == "friendly" and fields["points_of_lost"] == "0"
    assert fields["worker_kills"] == "2" and fields["redis_restarts"] == "1"
    assert fields["sigterm_exit"] == "0" and fields["final_exit"] == "0"
