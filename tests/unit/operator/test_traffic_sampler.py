"""The agent's traffic sampler reads the counters in a worker thread, and ``stop`` waits for it.

``AgentTraffic`` with a stand-in read that holds until the test lets it go; what is tested is
the thread a read runs in and what has happened before it is let go, never timing. Covers:
- a sample's read runs off the event loop's thread, and its readings reach the meter;
- ``stop`` returns only once a read in progress has ended (the agent closes the data plane's
  fds right after, which the read's thread must not be using).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

import pytest

from sfc_k8s.operator.agent_traffic import AgentTraffic
from sfc_k8s.operator.pod_traffic import EndpointReading, PodRef

POD = PodRef("nf", "fw-0", "uid-0")
DEADLOCK_GUARD = 30.0  # seconds: only a broken build waits this long


class GatedRead:
    """The counters read: records its threads, signals its start, holds until let go."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.go = threading.Event()
        self.ended = threading.Event()
        self.threads: set[int] = set()

    def __call__(self, live: Mapping[str, int]) -> list[EndpointReading]:
        self.threads.add(threading.get_ident())
        self.started.set()
        try:
            assert self.go.wait(DEADLOCK_GUARD), "the read was never let go"
            return [EndpointReading("link/host0", POD, 100, 6400)]
        finally:
            self.ended.set()


def _has_baseline(traffic: AgentTraffic) -> bool:
    """Whether the meter holds a sample: a later reading then has a rate."""
    later = EndpointReading("link/host0", POD, 200, 12800)
    return bool(traffic.meter.rates(1.0, [later]))


@pytest.mark.asyncio
async def test_a_sample_reads_off_the_loop_and_feeds_the_meter() -> None:
    read = GatedRead()
    traffic = AgentTraffic("node-1", read, interval=3600, clock=lambda: 0.0)
    traffic.start()
    try:
        assert await asyncio.to_thread(read.started.wait, DEADLOCK_GUARD)
        assert not read.ended.is_set()  # the loop runs this line while the read holds
        assert not _has_baseline(traffic)
        read.go.set()
        await asyncio.to_thread(read.ended.wait, DEADLOCK_GUARD)
        for _ in range(1000):  # the thread's result comes back to the loop in a few turns
            if _has_baseline(traffic):
                break
            await asyncio.sleep(0)
        assert _has_baseline(traffic)
    finally:
        read.go.set()
        await traffic.stop()
    assert threading.get_ident() not in read.threads


@pytest.mark.asyncio
async def test_stop_waits_for_a_sample_in_progress() -> None:
    read = GatedRead()
    traffic = AgentTraffic("node-1", read, interval=3600)
    traffic.start()
    assert await asyncio.to_thread(read.started.wait, DEADLOCK_GUARD)
    stopping = asyncio.create_task(traffic.stop())
    for _ in range(10):
        await asyncio.sleep(0)
    assert not stopping.done()  # held by the read
    read.go.set()
    await stopping
    assert read.ended.is_set()
