"""The agent's ``/traffic/pods`` walks the session tables off its event loop, once per burst.

``AgentTraffic`` served by a real aiohttp server on localhost. The session walk is stood in by a
function that holds until the test lets it go: what is tested is where and how often the walk
runs, shown by ordering (what answered before the walk was let go), never by timing. Covers:
- while a walk runs, the event loop answers ``/healthz`` (the walk is let go only after that
  answer: a walk on the loop would block it, and the test would fail on its deadlock guard);
- requests that arrive during a walk share it: three concurrent requests, one walk, each answer
  carrying its session counts;
- a request within the sampling interval reuses the last counts; one after it walks again (a
  made-up clock);
- ``stop`` waits for a walk in progress (the agent closes the data plane's fds right after).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from sfc_k8s.operator.agent_traffic import TRAFFIC_PATH, AgentTraffic
from sfc_k8s.operator.pod_traffic import EndpointReading, PodRef

POD = PodRef("nf", "fw-0", "uid-0")
DEADLOCK_GUARD = 30.0  # seconds: only a broken build waits this long


class GatedWalk:
    """The session walk: counts its runs, signals its start, holds until let go."""

    def __init__(self) -> None:
        self.runs = 0
        self.started = threading.Event()
        self.go = threading.Event()
        self.threads: set[int] = set()

    def __call__(self) -> Mapping[str, int]:
        self.runs += 1
        self.threads.add(threading.get_ident())
        self.started.set()
        assert self.go.wait(DEADLOCK_GUARD), "the walk was never let go"
        return {"host0": 7}


class Clock:
    """A made-up monotonic clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def read(live: Mapping[str, int]) -> list[EndpointReading]:
    return [EndpointReading("link/host0", POD, 100, 6400, live.get("host0", 0))]


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[AgentTraffic, GatedWalk, Clock, str]]:
    walk, clock = GatedWalk(), Clock()
    traffic = AgentTraffic("node-1", read, walk, clock=clock)
    traffic.sample()  # a baseline at 0 s, so that a request at 1 s has a rate
    clock.now = 1.0

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    traffic.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield traffic, walk, clock, f"http://127.0.0.1:{port}"
    finally:
        walk.go.set()
        await traffic.stop()
        await runner.cleanup()


async def _get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json() if resp.content_type == "application/json" else await resp.text()


@pytest.mark.asyncio
async def test_the_walk_leaves_the_loop_free_and_concurrent_requests_share_it(
    served: tuple[AgentTraffic, GatedWalk, Clock, str],
) -> None:
    _, walk, _, base = served
    async with aiohttp.ClientSession() as session:
        requests = [asyncio.create_task(_get(session, base + TRAFFIC_PATH)) for _ in range(3)]
        assert await asyncio.to_thread(walk.started.wait, DEADLOCK_GUARD)
        # The walk holds; the loop must still answer (a walk on the loop would block this).
        assert await _get(session, base + "/healthz") == "ok\n"
        assert not any(r.done() for r in requests)
        walk.go.set()
        answers = await asyncio.gather(*requests)
    assert walk.runs == 1
    assert threading.get_ident() not in walk.threads
    for answer in answers:
        assert [(p["name"], p["sessions"]) for p in answer["pods"]] == [("fw-0", 7)]


@pytest.mark.asyncio
async def test_counts_are_reused_within_the_interval_and_walked_again_after(
    served: tuple[AgentTraffic, GatedWalk, Clock, str],
) -> None:
    traffic, walk, clock, _ = served
    walk.go.set()
    assert await traffic.sessions() == {"host0": 7}
    clock.now += traffic.interval / 2
    assert await traffic.sessions() == {"host0": 7}
    assert walk.runs == 1
    clock.now += traffic.interval
    await traffic.sessions()
    assert walk.runs == 2


@pytest.mark.asyncio
async def test_stop_waits_for_a_walk_in_progress(
    served: tuple[AgentTraffic, GatedWalk, Clock, str],
) -> None:
    traffic, walk, _, _ = served
    pending = asyncio.create_task(traffic.sessions())
    assert await asyncio.to_thread(walk.started.wait, DEADLOCK_GUARD)
    stopping = asyncio.create_task(traffic.stop())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not stopping.done()  # held by the walk
    walk.go.set()
    await stopping
    assert await pending == {"host0": 7}
