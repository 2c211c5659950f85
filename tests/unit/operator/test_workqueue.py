"""The controller's work queue (sfc_k8s.operator.workqueue), driven by a fake clock.

Covers: kicks of a key that is running coalesce into one more run, never two runs of a key at
once, while other keys run concurrently; a retryable failure is retried after an exponential
back-off (capped), the attempt count reset by a success, failures reported outside the work
(the status writer's) sharing the count; other exceptions reach the caller; ``later`` runs a key
in the background once however often it is asked; ``forget`` and ``close`` drop waiting retries.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from sfc_k8s.operator.workqueue import Backoff, WorkQueue
from tests.fixtures.clock import FakeClock, settle


class FlakyError(Exception):
    """A failure worth retrying (the API server's 5xx, in the controller)."""


class BrokenError(Exception):
    """A failure not worth retrying."""


class Work:
    """The work function: counts runs per key, can be held open, fails as told."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.active: Counter[str] = Counter()
        self.most_active: Counter[str] = Counter()
        self.gates: dict[str, asyncio.Event] = {}
        self.failures: dict[str, list[BaseException]] = {}

    def hold(self, key: str) -> asyncio.Event:
        self.gates[key] = asyncio.Event()
        return self.gates[key]

    async def __call__(self, key: str) -> None:
        self.runs[key] += 1
        self.active[key] += 1
        self.most_active[key] = max(self.most_active[key], self.active[key])
        try:
            gate = self.gates.get(key)
            if gate is not None:
                await gate.wait()
            if self.failures.get(key):
                raise self.failures[key].pop(0)
        finally:
            self.active[key] -= 1


def make_queue(
    work: Work, clock: FakeClock, retries: list[tuple[str, int, float]] | None = None
) -> WorkQueue[str]:
    def on_retry(key: str, attempt: int, delay: float, err: BaseException) -> None:
        if retries is not None:
            retries.append((key, attempt, delay))

    return WorkQueue(
        work,
        retry_on=(FlakyError,),
        backoff=Backoff(base=0.5, cap=4.0),
        sleep=clock.sleep,
        on_retry=on_retry,
    )


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff(base=0.5, cap=4.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


@pytest.mark.asyncio
async def test_kicks_during_a_run_coalesce_into_one_more_run() -> None:
    work, clock = Work(), FakeClock()
    queue = make_queue(work, clock)
    gate = work.hold("a")
    first = asyncio.create_task(queue.kick("a"))
    await settle()
    assert queue.running("a")
    # a burst of events while the first run is under way: each kick returns at once
    burst = [asyncio.create_task(queue.kick("a")) for _ in range(5)]
    await settle()
    finished, runs = [kick.done() for kick in burst], work.runs["a"]
    gate.set()
    await asyncio.gather(*burst)
    assert (finished, runs) == ([True] * 5, 1)
    await first
    assert work.runs["a"] == 2  # one more run for the whole burst, reading the latest state
    assert work.most_active["a"] == 1  # never two runs of one key at once
    assert not queue.running("a")
    await queue.kick("a")  # nothing running: runs at once
    assert work.runs["a"] == 3


@pytest.mark.asyncio
async def test_different_keys_run_concurrently() -> None:
    work, clock = Work(), FakeClock()
    queue = make_queue(work, clock)
    gate = work.hold("a")
    held = asyncio.create_task(queue.kick("a"))
    await settle()
    await queue.kick("b")  # not delayed by "a"
    assert (work.runs["a"], work.runs["b"], work.active["a"]) == (1, 1, 1)
    gate.set()
    await held


@pytest.mark.asyncio
async def test_failures_are_retried_with_backoff_and_a_success_resets_it() -> None:
    work, clock = Work(), FakeClock()
    retries: list[tuple[str, int, float]] = []
    queue = make_queue(work, clock, retries)
    work.failures["a"] = [FlakyError(), FlakyError(), FlakyError()]
    await queue.kick("a")  # fails: a retry waits 0.5 s
    assert (work.runs["a"], queue.attempts("a"), queue.scheduled("a")) == (1, 1, True)
    await clock.advance(0.49)
    assert work.runs["a"] == 1  # not before its time
    await clock.advance(0.01)
    assert work.runs["a"] == 2  # failed again: 1 s
    await clock.advance(1.0)
    assert work.runs["a"] == 3  # and again: 2 s
    await clock.advance(2.0)
    assert work.runs["a"] == 4  # succeeded
    assert retries == [("a", 1, 0.5), ("a", 2, 1.0), ("a", 3, 2.0)]
    assert (queue.attempts("a"), queue.scheduled("a")) == (0, False)
    work.failures["a"] = [FlakyError()]
    await queue.kick("a")
    assert retries[-1] == ("a", 1, 0.5)  # counted from the start again
    await clock.advance(0.5)
    assert work.runs["a"] == 6


@pytest.mark.asyncio
async def test_a_failure_outside_the_work_shares_the_attempt_count() -> None:
    work, clock = Work(), FakeClock()
    retries: list[tuple[str, int, float]] = []
    queue = make_queue(work, clock, retries)
    work.failures["a"] = [FlakyError()]
    await queue.kick("a")
    queue.retry("a", FlakyError("status write failed"))  # a retry is waiting already: kept
    assert retries == [("a", 1, 0.5), ("a", 2, 1.0)]
    await settle()
    assert clock.waiting == 1
    await clock.advance(0.5)
    assert work.runs["a"] == 2
    assert queue.attempts("a") == 0


@pytest.mark.asyncio
async def test_other_exceptions_reach_the_caller_and_free_the_key() -> None:
    work, clock = Work(), FakeClock()
    queue = make_queue(work, clock)
    work.failures["a"] = [BrokenError("bug")]
    with pytest.raises(BrokenError):
        await queue.kick("a")
    assert not queue.running("a")
    assert not queue.scheduled("a")
    await queue.kick("a")
    assert work.runs["a"] == 2


@pytest.mark.asyncio
async def test_a_dirty_key_is_not_run_again_after_a_failure() -> None:
    """The retry comes after the back-off: a failing server is not hammered by the burst."""
    work, clock = Work(), FakeClock()
    queue = make_queue(work, clock)
    gate = work.hold("a")
    work.failures["a"] = [FlakyError()]
    first = asyncio.create_task(queue.kick("a"))
    await settle()
    await queue.kick("a")
    gate.set()
    await first
    assert work.runs["a"] == 1
    await clock.advance(0.5)
    assert work.runs["a"] == 2


@pytest.mark.asyncio
async def test_later_runs_once_in_the_background() -> None:
    work, clock = Work(), FakeClock()
    queue = make_queue(work, clock)
    queue.later("b")
    queue.later("b")  # already waiting: not a second run
    assert work.runs["b"] == 0
    await clock.advance(0)
    assert work.runs["b"] == 1
    assert clock.slept == [0.0]


@pytest.mark.asyncio
async def test_forget_and_close_drop_waiting_retries() -> None:
    work, clock = Work(), FakeClock()
    queue = make_queue(work, clock)
    work.failures = {"a": [FlakyError()], "b": [FlakyError()], "c": [FlakyError()]}
    for key in "abc":
        await queue.kick(key)
    queue.forget("a")
    assert (queue.scheduled("a"), queue.attempts("a")) == (False, 0)
    queue.close()
    await clock.advance(60)
    assert work.runs == Counter({"a": 1, "b": 1, "c": 1})
