"""``sfc-k8s demo`` (``make demo``): the transparent-firewall chain, scaled under traffic.

Starts the local cluster with two nodes (or reuses one with ``--keep``), applies
``examples/transparent-firewall`` with kubectl, waits for the chain to be Ready, then runs
traffic from the client pod to the server pod through the firewall replicas: ping, back-to-back
iperf3 rounds with 8 streams, and long-lived TCP flows whose every echoed byte is checked. It
scales the firewall 2 -> 4 -> 1 with ``kubectl scale`` while the traffic runs; after each step it
prints per-replica packets/bytes (scraped from the node agents' data-plane metrics), each
replica's node and the packets the client's node exchanged with it through the tunnel, and
whether any established flow broke. The scheduler spreads the replicas over the nodes, so flows
from the client reach replicas on the other node through the tunnel: the demo checks that some
long-lived flows did, in both nodes' session tables and tunnel counters, byte-exact. Then the
HPA takes over (``demo_autoscale.py``): a UDP load ramp the chain's ``autoscaling`` block
follows 1 -> 4 -> 1 replicas, draining on the way down. It writes a PNG of per-replica
throughput, packets/s and the replica count over time, exits 0 only if every check held, and
removes the cluster unless ``--keep``. The end-to-end test calls ``run`` with shorter durations.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sfc_k8s.api.conditions import is_ready
from sfc_k8s.api.naming import host_ifname
from sfc_k8s.dataplane import Dataplane, DataplaneError, LinkNotFound, Session
from sfc_k8s.local import cli as local_cli
from sfc_k8s.local import netns, operator_pods
from sfc_k8s.local.demo_autoscale import AutoscaleAct
from sfc_k8s.local.kube import KubeError, SyncKube, load_kubeconfig
from sfc_k8s.local.layout import Layout, default_state_dir, node_name, read_json
from sfc_k8s.local.paths import examples_dir
from sfc_k8s.local.traffic import (
    EchoFlow,
    EndpointSample,
    IperfLoop,
    IperfRound,
    MetricsSnapshot,
    ping,
    scrape_agent,
    short_flows,
)
from sfc_k8s.operator.agent_reconcile import link_name

NAMESPACE = "sfc-demo"
CHAIN = "transparent-firewall"
SERVER_IP = "192.168.100.20"
ECHO_PORT = 7007
IPERF_PORT = 5201
METRICS_PORT = 9469
XC_IN = f"{CHAIN}-client-firewall"  # firewall eth1 is side b
XC_OUT = f"{CHAIN}-firewall-server"  # firewall eth2 is side a
# A long-lived flow echoes every 50 ms; a gap of STALL seconds with no echo is forty times its
# pace and ten times TCP's first retransmission timeout: only a lost path makes one. A flow
# whose replica was removed under it re-picks a replica once the agent purges its session,
# after TCP's backed-off retransmissions: it may pause up to MOVED_STALL.
STALL = 2.0
MOVED_STALL = 6.0
MAX_EXTRA_FLOWS = 48  # flows opened so that every replica carries a long-lived one


@dataclass
class DemoOptions:
    nodes: int = 2
    keep: bool = False
    steps: tuple[int, ...] = (4, 1)  # the firewall starts with 2 replicas
    dwell: float = 8.0  # seconds of traffic after each step is in place
    flows: int = 16  # long-lived echo flows
    streams: int = 8  # iperf3 parallel streams
    iperf_seconds: int = 2
    short_flows: int = 32  # new flows opened at each step, so every replica gets some
    timeout: float = 120.0
    # the autoscaling act (demo_autoscale.py): load ramp seconds up, held, down; None: skip it
    ramp: tuple[float, float, float] | None = (6.0, 10.0, 3.0)
    plot: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "sfc-k8s-demo.png")


TCP = 6
# (node, crossconnection, "#ID@NODE") -> counters of a remote endpoint as that node sees them
Tunnel = dict[tuple[str, str, str], EndpointSample]
FlowId = tuple[str, int, str, int, str, int]  # kind, protocol, lower end, its port, higher end


@dataclass
class Placed:
    """Where one flow of the inbound link runs: the firewall replica's eth1 host interface and
    the nodes whose data plane holds a session of it."""

    interface: str
    nodes: set[str] = field(default_factory=set)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Replica:
    pod: str
    uid: str
    node: str

    @property
    def eth1(self) -> str:
        return host_ifname(self.uid, "eth1")


class DemoError(Exception):
    """A step of the demo could not be carried out (the checks so far are reported)."""


@dataclass(frozen=True)
class Gap:
    """A pause of one long-lived flow: no echo between ``begin`` and ``end`` (demo clock)."""

    flow: int
    begin: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.begin


class FlowProgress:
    """Watches the echoed bytes of every long-lived flow and keeps each pause above ``record``.

    An echo flow waits up to its socket timeout for a reply and drops errors raised after
    ``stop()``, so "not broken" alone cannot see a stall: this watcher can. Pauses are kept to
    the end of the run; ``close`` ends the pauses still open when the traffic stops.
    """

    def __init__(self, t0: float, *, period: float = 0.05, record: float = 0.5) -> None:
        self.t0 = t0
        self.period = period
        self.record = record
        self.gaps: list[Gap] = []
        self._flows: list[EchoFlow] = []
        self._seen: dict[int, tuple[int, float]] = {}  # flow index -> (bytes, last advance)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flow-progress", daemon=True)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self) -> None:
        self._thread.start()

    def add(self, flows: list[EchoFlow]) -> None:
        with self._lock:
            for flow in flows:
                self._flows.append(flow)
                self._seen[flow.index] = (flow.bytes_ok, self.now())

    def remove(self, flows: list[EchoFlow]) -> None:
        """Stop watching flows that ended on purpose (their pause from now on is no stall)."""
        with self._lock:
            gone = {flow.index for flow in flows}
            self._flows = [f for f in self._flows if f.index not in gone]
            for index in gone:
                self._seen.pop(index, None)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.poll()

    def poll(self) -> None:
        now = self.now()
        with self._lock:
            for flow in self._flows:
                seen, since = self._seen[flow.index]
                if flow.bytes_ok != seen:
                    if now - since > self.record:
                        self.gaps.append(Gap(flow.index, since, now))
                    self._seen[flow.index] = (flow.bytes_ok, now)

    def open_gaps(self) -> list[Gap]:
        """The pauses still going on now, longer than ``record``."""
        now = self.now()
        with self._lock:
            return [
                Gap(index, since, now)
                for index, (_, since) in self._seen.items()
                if now - since > self.record
            ]

    def close(self) -> None:
        """Stop watching; a flow paused at this moment keeps that pause on record."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.poll()
        gaps = self.open_gaps()
        with self._lock:
            self.gaps.extend(gaps)
            self._flows.clear()
            self._seen.clear()

    def during(self, begin: float, end: float) -> list[Gap]:
        """Recorded and open pauses overlapping ``[begin, end]``."""
        everything = [*self.gaps, *self.open_gaps()]
        return [g for g in everything if g.end >= begin and g.begin <= end]


def stalls(gaps: list[Gap], moved: dict[int, tuple[float, float]]) -> list[tuple[Gap, float]]:
    """The pauses longer than allowed, each with its bound.

    A pause may reach MOVED_STALL only for a flow whose replica was removed, in the step where
    that happened (``moved``: flow index -> that step's window); every other pause STALL.
    """
    out = []
    for gap in gaps:
        window = moved.get(gap.flow)
        bound = (
            MOVED_STALL
            if window is not None and gap.end >= window[0] and gap.begin <= window[1]
            else STALL
        )
        if gap.seconds >= bound:
            out.append((gap, bound))
    return out


class CheckedIperf(IperfLoop):
    """Back-to-back iperf3 rounds where every attempt is a round: a failure is never retried
    out of sight, and a round that moved no data (0 bit/s) is a failed round."""

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            bps, error = self._once()
            if error is None and bps <= 0:
                error = "iperf3 reported 0 bit/s received"
            self.rounds.append(IperfRound(start, time.monotonic(), bps, error))
            # The server needs a moment to close the previous test before taking the next.
            self._stop.wait(0.3)


class Demo:
    def __init__(
        self, layout: Layout, opts: DemoOptions, out: Callable[[str], None] = print
    ) -> None:
        self.layout = layout
        self.opts = opts
        self.out = out
        self.checks: list[Check] = []
        self.replicas: dict[str, Replica] = {}  # eth1 host ifname -> replica (ever seen)
        # (t, firewall eth1 host ifname -> (bytes, packets, state)), every 0.5 s
        self.samples: list[tuple[float, dict[str, tuple[float, float, str]]]] = []
        self.events: list[tuple[float, str]] = []
        self.t0 = time.monotonic()
        self._sampling = threading.Event()
        self._lock = threading.Lock()
        self.last: MetricsSnapshot | None = None
        self.reused = False  # the cluster was up before the demo: it stays up after it
        self.client_node = ""  # where the scheduler put the client
        self.progress = FlowProgress(self.t0)
        # flow index -> the window of the step in which its replica was removed under it
        self.moved: dict[int, tuple[float, float]] = {}
        self._next_flow = 0
        self.autoscale: AutoscaleAct | None = None

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def kube(self) -> SyncKube:
        return SyncKube(load_kubeconfig(self.layout.kubeconfig))

    def kubectl(self, *args: str) -> str:
        proc = subprocess.run(
            [local_cli.KUBECTL, "--kubeconfig", str(self.layout.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, ok, detail))
        self.out(f"  [{'PASS' if ok else 'FAIL'}] {name}" + (f": {detail}" if detail else ""))
        return ok

    def pods(self, app: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kube.get(
            f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector=f"app={app}"
        )["items"]
        return items

    def ready_pods(self, app: str) -> list[dict[str, Any]]:
        return [
            p for p in self.pods(app) if not p["metadata"].get("deletionTimestamp") and is_ready(p)
        ]

    def pod_netns(self, app: str) -> str:
        live = self.ready_pods(app)
        if not live:
            raise DemoError(f"no ready {app} pod")
        return self.layout.pod_netns(live[0]["metadata"]["uid"])

    def pod_nodes(self, app: str) -> list[str]:
        """The nodes of the ready pods of ``app``, sorted."""
        return sorted(str((p.get("spec") or {}).get("nodeName", "")) for p in self.ready_pods(app))

    def check_spread(self) -> None:
        """The scheduler spread the firewall's replicas over every node (so that flows cross)."""
        firewall = self.pod_nodes("firewall")
        client, server = self.pod_nodes("client"), self.pod_nodes("server")
        self.client_node = client[0] if client else ""
        self.check(
            f"firewall replicas on all {self.opts.nodes} nodes",
            set(firewall) == set(self.node_names),
            f"firewall on {', '.join(firewall) or 'no node'}; client on {self.client_node},"
            f" server on {', '.join(server)}",
        )

    @property
    def node_names(self) -> list[str]:
        return [node_name(i) for i in range(1, self.opts.nodes + 1)]

    def node_snapshots(self) -> dict[str, MetricsSnapshot]:
        """Each node agent's metrics, remote endpoints (``#ID@NODE``) included."""
        return {
            node: scrape_agent(self.layout.node_netns(node), METRICS_PORT)
            for node in self.node_names
        }

    def node_metrics(self) -> MetricsSnapshot:
        """The agents' metrics merged: every endpoint as its own node counts it."""
        merged = MetricsSnapshot(time.monotonic(), {}, {}, {})
        for snap in self.node_snapshots().values():
            merged.endpoints.update({k: e for k, e in snap.endpoints.items() if not e.remote})
            for xc, n in snap.sessions.items():
                merged.sessions[xc] = merged.sessions.get(xc, 0.0) + n
            merged.drops.update(snap.drops)
        return merged

    def tunnel_counters(self) -> Tunnel:
        """Counters of the remote endpoints on every node, (node, crossconnection, ``#ID@NODE``)
        -> sample: the packets that node sent to (tx) and received from (rx) each endpoint
        of another node through the tunnel."""
        return {
            (node, xc, iface): ep
            for node, snap in self.node_snapshots().items()
            for (xc, iface), ep in snap.endpoints.items()
            if ep.remote
        }

    def refresh_replicas(self) -> None:
        for pod in self.pods("firewall"):
            meta = pod["metadata"]
            rep = Replica(meta["name"], meta["uid"], (pod.get("spec") or {}).get("nodeName", ""))
            with self._lock:
                self.replicas.setdefault(rep.eth1, rep)

    # -- sampling ----------------------------------------------------------------------------

    def _sample_loop(self) -> None:
        while not self._sampling.wait(0.5):
            with contextlib.suppress(KubeError, OSError, ValueError):
                self.refresh_replicas()
                snap = self.node_metrics()
                self.last = snap
                per = {
                    ep.interface: (ep.bytes, ep.packets, ep.state)
                    for (xc, _), ep in snap.endpoints.items()
                    if xc == XC_IN and ep.side == "b"
                }
                self.samples.append((snap.time - self.t0, per))

    def mark(self, label: str) -> None:
        self.events.append((time.monotonic() - self.t0, label))

    # -- steps -------------------------------------------------------------------------------

    def start_cluster(self) -> None:
        self.out("== local cluster")
        self.reused = local_cli.running(self.layout)
        local_cli.up(self.layout, nodes=self.opts.nodes, timeout=self.opts.timeout)
        nodes = self.kube.get("/api/v1/nodes")["items"]
        ready = sorted(
            n["metadata"]["name"] for n in nodes if _condition(n, "Ready").get("status") == "True"
        )
        agents = []
        for i in range(1, self.opts.nodes + 1):
            with contextlib.suppress(OSError, ValueError):
                scrape_agent(self.layout.node_netns(node_name(i)), METRICS_PORT)
                agents.append(node_name(i))
        self.check(
            "local cluster up",
            len(ready) == self.opts.nodes and len(agents) == self.opts.nodes,
            f"{len(ready)}/{self.opts.nodes} nodes Ready, {len(agents)} node agents serving"
            f" metrics; {self.layout.kubeconfig}",
        )

    def apply_example(self) -> None:
        self.out("== applying examples/transparent-firewall")
        path = examples_dir() / "transparent-firewall"
        for line in self.kubectl("apply", "-f", str(path)).splitlines():
            self.out(f"  {line}")

    def wait_chain_ready(self) -> None:
        self.out("== waiting for the chain to be Ready")
        deadline = time.monotonic() + self.opts.timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                sfc = self.kube.get(
                    f"/apis/sfc-k8s.io/v1alpha1/namespaces/{NAMESPACE}/servicefunctionchains/{CHAIN}"
                )
                pods = self.kube.get(f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
            except KubeError as err:
                sfc, pods = {}, []
                state = f"API: {err}"
            ready_pods = sum(1 for p in pods if is_ready(p))
            cond = _condition(sfc, "Ready")
            state = (
                f"pods ready {ready_pods}/{len(pods)}, chain Ready={cond.get('status', '?')}"
                f" {cond.get('reason', '')}: {cond.get('message', '')}".rstrip(": ")
            )
            if state != last:
                self.out(f"  {time.monotonic() - self.t0:5.1f}s  {state}")
                last = state
            if cond.get("status") == "True" and self._firewall_programmed(2):
                self.check("chain Ready", True, f"after {time.monotonic() - self.t0:.1f}s")
                return
            time.sleep(0.3)
        self.check("chain Ready", False, f"not Ready after {self.opts.timeout:.0f}s: {last}")
        raise DemoError("the chain did not become Ready")

    def _firewall_programmed(self, replicas: int) -> bool:
        """Both links carry exactly ``replicas`` active firewall endpoints, none draining, on
        every node that holds the link (its own replicas by interface, the others remote)."""
        try:
            snaps = self.node_snapshots()
        except (OSError, ValueError):
            return False
        for xc, side in ((XC_IN, "b"), (XC_OUT, "a")):
            local = 0
            for snap in snaps.values():
                eps = [e for (x, _), e in snap.endpoints.items() if x == xc and e.side == side]
                if any(x == xc for x, _ in snap.endpoints) and (
                    len(eps) != replicas or any(e.state != "active" for e in eps)
                ):
                    return False
                local += sum(not e.remote for e in eps)
            if local != replicas:
                return False
        return True

    def wait_data_path(self, client_ns: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, received, _ = ping(client_ns, SERVER_IP, count=2)
            if received:
                return
            time.sleep(0.3)
        raise DemoError(f"no ping answer from {SERVER_IP} through the chain")

    def scale(self, replicas: int, flows: list[EchoFlow], iperf: IperfLoop) -> None:
        self.out(f"== scaling the firewall to {replicas} (kubectl scale, traffic running)")
        t_start = time.monotonic() - self.t0
        before = len(
            [p for p in self.pods("firewall") if not p["metadata"].get("deletionTimestamp")]
        )
        placement = self.cover_replicas(flows)
        tunnel_before = self.tunnel_counters()
        rounds_before = len(iperf.rounds)
        self.mark(f"scale to {replicas}")
        scaled = time.monotonic()
        self.kubectl("scale", "deployment/firewall", "-n", NAMESPACE, f"--replicas={replicas}")
        if replicas < before:
            self.check_drain(before - replicas, scaled)
        deadline = time.monotonic() + self.opts.timeout
        while not self._firewall_programmed(replicas):
            if time.monotonic() > deadline:
                self.check(f"scale to {replicas}: replicas programmed", False, "timed out")
                raise DemoError(f"the firewall did not reach {replicas} programmed replicas")
            time.sleep(0.2)
        took = time.monotonic() - self.t0 - t_start
        self.check(
            f"scale to {replicas}: {replicas} replicas active in both links",
            True,
            f"{took:.1f}s after kubectl scale"
            + (" (removed replicas drained, then left)" if replicas < before else ""),
        )
        self.mark(f"{replicas} programmed")
        client_ns = self.pod_netns("client")
        ok = short_flows(client_ns, SERVER_IP, ECHO_PORT, self.opts.short_flows)
        self.check(
            f"scale to {replicas}: new short flows answered",
            ok == self.opts.short_flows,
            f"{ok}/{self.opts.short_flows}",
        )
        time.sleep(self.opts.dwell)
        self.report_step(
            replicas,
            t_start,
            flows,
            self.rounds(iperf, rounds_before),
            tunnel_before,
            placement_before=placement,
        )

    def rounds(self, iperf: IperfLoop, since: int) -> list[IperfRound]:
        """The iperf3 rounds finished since round ``since`` (waits for one if none has)."""
        deadline = time.monotonic() + iperf.seconds + 30
        while len(iperf.rounds) <= since and time.monotonic() < deadline:
            time.sleep(0.1)
        return iperf.rounds[since:]

    def firewall_endpoints(self) -> dict[str, str]:
        """Firewall eth1 endpoints of the inbound link now: host ifname -> state."""
        snap = self.node_metrics()
        return {
            ep.interface: ep.state
            for (xc, _), ep in snap.endpoints.items()
            if xc == XC_IN and ep.side == "b"
        }

    def check_drain(self, removed: int, scaled: float) -> None:
        """While the removed replicas drain, new flows must go to the active ones only.

        The replicas drain for the firewall's DRAIN_SECONDS, then leave: the wait to see them
        draining is not bounded by that time (a loaded machine may see it late), and the probes'
        placement only counts if the replicas were still draining after it was read (a removed
        replica's sessions are purged and its probes would re-pick an active one).
        """
        draining: set[str] = set()
        deadline = scaled + self.opts.timeout
        while len(draining) < removed and time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                draining = {i for i, st in self.firewall_endpoints().items() if st == "draining"}
            time.sleep(0.05)
        seen = time.monotonic() - scaled
        probes = [self.open_flow(self.pod_netns("client")) for _ in range(8)]
        try:
            placement = self.flow_placement(probes)
            still = {i for i, st in self.firewall_endpoints().items() if st == "draining"}
        finally:
            for probe in probes:
                probe.stop()
        on_draining = [port for port, iface in placement.items() if iface in draining]
        self.check(
            f"draining {removed} replica(s): new flows go to active replicas only",
            len(draining) == removed
            and draining <= still
            and not on_draining
            and len(placement) == len(probes),
            f"{len(draining)}/{removed} replicas seen draining {seen:.1f}s after kubectl scale"
            f" ({'still' if draining and draining <= still else 'no longer'} draining once the"
            f" probes were placed); {len(placement)}/{len(probes)} new flows placed,"
            f" {len(on_draining)} on a draining replica",
        )

    def open_flow(self, client_ns: str) -> EchoFlow:
        """One more long-lived echo flow, numbered after every flow opened so far."""
        sock = netns.connect_in_netns(client_ns, SERVER_IP, ECHO_PORT, timeout=5.0)
        sock.settimeout(20.0)
        self._next_flow += 1
        return EchoFlow(self._next_flow - 1, sock)

    def open_flows(self, flows: list[EchoFlow], count: int) -> list[EchoFlow]:
        """Open ``count`` long-lived flows, appended to ``flows`` and watched for pauses."""
        client_ns = self.pod_netns("client")
        new = [self.open_flow(client_ns) for _ in range(count)]
        flows.extend(new)
        self.progress.add(new)
        return new

    def echoed(self, flows: list[EchoFlow], timeout: float = 10.0) -> bool:
        """Every flow of ``flows`` has had at least one chunk echoed (waits up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        while any(f.bytes_ok == 0 and not f.broken for f in flows):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return not any(f.broken for f in flows)

    def check_established(self, flows: list[EchoFlow]) -> None:
        echoed = self.echoed(flows)
        placement = self.flow_placement(flows)
        self.check(
            f"{self.opts.flows} long-lived TCP flows established",
            len(flows) == self.opts.flows and echoed and len(placement) == len(flows),
            f"{sum(f.bytes_ok > 0 for f in flows)}/{self.opts.flows} echoed,"
            f" {len(placement)} found in the data plane's sessions",
        )

    def cover_replicas(self, flows: list[EchoFlow]) -> dict[int, str]:
        """Open more long-lived flows until every active replica carries one (so that "flows
        kept their replica" holds for whichever replicas remain); returns the placement."""
        placement = self.flow_placement(flows)
        extra = 0
        while extra < MAX_EXTRA_FLOWS:
            active = {i for i, st in self.firewall_endpoints().items() if st == "active"}
            if active <= set(placement.values()):
                break
            new = self.open_flows(flows, 4)
            extra += len(new)
            self.echoed(new)
            placement = self.flow_placement(flows)
        if extra:
            self.out(f"  opened {extra} more long-lived flows so that every replica carries one")
        return placement

    def flow_placement(
        self, flows: list[EchoFlow], known: dict[FlowId, Placed] | None = None
    ) -> dict[int, str]:
        """Long-lived flow (client port) -> firewall eth1 host ifname carrying it (from
        ``known``, the result of ``flow_replicas``, when given)."""
        ports = {f.local_port for f in flows}
        placement: dict[int, str] = {}
        for key, place in (self.flow_replicas() if known is None else known).items():
            proto, port_lo, port_hi = key[1], key[3], key[5]
            if proto != TCP or ECHO_PORT not in (port_lo, port_hi):
                continue
            for port in (port_lo, port_hi):
                if port in ports:
                    placement[port] = place.interface
        return placement

    def flow_replicas(self) -> dict[FlowId, Placed]:
        """Every flow of the inbound link -> the firewall replica (eth1 host ifname) carrying
        it and the nodes whose session tables hold it.

        A flow through a replica on another node than the client's is in both nodes' tables:
        on the client's node with the replica as ``#ID@NODE`` (read back to its interface
        through the CrossConnection's endpoint ids), on the replica's node by interface.
        """
        ids = self.endpoint_ids(XC_IN, "b")
        found: dict[FlowId, Placed] = {}
        for node, session in self.sessions(XC_IN):
            name = session.b_ifname
            if name.startswith("#"):
                name = ids.get(int(name[1:].partition("@")[0]), "")
            if not name:
                continue
            key = (session.kind, session.proto, session.addr_lo, session.port_lo,
                   session.addr_hi, session.port_hi)  # fmt: skip
            placed = found.setdefault(key, Placed(name))
            placed.nodes.add(node)
        return found

    def endpoint_ids(self, xc: str, side: str) -> dict[int, str]:
        """Stable endpoint id -> host interface, for one side of ``xc`` (its CrossConnection)."""
        body = self.kube.get(
            f"/apis/sfc-k8s.io/v1alpha1/namespaces/{NAMESPACE}/crossconnections/{xc}"
        )
        endpoints = ((body.get("spec") or {}).get(side) or {}).get("endpoints") or []
        return {int(ep["id"]): str(ep["hostInterface"]) for ep in endpoints if ep.get("id")}

    def sessions(self, xc: str) -> list[tuple[str, Session]]:
        """The data plane's sessions of ``xc`` on every node (what ``sfc-k8s dp sessions``
        lists there), each with its node; a node whose agent holds no endpoint of ``xc`` has
        no such link."""
        found: list[tuple[str, Session]] = []
        for node in self.node_names:
            try:
                with Dataplane(self.layout.bpffs_root(node)) as dp:
                    found.extend((node, s) for s in dp.sessions(link_name(NAMESPACE, xc)))
            except LinkNotFound:
                continue
            except DataplaneError as err:
                raise DemoError(f"cannot read the sessions of {xc} on {node}: {err}") from err
        return found

    def _window(self, t_start: float) -> dict[str, tuple[float, float, float, str]]:
        """Per replica over samples since ``t_start``: (bytes, packets, last seen t, state)."""
        first: dict[str, tuple[float, float]] = {}
        last: dict[str, tuple[float, float, float, str]] = {}
        for t, per in self.samples:
            for iface, (by, pk, state) in per.items():
                if t < t_start:
                    first[iface] = (by, pk)
                    continue
                first.setdefault(iface, (0.0, 0.0))
                last[iface] = (by - first[iface][0], pk - first[iface][1], t, state)
        return last

    def report_step(
        self,
        replicas: int,
        t_start: float,
        flows: list[EchoFlow],
        rounds: list[IperfRound],
        tunnel_before: Tunnel,
        *,
        placement_before: dict[int, str] | None = None,
    ) -> None:
        self.refresh_replicas()
        time.sleep(0.6)  # one more sample
        window = self._window(t_start)
        final = self.samples[-1][1] if self.samples else {}
        known = self.flow_replicas()
        placement = self.flow_placement(flows, known)
        tunnel_after = self.tunnel_counters()
        tunnel = self.tunnel_packets(tunnel_before, tunnel_after)
        per_sessions: dict[str, int] = {}
        tcp_sessions: dict[str, int] = {}
        for key, place in known.items():
            per_sessions[place.interface] = per_sessions.get(place.interface, 0) + 1
            if key[1] == TCP:
                tcp_sessions[place.interface] = tcp_sessions.get(place.interface, 0) + 1
        per_flows: dict[str, int] = {}
        for iface in placement.values():
            per_flows[iface] = per_flows.get(iface, 0) + 1
        self.out("  per replica during this step (firewall eth1 endpoint, both directions;")
        self.out(f"  tunnel: packets {self.client_node} exchanged with it through the tunnel):")
        self.out(
            f"    {'replica':<30} {'node':<7} {'state':<17} {'packets':>9} {'bytes':>13} "
            f"{'tunnel':>9} {'sessions':>8} {'long flows':>10}"
        )
        active: list[tuple[str, float, int]] = []
        draining_seen = 0
        for iface, (by, pk, _t, last_state) in sorted(window.items(), key=lambda kv: kv[0]):
            rep = self.replicas.get(iface)
            name = rep.pod if rep else iface
            state = last_state
            if iface not in final:
                state = f"removed ({last_state})"
                draining_seen += last_state == "draining"
            elif state == "active":
                active.append((name, by, tcp_sessions.get(iface, 0)))
            node = rep.node if rep else "?"
            via = "local" if node == self.client_node else f"{tunnel.get(iface, 0):.0f}"
            self.out(
                f"    {name:<30} {node:<7} {state:<17} {pk:>9.0f} {by:>13.0f} {via:>9} "
                f"{per_sessions.get(iface, 0):>8} {per_flows.get(iface, 0):>10}"
            )
        idle = [n for n, b, tcp in active if b <= 0 or tcp == 0]
        self.check(
            f"{replicas} replicas: every active replica carried traffic (bytes and TCP flows)",
            not idle and len(active) == replicas,
            f"{len(active)} active" + (f", idle: {', '.join(idle)}" if idle else ""),
        )
        if placement_before is not None:
            kept = kept_replicas(flows, placement_before, placement, final)
            for index in kept.moved:
                self.moved[index] = (t_start, self.progress.now())
            self.check(
                f"{replicas} replicas: flows on remaining replicas kept their replica",
                kept.ok,
                kept.detail,
            )
            if draining_seen:
                self.out(f"    {draining_seen} removed replica(s) were seen draining first")
        failed = [r for r in rounds if r.error]
        mbps = [r.bits_per_second / 1e6 for r in rounds if not r.error]
        self.check(
            f"{replicas} replicas: every iperf3 round ({self.opts.streams} streams) moved data",
            bool(rounds) and not failed,
            f"{len(rounds)} rounds, "
            + (f"{min(mbps):.0f}-{max(mbps):.0f} Mbit/s" if mbps else "no result")
            + (f", {len(failed)} failed, first: {failed[0].error}" if failed else ""),
        )
        self.check_flows(f"{replicas} replicas: no established flow broke or stalled", flows,
                         self.progress.during(t_start, self.progress.now()))  # fmt: skip
        if self.opts.nodes > 1 and replicas >= self.opts.nodes:  # spread over every node
            self.check_cross_node(flows, known, final, (tunnel_before, tunnel_after))

    def tunnel_packets(
        self,
        before: Tunnel,
        after: Tunnel,
    ) -> dict[str, float]:
        """Firewall eth1 host ifname -> packets the client's node sent to it and received from
        it through the tunnel between the two readings (replicas on other nodes only)."""
        ids = self.endpoint_ids(XC_IN, "b")
        out: dict[str, float] = {}
        for (node, xc, label), ep in after.items():
            iface = ids.get(_remote_id(label))
            if node == self.client_node and xc == XC_IN and ep.side == "b" and iface:
                was = before.get((node, xc, label))
                out[iface] = ep.packets - (was.packets if was else 0.0)
        return out

    def check_cross_node(
        self,
        flows: list[EchoFlow],
        known: dict[FlowId, Placed],
        final: dict[str, tuple[float, float, str]],
        tunnel: tuple[Tunnel, Tunnel],
    ) -> None:
        """Flows from the client reached replicas on the other node(s), byte-exact (see
        ``cross_node``)."""
        verdict = cross_node(
            CrossNodeView(
                nodes=self.node_names,
                client_node=self.client_node,
                node_of={iface: rep.node for iface, rep in self.replicas.items()},
                active={iface for iface, (_, _, state) in final.items() if state == "active"},
                exact={f.local_port: not f.broken and f.bytes_ok > 0 for f in flows},
            ),
            known,
            tunnel,
        )
        self.check(
            f"{len(verdict.active)} replicas: flows crossed nodes through the tunnel, byte-exact",
            verdict.ok,
            verdict.detail,
        )

    def check_flows(self, name: str, flows: list[EchoFlow], gaps: list[Gap]) -> None:
        """Every long-lived flow byte-exact, and none paused longer than its bound."""
        broken = [f for f in flows if f.broken]
        over = stalls(gaps, self.moved)
        longest = max(gaps, key=lambda g: g.seconds, default=None)
        self.check(
            name,
            not broken and not over,
            f"{len(flows) - len(broken)}/{len(flows)} long-lived flows byte-exact"
            + (f"; first error: {broken[0].error}" if broken else "")
            + (
                f"; longest pause {longest.seconds:.2f}s (flow {longest.flow})"
                if longest
                else f"; no pause over {self.progress.record}s"
            )
            + "".join(
                f"; flow {g.flow} stalled {g.seconds:.2f}s at {g.begin:.1f}s (bound {bound:.0f}s)"
                for g, bound in over
            ),
        )

    def autoscale_act(self, iperf: IperfLoop, flows: list[EchoFlow]) -> None:
        """The HPA's turn (``demo_autoscale.py``), unless ``opts.ramp`` is None."""
        if self.opts.ramp is None:
            return
        iperf.stop()  # the ramp's paced load alone drives the HPA
        up, hold, down = self.opts.ramp
        self.autoscale = AutoscaleAct(self, up=up, hold=hold, down=down)
        self.autoscale.run(flows)

    # -- the whole scenario ------------------------------------------------------------------

    def run(self) -> bool:
        sampler = threading.Thread(target=self._sample_loop, name="sampler", daemon=True)
        flows: list[EchoFlow] = []
        iperf: IperfLoop | None = None
        try:
            self.start_cluster()
            self.apply_example()
            self.wait_chain_ready()
            client_ns = self.pod_netns("client")
            if self.opts.nodes > 1:
                self.check_spread()
            else:
                self.client_node = self.pod_nodes("client")[0]
            self.wait_data_path(client_ns)
            sampler.start()
            self.out("== traffic: ping, iperf3, long-lived echo flows")
            sent, received, summary = ping(client_ns, SERVER_IP, count=10)
            self.check("ping through the chain", sent > 0 and received == sent, summary)
            self.progress.start()
            self.open_flows(flows, self.opts.flows)
            self.check_established(flows)
            self.cover_replicas(flows)
            tunnel_before = self.tunnel_counters()
            iperf = CheckedIperf(
                client_ns,
                SERVER_IP,
                port=IPERF_PORT,
                streams=self.opts.streams,
                seconds=self.opts.iperf_seconds,
            )
            iperf.start()
            self.mark("traffic")
            t_traffic = time.monotonic() - self.t0
            time.sleep(self.opts.dwell)
            self.out("== 2 replicas (as applied)")
            self.report_step(2, t_traffic, flows, self.rounds(iperf, 0), tunnel_before)
            for replicas in self.opts.steps:
                self.scale(replicas, flows, iperf)
            self.autoscale_act(iperf, flows)
            self.out("== stopping traffic")
        except (
            DemoError,
            local_cli.LocalClusterError,
            KubeError,
            OSError,
            subprocess.SubprocessError,
            ValueError,
        ) as err:
            self.check("demo ran to the end", False, str(err))
        finally:
            if iperf is not None:
                iperf.stop()
            self.progress.close()  # before the flows stop: a pause going on now counts
            for flow in flows:
                flow.stop()
            self._sampling.set()
            if sampler.is_alive():
                sampler.join(timeout=5)
        if flows:
            total = sum(f.bytes_ok for f in flows)
            self.out(f"  {len(flows)} long-lived flows echoed {total} bytes in all")
            self.check_flows(
                "no long-lived flow broke or stalled during the whole run", flows,
                self.progress.gaps,
            )  # fmt: skip
        self.write_plot()
        return all(c.ok for c in self.checks)

    def write_plot(self) -> None:
        """Three panels over time: per-replica Mbit/s and packets/s through firewall eth1
        (dashed: draining) and the replica count (active endpoints, and the HPA's desired
        replicas during the autoscaling act); every event (scale steps, HPA decisions) marked."""
        if len(self.samples) < 2:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (bits, packets, count) = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
        for iface in sorted({i for _, per in self.samples for i in per}):
            rep = self.replicas.get(iface)
            label = f"{rep.pod} ({rep.node})" if rep else iface
            for ax, field_index, unit in ((bits, 0, 8 / 1e6), (packets, 1, 1.0)):
                self._plot_replica(ax, iface, label, field_index, unit)
        count.step(
            [t for t, _ in self.samples],
            [sum(st == "active" for _, _, st in per.values()) for _, per in self.samples],
            where="post",
            label="active firewall replicas (data plane)",
        )
        if self.autoscale is not None and self.autoscale.hpa_samples:
            times = [t for t, _, _ in self.autoscale.hpa_samples]
            count.step(times, [d for _, _, d in self.autoscale.hpa_samples], "--", where="post",
                       label="HPA desired replicas")  # fmt: skip
        for ax in (bits, packets, count):
            for t, _ in self.events:
                ax.axvline(t, color="grey", linestyle=":", linewidth=1)
        for t, label in self.events:  # at the bottom of the panel, whatever its scale
            count.text(t, 0.02, label, transform=count.get_xaxis_transform(), rotation=90,
                       fontsize=7, va="bottom")  # fmt: skip
        bits.set_ylabel("Mbit/s (eth1)")
        packets.set_ylabel("packets/s (eth1)")
        count.set_ylabel("replicas")
        count.set_xlabel("seconds since start")
        bits.set_title(
            "sfc-k8s demo: per-replica load of the transparent firewall (dashed: draining)"
        )
        bits.legend(fontsize=6, loc="upper left")
        count.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        self.opts.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.opts.plot, dpi=100)
        plt.close(fig)
        data = self.opts.plot.with_suffix(".json")
        data.write_text(
            json.dumps(
                {
                    "samples": self.samples,
                    "events": self.events,
                    "replicas": {k: v.pod for k, v in self.replicas.items()},
                    "nodes": {k: v.node for k, v in self.replicas.items()},
                    "hpa": self.autoscale.hpa_samples if self.autoscale else [],
                }
            )
        )

    def _plot_replica(self, ax: Any, iface: str, label: str, index: int, unit: float) -> None:
        """One replica's rate of counter ``index`` (0 bytes, 1 packets), one segment per
        state so that draining shows dashed."""
        segments: list[tuple[str, list[float], list[float]]] = []
        for (t1, p1), (t2, p2) in zip(self.samples, self.samples[1:], strict=False):
            if iface not in p1 or iface not in p2 or t2 <= t1:
                continue
            now, was = float(p2[iface][index]), float(p1[iface][index])
            rate = max(now - was, 0) * unit / (t2 - t1)
            state = p2[iface][2]
            if not segments or segments[-1][0] != state:
                xs0, ys0 = ([segments[-1][1][-1]], [segments[-1][2][-1]]) if segments else ([], [])
                segments.append((state, xs0, ys0))
            segments[-1][1].append(t2)
            segments[-1][2].append(rate)
        color = None
        for state, xs, ys in segments:
            style = "--" if state == "draining" else "-"
            (line,) = ax.plot(xs, ys, style, color=color, label=label)
            color, label = line.get_color(), "_"


@dataclass(frozen=True)
class Kept:
    ok: bool
    detail: str
    moved: tuple[int, ...]  # flow indices whose replica was removed under them


def kept_replicas(
    flows: list[EchoFlow],
    before: dict[int, str],
    after: dict[int, str],
    final: dict[str, tuple[float, float, str]],
) -> Kept:
    """Judge "flows on remaining replicas kept their replica" across a scaling step.

    ``before``/``after``: client port -> firewall interface of each long-lived flow; ``final``:
    the interfaces still in the data plane with their state. Holds only if every flow was
    placed before the step, at least one flow was on a replica that remains (otherwise the
    check would hold vacuously), every such flow is still there, and every flow of a removed
    replica now crosses an active one.
    """
    index = {f.local_port: f.index for f in flows}
    stayed, moved, wrong, lost = 0, [], [], []
    for port, was in before.items():
        now = after.get(port)
        if was in final and final[was][2] == "active":
            stayed += now == was
            if now != was:
                wrong.append(port)
        else:
            moved.append(index[port])
            if now is None or now not in final or final[now][2] != "active":
                lost.append(port)
    unplaced = len(flows) - len(before)
    ok = not wrong and not lost and stayed > 0 and unplaced == 0
    detail = (
        f"{stayed} stayed, {len(moved)} moved from removed replicas"
        + (f", {len(wrong)} moved unexpectedly" if wrong else "")
        + (f", {len(lost)} moved flows on no active replica" if lost else "")
        + (f", {unplaced} flows not found in the sessions before the step" if unplaced else "")
        + ("" if stayed else ", no flow was on a replica that remains")
    )
    return Kept(ok, detail, tuple(moved))


@dataclass(frozen=True)
class CrossNodeView:
    """What ``cross_node`` judges besides the sessions and tunnel counters."""

    nodes: list[str]  # every node of the cluster
    client_node: str
    node_of: dict[str, str]  # firewall eth1 host ifname -> its node (every replica seen)
    active: set[str]  # the replicas active at the end of the step
    exact: dict[int, bool]  # long-lived flow (client port) -> byte-exact and moving


@dataclass(frozen=True)
class CrossNode:
    ok: bool
    detail: str
    active: set[str]


def cross_node(
    view: CrossNodeView, known: dict[FlowId, Placed], tunnel: tuple[Tunnel, Tunnel]
) -> CrossNode:
    """Judge "flows crossed nodes through the tunnel, byte-exact" for one step.

    Not assumed from where replicas run: holds only if the active replicas are on every node;
    some long-lived flow from the client runs through a replica on another node **and both
    nodes' session tables hold it** (the client's node names the replica ``#ID@NODE``, the
    replica's node received it from the tunnel and recorded it); every such flow is
    byte-exact; and the tunnel counters of both ends moved during the step: the client's node
    sent packets to remote replicas and received some back, and every other node received
    packets from the client's endpoint and sent some back.
    """
    spread: dict[str, int] = {}
    for iface in view.active:
        node = view.node_of.get(iface, "?")
        spread[node] = spread.get(node, 0) + 1
    crossing: list[bool] = []
    for key, place in known.items():
        node = view.node_of.get(place.interface, view.client_node)
        if node == view.client_node or key[1] != TCP or ECHO_PORT not in (key[3], key[5]):
            continue
        if place.nodes >= {view.client_node, node}:
            crossing += [view.exact[p] for p in (key[3], key[5]) if p in view.exact]
    sent, back = _delta(tunnel, view.client_node, "b")
    far = {n: _delta(tunnel, n, "a") for n in sorted(spread) if n != view.client_node}
    ok = (
        set(spread) == set(view.nodes)
        and bool(crossing)
        and all(crossing)
        and min(sent, back) > 0
        and bool(far)
        and all(min(pair) > 0 for pair in far.values())
    )
    detail = (
        "replicas on "
        + ", ".join(f"{n} ({k})" for n, k in sorted(spread.items()))
        + f"; {len(crossing)} long-lived flows from {view.client_node} crossed to a replica on"
        f" another node (in both nodes' sessions), {sum(crossing)} byte-exact; through the"
        f" tunnel {view.client_node} sent {sent:.0f} packets to remote replicas and received"
        f" {back:.0f}"
        + "".join(
            f"; {n} received {r:.0f} from the client and sent {t:.0f} back"
            for n, (t, r) in far.items()
        )
    )
    return CrossNode(ok, detail, set(view.active))


def _remote_id(label: str) -> int:
    """The endpoint id in a remote endpoint's ``#ID@NODE`` (0 if it is not one)."""
    head = label[1:].partition("@")[0] if label.startswith("#") else ""
    return int(head) if head.isdigit() else 0


def _delta(
    tunnel: tuple[Tunnel, Tunnel],
    node: str,
    side: str,
) -> tuple[float, float]:
    """(sent, received) packets through the tunnel on ``node`` between the two readings, to
    and from the remote endpoints of the inbound link's ``side``."""
    before, after = tunnel
    sent = received = 0.0
    for key, ep in after.items():
        if key[0] == node and key[1] == XC_IN and ep.side == side:
            was = before.get(key)
            sent += ep.tx_packets - (was.tx_packets if was else 0.0)
            received += ep.rx_packets - (was.rx_packets if was else 0.0)
    return sent, received


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


SCALE_IN_NOTE = """\
About scale-in: a removed firewall replica first drains for its grace period (the chain's
cross-connections give it no new flows, it keeps forwarding the flows it has), then exits; its
flows then move to a remaining replica. This firewall is a stateless bridge, so moved flows
continue, and the demo asserts that every long-lived flow stayed byte-exact through the whole
run. A stateful NF would drop flows it did not see start: what sfc-k8s guarantees is that flows
on the replicas that remain never move, and that a removed replica keeps its flows while it
drains."""


def run(layout: Layout, opts: DemoOptions, out: Callable[[str], None] = print) -> Demo:
    """Run the scenario, tear the cluster down unless ``opts.keep``; returns the finished demo."""
    demo = Demo(layout, opts, out)
    ok = False
    try:
        ok = demo.run()
    finally:
        if not ok:  # the logs go with the cluster: show their ends first
            record = read_json(layout.cluster_file)
            for name, info in sorted((record.get("processes") or {}).items()):
                out(f"== last lines of {name} ({info['log']})")
                out(local_cli.tail_log(info["log"], 12))
            for log in operator_pods.container_logs(layout):  # the operator runs as pods
                out(f"== last lines of {log}")
                out(local_cli.tail_log(str(log), 12))
        if not opts.keep and demo.reused:
            out(f"== removing namespace {NAMESPACE} (the cluster was up before the demo: it stays)")
            with contextlib.suppress(DemoError, subprocess.SubprocessError):
                demo.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=60s")
        elif not opts.keep:
            out("== removing the local cluster")
            local_cli.down(layout)
    out("")
    out(SCALE_IN_NOTE)
    out("")
    passed = sum(c.ok for c in demo.checks)
    out(f"checks: {passed}/{len(demo.checks)} passed -> {'PASS' if ok else 'FAIL'}")
    if demo.samples:
        out(f"throughput plot: {opts.plot} (data: {opts.plot.with_suffix('.json')})")
    if opts.keep or demo.reused:
        out(f"cluster kept: export KUBECONFIG={layout.kubeconfig}; sfc-k8s local down to remove")
    return demo


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sfc-k8s demo",
        description="The transparent-firewall chain on the local cluster, scaled 2 -> 4 -> 1 "
        "under traffic, then autoscaled by the HPA on a load ramp, with checks and a plot.",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="default $SFC_K8S_LOCAL_DIR or /var/lib/..."
    )
    parser.add_argument("--keep", action="store_true", help="keep (or reuse) the cluster")
    parser.add_argument(
        "--nodes",
        type=int,
        default=2,
        choices=range(1, 9),
        metavar="N",
        help="nodes of the local cluster (1 to 8, default 2: the firewall's replicas spread "
        "over them and flows cross nodes through the tunnel)",
    )
    parser.add_argument("--dwell", type=float, default=8.0, help="seconds of traffic per step")
    parser.add_argument("--flows", type=int, default=16, help="long-lived echo flows")
    parser.add_argument("--plot", type=Path, default=None, help="where to write the PNG")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("sfc-k8s demo: needs root (network namespaces, eBPF)", file=sys.stderr)
        return 1
    layout = Layout(args.state_dir or default_state_dir())
    opts = DemoOptions(nodes=args.nodes, keep=args.keep, dwell=args.dwell, flows=args.flows)
    if args.plot:
        opts.plot = args.plot
    demo = run(layout, opts)
    return 0 if demo.checks and all(c.ok for c in demo.checks) else 1
