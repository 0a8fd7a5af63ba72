"""The batching policy as a pure unit: no Redis, no model, no sleeps."""
from __future__ import annotations

from collections import deque

import pytest

from batcher.policy import BatchCeiling, BatchPolicy, backoff_ms, collect


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ScriptedSource:
    """Items already waiting, plus arrivals at given clock times; blocking advances the clock."""

    def __init__(self, clock: FakeClock, waiting=(), arrivals=()) -> None:
        self.clock = clock
        self.waiting = deque(waiting)
        self.arrivals = deque(sorted(arrivals))  # (time, item)
        self.blocking_calls: list[float] = []

    def _arrive(self) -> None:
        while self.arrivals and self.arrivals[0][0] <= self.clock.now:
            self.waiting.append(self.arrivals.popleft()[1])

    def take_blocking(self, timeout_s: float) -> list:
        self.blocking_calls.append(timeout_s)
        self._arrive()
        if not self.waiting and self.arrivals and self.arrivals[0][0] <= self.clock.now + timeout_s:
            self.clock.now = self.arrivals[0][0]
            self._arrive()
        if not self.waiting:
            self.clock.now += timeout_s
            return []
        return [self.waiting.popleft()]

    def take_now(self, n: int) -> list:
        self._arrive()
        out = [self.waiting.popleft() for _ in range(min(n, len(self.waiting)))]
        return out


def test_full_queue_gives_a_full_batch_without_waiting():
    clock = FakeClock()
    src = ScriptedSource(clock, waiting=range(100))
    batch = collect(src, BatchPolicy(16, 10.0), first_timeout_s=1, clock=clock)
    assert batch == list(range(16))
    assert clock.now == 100.0  # no time passed: the batch was cut when full
    assert src.blocking_calls == [1]


def test_empty_queue_returns_nothing_after_the_first_timeout():
    clock = FakeClock()
    src = ScriptedSource(clock)
    assert collect(src, BatchPolicy(8, 0.05), first_timeout_s=2.0, clock=clock) == []
    assert clock.now == pytest.approx(102.0)


def test_lone_item_waits_exactly_the_window():
    clock = FakeClock()
    src = ScriptedSource(clock, arrivals=[(100.5, "a")])
    batch = collect(src, BatchPolicy(8, 0.05), first_timeout_s=5, clock=clock)
    assert batch == ["a"]
    assert clock.now == pytest.approx(100.55)  # first arrival + the window, not the poll interval


def test_items_arriving_in_the_window_join_the_batch_and_late_ones_do_not():
    clock = FakeClock()
    src = ScriptedSource(clock, arrivals=[(100.0, 1), (100.01, 2), (100.03, 3), (100.2, 4)])
    batch = collect(src, BatchPolicy(8, 0.05), first_timeout_s=1, clock=clock)
    assert batch == [1, 2, 3]
    assert clock.now == pytest.approx(100.05)


def test_batch_is_cut_as_soon_as_it_is_full_even_inside_the_window():
    clock = FakeClock()
    src = ScriptedSource(clock, arrivals=[(100.0 + i * 0.001, i) for i in range(10)])
    batch = collect(src, BatchPolicy(4, 1.0), first_timeout_s=1, clock=clock)
    assert batch == [0, 1, 2, 3]
    assert clock.now == pytest.approx(100.003)


def test_zero_window_takes_only_what_is_already_there():
    clock = FakeClock()
    src = ScriptedSource(clock, waiting=[1, 2], arrivals=[(100.001, 3)])
    assert collect(src, BatchPolicy(8, 0.0), first_timeout_s=1, clock=clock) == [1, 2]


def test_invalid_policy_is_refused():
    with pytest.raises(ValueError):
        BatchPolicy(0, 1)
    with pytest.raises(ValueError):
        BatchPolicy(4, -1)


def test_ceiling_halves_after_oom_and_recovers_after_cooldown():
    c = BatchCeiling(64, cooldown_s=300)
    assert c.current(0) == 64
    assert c.lower(64, now=10) == 32
    assert c.current(100) == 32
    assert c.lower(32, now=100) == 16
    assert c.current(399) == 16
    assert c.current(401) == 64
    assert c.lower(1, now=500) == 1


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    lo = [backoff_ms(a, 1000, 60_000, rand=lambda: 0.0) for a in (1, 2, 3, 4)]
    hi = [backoff_ms(a, 1000, 60_000, rand=lambda: 1.0) for a in (1, 2, 3, 4)]
    assert lo == [500, 1000, 2000, 4000]
    assert hi == [1000, 2000, 4000, 8000]
    assert backoff_ms(30, 1000, 60_000, rand=lambda: 1.0) == 60_000


# -- a claim that fails once some of the batch is taken (a slot moving, a node away) --------------
class SlotMovesAfter:
    """A consumer (or a shard) that hands out ``ids`` once, then fails as a moving slot does."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids

    def take(self) -> list[str]:
        from batcher.queue.owner import SlotMoving

        if not self.ids:
            raise SlotMoving("the slot is moving between nodes")
        out, self.ids = self.ids, []
        return out

    def take_blocking(self, timeout_s: float) -> list[str]:
        return self.take()

    def take_now(self, n: int) -> list[str]:
        return self.take()


def test_a_claim_failing_after_the_first_ends_the_batch_with_the_jobs_taken():
    """The ids taken are in the worker's list and held: raised away, they would never be done."""
    from batcher.queue.owner import SlotMoving
    from batcher.stages.batch_source import BatchSource

    batch = collect(BatchSource(SlotMovesAfter(["a", "b"])), BatchPolicy(16, 10.0), 1, clock=FakeClock())
    assert batch == ["a", "b"]
    with pytest.raises(SlotMoving):  # nothing taken yet: the claim stage backs off
        collect(BatchSource(SlotMovesAfter([])), BatchPolicy(16, 10.0), 1, clock=FakeClock())


def test_a_shard_failing_keeps_what_the_other_shards_moved():
    from batcher.queue.owner import SlotMoving
    from batcher.queue.shards import ShardedConsumer

    def take(shard, moved):
        return shard.take_now(16 - len(moved))

    shards = [SlotMovesAfter(["a"]), SlotMovesAfter([]), SlotMovesAfter(["c", "d"])]
    assert ShardedConsumer._each(shards, take) == ["a", "c", "d"]
    with pytest.raises(SlotMoving):
        ShardedConsumer._each([SlotMovesAfter([]), SlotMovesAfter([])], take)
