"""The node agent's periodic reads never hold its reconciles (issue 14's reaction tail).

The agent runs for real (Kopf via KopfRunner) against the local API server, with real veths
and a private bpffs root. A read is held by a gate the test lets go; what is shown is order
(a reconcile that completed while the read was still held), never timing. Covers:
- a traffic sample whose read is held: an endpoint added meanwhile is programmed and reported
  before the read is let go (the sampler reads in a worker thread, not on the event loop);
- a ``/metrics`` scrape held while it renders: the same, and the scrape then answers with the
  data-plane series (rendering runs in a worker thread);
- a reconcile reads no per-endpoint counter (it plans from states and names only).
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sfc_k8s.dataplane import Dataplane
from sfc_k8s.operator.agent_reconcile import link_name
from tests.integration.operator.test_agent_programming import (
    NAMESPACE,
    Api,
    Pod,
    link_state,
    make_pod,
    plug,
    running_agent,
    wait_for,
    wait_programmed,
)
from tests.nettools import Janitor, unique

T = TypeVar("T")
GUARD = 60.0  # seconds a gate holds at most: only a broken build waits this long


class Gate:
    """Holds the first call that passes through it until let go; later calls pass."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        self.left = threading.Event()

    def hold(self, call: Callable[[], T]) -> T:
        if self.entered.is_set():
            return call()
        self.entered.set()
        try:
            self.go.wait(GUARD)
            return call()
        finally:
            self.left.set()


class HeldCollector(Collector):
    """A collector whose first collection waits at the gate (a slow scrape)."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    def describe(self) -> Iterator[Metric]:
        return iter(())  # registering must not collect (the registry would, without this)

    def collect(self) -> Iterator[Metric]:
        yield self._gate.hold(lambda: GaugeMetricFamily("sfc_test_held", "held", value=1))


@dataclass(frozen=True)
class Scene:
    """An xc ``name`` linking ``client`` to ``fw1`` on ``node``; ``fw2`` plugged, not listed."""

    api: Api
    dataplane: Dataplane
    node: str
    name: str
    client: Pod
    fw1: Pod
    fw2: Pod

    def add_fw2(self) -> None:
        """List fw2 too; return once it is programmed and the agent reported the change."""
        b = [self.fw1.endpoint(self.node), self.fw2.endpoint(self.node)]
        self.api.set_endpoints(self.name, [self.client.endpoint(self.node)], b)
        link = link_name(NAMESPACE, self.name)
        wait_for(
            "fw2 programmed", lambda: self.fw2.host in (link_state(self.dataplane, link) or {})
        )
        wait_programmed(self.api, self.name, self.node)


def _scene(janitor: Janitor, api: Api, dataplane: Dataplane) -> Scene:
    node = unique("node")
    client, fw1, fw2 = (make_pod(janitor, p) for p in ("client", "fw1", "fw2"))
    for pod in (client, fw1, fw2):
        plug(janitor, pod)
    name = unique("xc-off", 30)
    janitor.add(lambda: api.force_delete_xc(name))
    api.create_xc(name, [client.endpoint(node)], [fw1.endpoint(node)])
    return Scene(api, dataplane, node, name, client, fw1, fw2)


def _added_while_held(scene: Scene, gate: Gate) -> None:
    """With the gate holding a read: add fw2, see it programmed and reported, then check the
    read is still held (the reconcile did not wait for it)."""
    assert gate.entered.wait(GUARD), "the read never reached the gate"
    scene.add_fw2()
    assert not gate.left.is_set(), "the read ended before the reconcile: it held the loop"


def test_a_held_traffic_sample_does_not_hold_a_reconcile(
    apiserver: Any, api: Api, janitor: Janitor, bpffs_root: str, dataplane: Dataplane
) -> None:
    scene = _scene(janitor, api, dataplane)
    gate = Gate()
    janitor.add(gate.go.set)  # a failing test lets the read go before the agent stops
    with running_agent(apiserver, bpffs_root, scene.node) as agent:
        wait_programmed(api, scene.name, scene.node)
        read = agent.traffic._read
        agent.traffic._read = lambda live: gate.hold(lambda: read(live))
        _added_while_held(scene, gate)
        gate.go.set()
        assert gate.left.wait(GUARD)


def test_a_held_scrape_does_not_hold_a_reconcile(
    apiserver: Any, api: Api, janitor: Janitor, bpffs_root: str, dataplane: Dataplane
) -> None:
    scene = _scene(janitor, api, dataplane)
    gate = Gate()
    janitor.add(gate.go.set)
    with running_agent(apiserver, bpffs_root, scene.node) as agent:
        wait_programmed(api, scene.name, scene.node)
        agent.metrics.registry.register(HeldCollector(gate))
        answer: list[str] = []
        url = f"http://127.0.0.1:{agent.metrics.port}/metrics"

        def scrape() -> None:
            with urllib.request.urlopen(url, timeout=GUARD + 30) as resp:
                answer.append(resp.read().decode())

        scraper = threading.Thread(target=scrape)
        scraper.start()
        try:
            _added_while_held(scene, gate)
        finally:
            gate.go.set()
            scraper.join(GUARD + 30)
    assert answer and "sfc_test_held 1.0" in answer[0]
    assert f'link="{link_name(NAMESPACE, scene.name)}"' in answer[0]


def test_a_reconcile_reads_no_counters(
    apiserver: Any, api: Api, janitor: Janitor, bpffs_root: str, dataplane: Dataplane
) -> None:
    scene = _scene(janitor, api, dataplane)
    with running_agent(apiserver, bpffs_root, scene.node) as agent:
        wait_programmed(api, scene.name, scene.node)
        reads: list[int] = []
        counters = agent.dataplane._counters

        def counted(slot: int) -> Any:
            reads.append(slot)
            return counters(slot)

        # Instance attributes, gone with the agent's data plane at the end of the block.
        agent.dataplane._counters = counted  # type: ignore[method-assign]
        agent.traffic._read = lambda _: []  # the sampler reads counters, apart from reconciles
        scene.add_fw2()
    assert reads == []
