"""The node agent's per-pod traffic endpoint: ``GET /traffic/pods`` on its metrics server.

Built by ``sfc_k8s.operator.agent.NodeAgent`` with two functions: one reads its local
endpoints' counters (cheap: a few map lookups per endpoint), one walks the session tables for
each endpoint's live sessions (costly: the whole table, up to millions of entries). This module
samples the counters every ``interval`` on the agent's event loop (so reads never overlap a
handler changing the data plane) and answers the metrics provider
(``sfc_k8s.operator.metrics_provider``) with every pod's rates over the last ``window`` seconds
(``sfc_k8s.operator.pod_traffic``). Rates are computed here, on the node that holds the
counters, so the provider never keeps state.

The session walk runs in a worker thread (it reads node-wide maps only, which the kernel keeps
consistent per entry), so the loop keeps serving Kopf, probes and other requests meanwhile;
requests that arrive while a walk runs share it, and its counts serve every request of the
same ``interval`` (the counters' own sampling period): N concurrent requests cost one walk.

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
        self._stopped = False

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(TRAFFIC_PATH, self._serve)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._sample_loop(), name="sfc-k8s-agent-traffic")

    async def stop(self) -> None:
        """Stop sampling and wait for a walk in progress: the caller closes the data plane's
        file descriptors next, which the walk's thread must not be reading."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._walking is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._walking)

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
            counts = await asyncio.to_thread(self._walk)
            self._walked = (self._clock(), counts)
            return counts
        finally:
            self._walking = None

    def sample(self) -> None:
        """Take one sample now (a data-plane error skips it: the next one will do)."""
        try:
            readings = self._read({})
        except DataplaneError as err:
            logger.warning("traffic sample skipped: %s", err)
            return
        self.meter.sample(self._clock(), readings)

    async def _sample_loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    async def _serve(self, request: web.Request) -> web.Response:
        namespace = request.query.get("namespace")
        if self._stopped:
            return web.json_response({"message": "the agent is stopping"}, status=503)
        try:
            readings = self._read(await self.sessions())
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
