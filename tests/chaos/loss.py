"""Which accepted jobs a Redis SIGKILL may lose, and when a loss fails the chaos run (pure).

A Redis process killed with SIGKILL loses what it had not yet written to its append-only file.
With ``appendfsync always`` Redis writes and fsyncs the AOF before it answers, so an answered
write (the API's 202) survives. With ``appendfsync everysec`` the write is done before the
answer too, except while a background fsync is slow: then Redis postpones the write for up to
2 seconds (and answers meanwhile). So a kill may lose the jobs answered in the 2 seconds before
it, and those answered while Redis was down (their writes happened just before the kill). The
window below adds 0.5 s for scheduling on a busy machine.
"""
from __future__ import annotations

from dataclasses import dataclass

EVERYSEC_POSTPONE_S = 2.0   # Redis's limit on a postponed AOF write under everysec
SLACK_S = 0.5


@dataclass(frozen=True)
class KillWindow:
    start: float  # a 202 answered at or after this may have been lost by the kill
    end: float    # Redis answered again (restarted)

    def holds(self, accepted_at: float) -> bool:
        return self.start <= accepted_at <= self.end


def kill_window(killed_at: float, restarted_at: float) -> KillWindow:
    return KillWindow(killed_at - EVERYSEC_POSTPONE_S - SLACK_S, restarted_at)


def split_lost(lost_at: dict[str, float], window: KillWindow | None) -> tuple[list[str], list[str]]:
    """The lost job ids (with the time of their 202) as (within the kill window, the others)."""
    at_kill = sorted(j for j, t in lost_at.items() if window is not None and window.holds(t))
    return at_kill, sorted(set(lost_at) - set(at_kill))


def loss_failures(at_kill: int, other: int, redis_kill: str, appendfsync: str) -> list[str]:
    """Why these losses fail the run: any loss outside the kill window; any loss at all after a
    friendly kill (uploads paused, AOF synced) or with appendfsync always."""
    reasons = []
    if other:
        reasons.append(f"{other} accepted jobs lost outside the Redis kill window")
    if at_kill and (redis_kill == "friendly" or appendfsync == "always"):
        reasons.append(f"{at_kill} accepted jobs lost at the {redis_kill} Redis kill "
                       f"with appendfsync {appendfsync}")
    return reasons
