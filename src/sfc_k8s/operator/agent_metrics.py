"""Prometheus metrics of the node agent (prometheus-client), served on ``--metrics-port``.

Two kinds of metrics:

- data-plane counters (per endpoint packets and bytes, sessions and drops per link) are read from
  the pinned eBPF maps at scrape time by ``DataplaneCollector``: the maps are the source of truth
  and keep counting while the agent restarts, so the agent keeps no copy of them;
- the agent's own work: a reconcile latency histogram, reconcile errors by reason and data-plane
  operations by kind, updated by the handlers in ``sfc_k8s.operator.agent``.

The HTTP endpoint is served by the agent's event loop (aiohttp), but a scrape is rendered in a
worker thread: reading every link's endpoints, counters and sessions takes tens to hundreds of
milliseconds with a thousand links, and on the loop it delayed every reconcile queued behind
it. The data plane's reads are safe next to the loop's writes (``Dataplane.statuses``: no
lock, each map entry consistent, a link deleted meanwhile left out), and prometheus-client's
metric objects lock their own updates. The same server answers the kubelet's probes:
``/healthz`` (liveness: the event loop answers) and ``/readyz`` (readiness: the agent's own
verdict, 503 with the reason until it is ready), and ``/traffic/pods`` (each pod's traffic
rates, ``sfc_k8s.operator.agent_traffic``). Each agent has its own ``CollectorRegistry``:
several agents in one process (tests, benchmarks) never share series.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from sfc_k8s.dataplane import Endpoint, LinkStatus

logger = logging.getLogger(__name__)

LINK_LABELS = ["link", "namespace", "crossconnection"]
RECONCILE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def endpoint_label(endpoint: Endpoint) -> str:
    """The ``interface`` label of an endpoint: its host interface, or ``#ID@NODE`` for a remote
    one (as ``sfc-k8s dp`` shows it), so that each remote endpoint has its own series."""
    return f"#{endpoint.id}@{endpoint.node}" if endpoint.node else endpoint.ifname


@dataclass(frozen=True)
class LinkSample:
    """One link's status with the CrossConnection it carries (empty if not known yet)."""

    namespace: str
    crossconnection: str
    status: LinkStatus


class DataplaneCollector(Collector):
    """Reads every link's counters when Prometheus scrapes; ``source`` lists the links."""

    def __init__(self, source: Callable[[], Iterable[LinkSample]]) -> None:
        self._source = source

    def describe(self) -> Iterator[Metric]:
        """The metric families without samples (registration must not read the data plane)."""
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        packets, octets, endpoints, sessions, drops = self._families()
        for sample in self._source():
            status = sample.status
            base = [status.name, sample.namespace, sample.crossconnection]
            per_state: dict[tuple[str, str], int] = {}
            for ep in status.endpoints:
                labels = [*base, ep.side.value, endpoint_label(ep), ep.state.value]
                c = ep.counters
                packets.add_metric([*labels, "rx"], c.rx_packets)
                packets.add_metric([*labels, "tx"], c.tx_packets)
                octets.add_metric([*labels, "rx"], c.rx_bytes)
                octets.add_metric([*labels, "tx"], c.tx_bytes)
                key = (ep.side.value, ep.state.value)
                per_state[key] = per_state.get(key, 0) + 1
            for (side, state), count in sorted(per_state.items()):
                endpoints.add_metric([*base, side, state], count)
            sessions.add_metric(base, status.sessions)
            for reason, count in sorted(status.drops.items()):
                drops.add_metric([*base, reason.name.lower()], count)
        yield from (packets, octets, endpoints, sessions, drops)

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily,
        CounterMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        CounterMetricFamily,
    ]:
        endpoint_labels = [*LINK_LABELS, "side", "interface", "state", "direction"]
        packets = CounterMetricFamily(
            "sfc_k8s_endpoint_packets",
            "Packets per endpoint: rx entered the link from the endpoint's interface,"
            " tx were redirected into the endpoint's pod; for a remote endpoint (interface"
            " #ID@NODE), tx were sent to it through the tunnel and rx received from it",
            labels=endpoint_labels,
        )
        octets = CounterMetricFamily(
            "sfc_k8s_endpoint_bytes",
            "Bytes per endpoint, same directions as sfc_k8s_endpoint_packets",
            labels=endpoint_labels,
        )
        endpoints = GaugeMetricFamily(
            "sfc_k8s_link_endpoints",
            "Endpoints programmed in a link, by side and state",
            labels=[*LINK_LABELS, "side", "state"],
        )
        sessions = GaugeMetricFamily(
            "sfc_k8s_link_sessions", "Sessions recorded for a link", labels=LINK_LABELS
        )
        drops = CounterMetricFamily(
            "sfc_k8s_link_drops",
            "Packets a link dropped, by reason",
            labels=[*LINK_LABELS, "reason"],
        )
        return packets, octets, endpoints, sessions, drops


class AgentMetrics:
    """The agent's metric objects and, once ``start`` ran, its HTTP endpoint."""

    def __init__(
        self,
        source: Callable[[], Iterable[LinkSample]],
        *,
        add_routes: Callable[[web.Application], None] | None = None,
    ) -> None:
        """``add_routes`` adds more endpoints to the server (the per-pod traffic rates)."""
        self._add_routes = add_routes
        self.registry = CollectorRegistry(auto_describe=True)
        self.reconcile_seconds = Histogram(
            "sfc_k8s_agent_reconcile_seconds",
            "Time to reconcile one CrossConnection into the data plane",
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "sfc_k8s_agent_reconcile_errors",
            "Reconciles that did not complete, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.operations = Counter(
            "sfc_k8s_agent_dataplane_operations",
            "Data-plane operations the agent applied, by kind",
            ["operation"],
            registry=self.registry,
        )
        self.registry.register(DataplaneCollector(source))
        self._runner: web.AppRunner | None = None
        self._rendering: set[asyncio.Future[bytes]] = set()  # scrapes in worker threads
        self.port: int | None = None

    async def render(self, accept: str = "") -> tuple[bytes, str]:
        """The registry in the format ``accept`` asks for, and its content type, rendered in
        a worker thread (the loop goes on meanwhile); ``stop`` waits for it."""
        encoder, content_type = choose_encoder(accept)
        rendering = asyncio.ensure_future(asyncio.to_thread(encoder, self.registry))
        self._rendering.add(rendering)
        rendering.add_done_callback(self._rendering.discard)
        # Shielded: a client hanging up cancels its wait, not the thread's work.
        return await asyncio.shield(rendering), content_type

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        output, content_type = await self.render(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        response = web.Response(body=output, headers={hdrs.CONTENT_TYPE: content_type})
        response.enable_compression()
        return response

    async def start(
        self, host: str, port: int, *, not_ready: Callable[[], str | None] = lambda: None
    ) -> int:
        """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (0: any free port).

        ``not_ready`` returns why the agent is not ready yet, or None once it is. Returns the
        bound port.
        """

        async def healthz(_: web.Request) -> web.Response:
            return web.Response(text="ok\n")

        async def readyz(_: web.Request) -> web.Response:
            reason = not_ready()
            if reason is None:
                return web.Response(text="ready\n")
            return web.Response(status=503, text=f"not ready: {reason}\n")

        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        if self._add_routes is not None:
            self._add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        server = site._server  # aiohttp exposes the bound sockets only here
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        logger.info("serving metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    async def stop(self) -> None:
        """Stop serving and wait for the scrapes being rendered: the caller closes the data
        plane's file descriptors next, which their threads must not be reading."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._rendering:
            await asyncio.gather(*self._rendering, return_exceptions=True)
