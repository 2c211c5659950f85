"""The node agent's per-pod traffic endpoint: ``GET /traffic/pods`` on its metrics server.

Built by ``sfc_k8s.operator.agent.NodeAgent`` with two functions: one reads its local
endpoints' counters (two batch walks of node-wide arrays: 12-40 ms on a loaded two-core VM,
the same for one link or a thousand), one walks the session tables for each endpoint's live
sessions (costly: the whole table, up to millions of entries). This module samples the
counters every ``interval`` and answers the metrics provider
(``sfc_k8s.operator.metrics_provider``) with every pod's rates over the last ``window``
seconds (``sfc_k8s.operator.pod_traffic``). Rates are computed here, on the node that holds
the counters, so the provider never keeps state.

Both reads run in worker threads (they read node-wide maps only, which the kernel keeps
consistent per entry, next to the loop's writes), so the loop keeps serving Kopf, probes and
other requests meanwhile: a sample read on the loop every second delayed the reconciles queued
behind it by its whole duration. The meter itself is only touched on the loop. Requests that
arrive while a session walk runs share it, and its counts serve every request of the same
``interval`` (the counters' own sampling period): N concurrent requests cost one walk.

Answer (JSON): ``{"node", "timestamp", "windowSeconds", "pods": [PodTraffic.to_json()...]}``;
``?namespace=NS`` keeps one namespace's pods.

``PodTrafficCollector`` exports the same per-pod figures to Prometheus (counters labelled
``namespace`` and ``pod``), for clusters that serve custom metrics with prometheus-adapter or
scale with KEDA (``examples/autoscaling/``): there Prometheus computes the rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sfc_k8s.api import now_rfc3339
from sfc_k8s.dataplane import DataplaneError
from sfc_k8s.operator.pod_traffic import (
    DEFAULT_INTERVAL,
    DEFAULT_WINDOW,
    EndpointReading,
    TrafficMeter,
)

logger = logging.getLogger(__name__)

TRAFFIC_PATH = "/traffic/pods"

T = TypeVar("T")

# Reads the local endpoints' counters, with the given live sessions per host interface.
ReadEndpoints = Callable[[Mapping[str, int]], Sequence[EndpointReading]]
# Walks the session tables: live sessions per local host interface (thread-safe).
WalkSessions = Callable[[], Mapping[str, int]]


def _no_sessions() -> Mapping[str, int]:
    return {}


class AgentTraffic:
    """Samples the endpoints' counters and serves the pods' rates."""

    def __init__(
        self,
        node: str,
        read: ReadEndpoints,
        walk: WalkSessions = _no_sessions,
        *,
        window: float = DEFAULT_WINDOW,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.meter = TrafficMeter(window=window)
        self.interval = interval
        self._read = read
        self._walk = walk
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._walking: asyncio.Task[Mapping[str, int]] | None = None  # the walk in progress
        self._walked: tuple[float, Mapping[str, int]] | None = None  # (when, counts) of the last
        self._threads: set[asyncio.Future[Any]] = set()  # reads running in worker threads
        self._stopped = False

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(TRAFFIC_PATH, self._serve)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._sample_loop(), name="sfc-k8s-agent-traffic")

    async def stop(self) -> None:
        """Stop sampling and wait for the reads in progress: the caller closes the data plane's
        file descriptors next, which their threads must not be reading."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._walking is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._walking)
        if self._threads:
            await asyncio.gather(*self._threads, return_exceptions=True)

    async def _in_thread(self, call: Callable[[], T]) -> T:
        """``call()`` in a worker thread, awaited by ``stop`` even if this wait is cancelled."""
        running = asyncio.ensure_future(asyncio.to_thread(call))
        self._threads.add(running)
        running.add_done_callback(self._threads.discard)
        return await asyncio.shield(running)

    async def sessions(self) -> Mapping[str, int]:
        """Live sessions per local host interface: the last walk's if it is younger than
        ``interval``, else the walk in progress (started if none is), run in a worker thread."""
        if self._walked is not None and self._clock() - self._walked[0] < self.interval:
            return self._walked[1]
        if self._walking is None:
            self._walking = asyncio.create_task(self._walk_once(), name="sfc-k8s-session-walk")
        # Shielded: a client hanging up cancels its own wait, not the walk the others share.
        return await asyncio.shield(self._walking)

    async def _walk_once(self) -> Mapping[str, int]:
        try:
            counts = await self._in_thread(self._walk)
            self._walked = (self._clock(), counts)
            return counts
        finally:
            self._walking = None

    def sample(self) -> None:
        """Take one sample now, in the calling thread (tests; the agent samples off its loop)."""
        readings = self._read_counters()
        if readings is not None:
            self.meter.sample(self._clock(), readings)

    def _read_counters(self) -> Sequence[EndpointReading] | None:
        """The counters now, None if the data plane could not be read (the next sample will)."""
        try:
            return self._read({})
        except DataplaneError as err:
            logger.warning("traffic sample skipped: %s", err)
            return None

    async def _sample_loop(self) -> None:
        while True:
            readings = await self._in_thread(self._read_counters)
            if readings is not None:  # the meter is kept on the loop, which serves its rates
                self.meter.sample(self._clock(), readings)
            await asyncio.sleep(self.interval)

    async def _serve(self, request: web.Request) -> web.Response:
        namespace = request.query.get("namespace")
        if self._stopped:
            return web.json_response({"message": "the agent is stopping"}, status=503)
        try:
            live = await self.sessions()
            readings = await self._in_thread(lambda: self._read(live))
        except DataplaneError as err:
            return web.json_response({"message": f"cannot read the data plane: {err}"}, status=503)
        pods = self.meter.rates(self._clock(), readings)
        return web.json_response(
            {
                "node": self.node,
                "timestamp": now_rfc3339(),
                "windowSeconds": self.meter.window,
                "pods": [
                    p.to_json() for p in pods if namespace is None or p.pod.namespace == namespace
                ],
            }
        )


class PodTrafficCollector(Collector):
    """Per-pod counters at scrape time: packets and bytes delivered into the pod (summed over
    its interfaces; a removed interface takes its share with it, which ``rate()`` reads as a
    counter reset) and its sessions (its busiest interface's)."""

    def __init__(self, read: ReadEndpoints, walk: WalkSessions = _no_sessions) -> None:
        self._read = read
        self._walk = walk

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        packets, octets, sessions = self._families()
        totals: dict[tuple[str, str], list[int]] = {}
        try:
            readings = self._read(self._walk())
        except DataplaneError as err:
            logger.warning("per-pod metrics skipped: %s", err)
            readings = []
        for reading in readings:
            total = totals.setdefault((reading.pod.namespace, reading.pod.name), [0, 0, 0])
            total[0] += reading.packets
            total[1] += reading.octets
            total[2] = max(total[2], reading.sessions)
        for labels, (npackets, noctets, nsessions) in sorted(totals.items()):
            packets.add_metric(labels, npackets)
            octets.add_metric(labels, noctets)
            sessions.add_metric(labels, nsessions)
        yield from (packets, octets, sessions)

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, CounterMetricFamily, GaugeMetricFamily]:
        labels = ["namespace", "pod"]
        return (
            CounterMetricFamily(
                "sfc_k8s_pod_received_packets",
                "Packets the data plane delivered into the pod, over its cross-connected"
                " interfaces",
                labels=labels,
            ),
            CounterMetricFamily(
                "sfc_k8s_pod_received_bytes",
                "Bytes the data plane delivered into the pod, over its cross-connected interfaces",
                labels=labels,
            ),
            GaugeMetricFamily(
                "sfc_k8s_pod_sessions",
                "Live sessions of the pod's busiest cross-connected interface",
                labels=labels,
            ),
        )
