"""The chaos run's rule for lost jobs (tests/chaos/loss.py): which losses a Redis SIGKILL may
explain, and which fail the run."""
from __future__ import annotations

from chaos.loss import kill_window, loss_failures, split_lost


def test_the_window_reaches_back_past_everysecs_postponed_write_and_ends_at_the_restart():
    w = kill_window(killed_at=100.0, restarted_at=103.0)
    assert not w.holds(97.4) and w.holds(97.6) and w.holds(100.0) and w.holds(103.0)
    assert not w.holds(103.1)


def test_lost_jobs_split_into_those_of_the_kill_window_and_the_others():
    w = kill_window(killed_at=100.0, restarted_at=103.0)
    lost = {"early": 50.0, "just-before": 99.5, "while-down": 101.0, "after": 110.0}
    assert split_lost(lost, w) == (["just-before", "while-down"], ["after", "early"])
    assert split_lost(lost, None) == ([], sorted(lost))


def test_everysec_may_lose_jobs_of_the_window_after_an_unfriendly_kill_only():
    assert loss_failures(3, 0, "unfriendly", "everysec") == []
    assert loss_failures(0, 0, "unfriendly", "always") == []
    assert len(loss_failures(1, 0, "unfriendly", "always")) == 1
    assert len(loss_failures(1, 0, "friendly", "everysec")) == 1


def test_a_loss_outside_the_window_always_fails():
    assert "outside" in loss_failures(0, 1, "unfriendly", "everysec")[0]
    assert len(loss_failures(2, 1, "unfriendly", "always")) == 2
