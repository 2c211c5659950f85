"""The node agent's per-pod traffic endpoint: ``GET /traffic/pods`` on its metrics server.

Built by ``sfc_k8s.operator.agent.NodeAgent`` with a function that reads its local endpoints'
counters (and, when asked, their sessions); this module samples it every ``interval`` on the
agent's event loop (so reads never overlap a handler changing the data plane) and answers the
metrics provider (``sfc_k8s.operator.metrics_provider``) with every pod's rates over the last
``window`` seconds (``sfc_k8s.operator.pod_traffic``). Rates are computed here, on the node
that holds the counters, so the provider never keeps state and a request costs one read of the
counters and one walk of the session table.

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
from collections.abc import Callable, Iterator, Sequence

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

# Reads the local endpoints; ``sessions=True`` also walks the session table for their counts.
ReadEndpoints = Callable[[bool], Sequence[EndpointReading]]


class AgentTraffic:
    """Samples the endpoints' counters and serves the pods' rates."""

    def __init__(
        self,
        node: str,
        read: ReadEndpoints,
        *,
        window: float = DEFAULT_WINDOW,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.meter = TrafficMeter(window=window)
        self.interval = interval
        self._read = read
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(TRAFFIC_PATH, self._serve)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._sample_loop(), name="sfc-k8s-agent-traffic")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def sample(self) -> None:
        """Take one sample now (a data-plane error skips it: the next one will do)."""
        try:
            readings = self._read(False)
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
        try:
            readings = self._read(True)
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

    def __init__(self, read: ReadEndpoints) -> None:
        self._read = read

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        packets, octets, sessions = self._families()
        totals: dict[tuple[str, str], list[int]] = {}
        try:
            readings = self._read(True)
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
