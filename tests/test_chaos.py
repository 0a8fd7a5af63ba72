"""The chaos run, short version: worker SIGKILLs, a Redis SIGKILL + restart and a SIGTERM
while photos are uploaded, re-uploaded, retried and deleted; every accepted job must complete
(or be superseded by a newer upload or a delete), with one Qdrant point per product, from its
newest upload, and none for a deleted product.

One run (``--short``: 60 uploads, 2 worker kills; the harness is tests/chaos/) serves every test
of this module; it starts its own Redis, API and workers on loopback in a temporary folder, and
stops them all before the tests look at its outcome. ``python -m scripts.chaos`` runs it by hand.
"""
from __future__ import annotations

import shutil

import pytest

from chaos.run import parse_args, run_chaos

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = run_chaos(parse_args(["--short"]), tmp_path_factory.mktemp("chaos"))
    print(out.line())
    yield out
    if out.ok:
        shutil.rmtree(out.directory, ignore_errors=True)


def test_the_short_run_passes_every_check(short_run):
    """Each check of the harness (tests/chaos/checks.py, events.py) adds a failure when it does not hold."""
    assert short_run.ok, "\n".join([short_run.line(), *short_run.failures])
    assert short_run.line().endswith(" OK")


def test_no_accepted_job_is_lost(short_run):
    f = short_run.fields
    assert f["lost"] == 0 and f["redis_kill"] == "friendly" and f["points_of_lost"] == 0, short_run.line()


def test_one_point_per_product(short_run):
    f = short_run.fields
    assert f["missing_points"] == 0 and f["duplicates"] == 0, short_run.line()
    assert f["products"] == f["points"], short_run.line()


def test_the_last_upload_wins_and_a_delete_sticks(short_run):
    f = short_run.fields
    assert f["stale_points"] == 0, short_run.line()
    deletes = sum(int(v) for k, v in f.items() if k.startswith("race_delete_"))
    assert int(f["deleted"]) >= 1 and deletes >= 1, short_run.line()


def test_workers_and_redis_were_killed_and_the_sigtermed_workers_exited_cleanly(short_run):
    f = short_run.fields
    assert f["worker_kills"] == 2 and f["redis_restarts"] == 1, short_run.line()
    assert f["sigterm_exit"] == 0 and f["final_exit"] == 0, short_run.line()
