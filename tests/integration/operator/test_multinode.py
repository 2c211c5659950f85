"""A chain across three nodes of a real local cluster (``local up --nodes 3``: API server, one
runtime and one agent per node namespace joined by the underlay, the controller), issue 9.

client on node-1 -> an L2-transparent firewall (a bridge) with one replica on each node ->
server on node-3, every pod placed with ``nodeName``, every data network an sfc-cni veth sized
for the tunnel (MTU 1450 on a 1500 underlay). Covers:
- identities: both CrossConnections carry distinct cluster ids and every endpoint an id; every
  agent programs the links it holds an endpoint of (local endpoints by interface, the others by
  node address and id);
- traffic: ping, UDP and TCP flows from node-1 reach the server on node-3 through local and
  remote replicas (every replica gets flows); both directions of every flow cross the same
  replica (the replica's own interface counters, per flow);
- IPv6 and ARP/ND across nodes: the client pings the server from 8 IPv4 and 8 IPv6 addresses
  with every neighbour cache flushed, so ARP and neighbour discovery (the client's for the server
  and the server's for each client address) run through the chain: every ping is answered, the
  neighbour entries carry the far end's MAC, and ARP, ND and ICMPv6 flows are in the data
  planes' sessions with a replica on another node;
- scale-out then scale-in across nodes under 50 long-lived TCP flows (each echoing 1 KiB every
  50 ms, every byte checked): a Deployment of 3 more firewall replicas, spread one per node;
  new flows reach every new replica, the 50 flows keep their replicas; scaled to 0, the new
  replicas drain (endpoints draining on every node): new flows avoid them, flows on them keep
  their replica and flows shorter than the drain window finish there, byte-exact; once they are
  gone, the 50 flows (those of removed replicas moved) never broke; the agents' metrics name
  every remote endpoint ``#ID@NODE``;
- MTU: every agent's tunnel is sized for the 1500-byte underlay (1450); a firewall replica
  with 1500-byte interfaces makes its node's agent report InterfacesFitTunnel=False and the
  chain Degraded (TunnelMTUExceeded, naming the node) until it is deleted;
- agent restart on the client's node: its pinned remote endpoints stay as they were, and a UDP
  sequence through a remote replica running across the restart loses no answer;
- node loss: ``local node stop node-2`` (short grace period, long eviction timeout) with the
  controller frozen, so that only the agents' watch of the Nodes can react: within 10 s of the
  API showing the Node not Ready, new flows all work (none is sent to the lost replica), flows
  carried by the other replicas never moved, and those of the lost replica picked another one;
  ``node start`` brings its replica back;
- a Node deleted for good: the controller removes its agent's finalizer from the
  CrossConnections (after a failover when the controller replica on that node led).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from sfc_k8s.api.nodes import agent_finalizer
from sfc_k8s.dataplane import Dataplane, Session
from sfc_k8s.local import cli as local_cli
from sfc_k8s.local import operator_pods
from sfc_k8s.local.kube import MERGE_PATCH, NotFoundError, SyncKube, load_kubeconfig
from sfc_k8s.local.layout import Layout, list_netns, pid_alive
from sfc_k8s.local.nodes import AGENT_METRICS_PORT
from sfc_k8s.local.traffic import EchoFlow, open_echo_flows, scrape_agent
from sfc_k8s.operator.agent_reconcile import link_name
from sfc_k8s.operator.settings import ControllerConfig

T = TypeVar("T")
NS = "sfc-mn"
CHAIN = "mn"
XCS = (f"{CHAIN}-client-firewall", f"{CHAIN}-firewall-server")
NODES = ("node-1", "node-2", "node-3")
REPLICAS = {f"fw-{i}": node for i, node in enumerate(NODES, start=1)}
SERVER_IP = "192.168.100.20"
SERVER_IP6 = "fd00:100::20"
# The client's addresses: each one is its own ARP/ND and ICMP flow, balanced on its own.
CLIENT_IPS = [f"192.168.100.{10 + i}" for i in range(8)]
CLIENT_IP6S = [f"fd00:100::{10 + i}" for i in range(8)]
GRACE = 3.0
ROUNDS = 8  # request/reply rounds per flow
NAD_PATH = f"/apis/k8s.cni.cncf.io/v1/namespaces/{NS}/network-attachment-definitions"
TUNNEL_MTU = 1450

# One UDP or TCP flow from the client: ROUNDS request/answer rounds from a fixed source port;
# prints the number of answers.
FLOW = """
import socket, sys
import time
kind, port, rounds, SERVER = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
gap = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
typ = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, typ)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.settimeout(1.0)
s.bind(("0.0.0.0", port))
got = 0
try:
    if kind == "tcp":
        s.connect((SERVER, 7007))
    for i in range(rounds):
        msg = f"{port}-{i}".encode()
        if kind == "udp":
            s.sendto(msg, (SERVER, 7008))
        else:
            s.sendall(msg)
        if s.recv(2048) == msg:
            got += 1
        time.sleep(gap)
except OSError:
    pass
print(got)
"""

SERVER = """
import socket, threading
def serve(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
def tcp():
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", 7007))
    sock.listen(512)
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
threading.Thread(target=tcp, daemon=True).start()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", 7008))
while True:
    data, peer = udp.recvfrom(65536)
    udp.sendto(data, peer)
"""

BRIDGE = """
ip link add br0 type bridge
ip link set br0 addrgenmode none
ip link set eth1 master br0
ip link set eth2 master br0
ip link set br0 up
while true; do sleep 1; done
"""


def wait_for(what: str, fn: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layout]:
    layout = Layout(tmp_path_factory.mktemp("sfcmn") / "state")
    try:
        local_cli.up(
            layout,
            nodes=3,
            node_grace=GRACE,
            eviction_timeout=600.0,  # node loss is handled long before pods are evicted
            progress=local_cli.Progress(quiet=True),
            timeout=120,
        )
        _deploy(_kube(layout))
        yield layout
    finally:
        local_cli.down(layout, progress=local_cli.Progress(quiet=True))
        assert list_netns(layout.netns_prefix) == []


def _kube(layout: Layout) -> SyncKube:
    return SyncKube(load_kubeconfig(layout.kubeconfig))


def _nad(kube: SyncKube, name: str, seed: str, addresses: list[str] | None = None) -> None:
    config: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "sfc-cni",
        "macSeed": seed,
        "mtu": TUNNEL_MTU,
    }
    if addresses:
        config["ipam"] = {"type": "static", "addresses": [{"address": a} for a in addresses]}
    body = {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"config": json.dumps(config)},
    }
    kube.request("POST", NAD_PATH, body=body)


def _pod(kube: SyncKube, name: str, app: str, node: str, *, networks: str, argv: list[str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"app": app},
            "annotations": {"k8s.v1.cni.cncf.io/networks": networks},
        },
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": "ignored.example/none:0", "command": argv}],
        },
    }
    kube.request("POST", f"/api/v1/namespaces/{NS}/pods", body=body)


def _deploy(kube: SyncKube) -> None:
    kube.request("POST", "/api/v1/namespaces", body={"kind": "Namespace", "metadata": {"name": NS}})
    clients = [f"{ip}/24" for ip in CLIENT_IPS] + [f"{ip}/64" for ip in CLIENT_IP6S]
    _nad(kube, "client-net", f"{NS}/client", clients)
    _nad(kube, "server-net", f"{NS}/server", [f"{SERVER_IP}/24", f"{SERVER_IP6}/64"])
    _nad(kube, "fw-in", f"{NS}/fw/eth1")
    _nad(kube, "fw-out", f"{NS}/fw/eth2")
    _pod(kube, "client", "client", "node-1", networks="client-net@eth1", argv=["sleep", "100000"])
    server = [sys.executable, "-c", SERVER]
    _pod(kube, "server", "server", "node-3", networks="server-net@eth1", argv=server)
    bridge = ["sh", "-c", BRIDGE]
    for name, node in REPLICAS.items():
        _pod(kube, name, "firewall", node, networks="fw-in@eth1,fw-out@eth2", argv=bridge)
    fn = [
        ("client", ["eth1"]),
        ("firewall", ["eth1", "eth2"]),
        ("server", ["eth1"]),
    ]
    chain = {
        "apiVersion": "sfc-k8s.io/v1alpha1",
        "kind": "ServiceFunctionChain",
        "metadata": {"name": CHAIN, "namespace": NS},
        "spec": {
            "functions": [
                {"name": n, "selector": {"matchLabels": {"app": n}}, "interfaces": i} for n, i in fn
            ],
            "links": [
                {
                    "name": "client-firewall",
                    "a": {"function": "client", "interface": "eth1"},
                    "b": {"function": "firewall", "interface": "eth1"},
                },
                {
                    "name": "firewall-server",
                    "a": {"function": "firewall", "interface": "eth2"},
                    "b": {"function": "server", "interface": "eth1"},
                },
            ],
        },
    }
    kube.request(
        "POST", f"/apis/sfc-k8s.io/v1alpha1/namespaces/{NS}/servicefunctionchains", body=chain
    )


def _get(kube: SyncKube, path: str) -> dict[str, Any]:
    return kube.get(path)


def _xc(kube: SyncKube, name: str) -> dict[str, Any]:
    return _get(kube, f"/apis/sfc-k8s.io/v1alpha1/namespaces/{NS}/crossconnections/{name}")


def _chain_ready(kube: SyncKube) -> bool:
    chain = _get(kube, f"/apis/sfc-k8s.io/v1alpha1/namespaces/{NS}/servicefunctionchains/{CHAIN}")
    conditions = (chain.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _pod_netns(layout: Layout, kube: SyncKube, name: str) -> str:
    pod = _get(kube, f"/api/v1/namespaces/{NS}/pods/{name}")
    return layout.pod_netns(pod["metadata"]["uid"])


def _packets(netns: str, ifname: str) -> tuple[int, int]:
    """(received, sent) packets of the NF's own interface."""
    out = subprocess.run(
        ["ip", "-n", netns, "-j", "-s", "link", "show", ifname],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        return (0, 0)
    stats = json.loads(out.stdout)[0]["stats64"]
    return (int(stats["rx"]["packets"]), int(stats["tx"]["packets"]))


class Chain:
    """The deployed chain seen from the client, and the replicas' interface counters."""

    def __init__(self, layout: Layout) -> None:
        kube = _kube(layout)
        self.client = _pod_netns(layout, kube, "client")
        self.replicas = {name: _pod_netns(layout, kube, name) for name in REPLICAS}

    def counters(self) -> dict[str, tuple[int, int]]:
        return {name: _packets(netns, "eth1") for name, netns in self.replicas.items()}

    def flow(self, kind: str, port: int) -> tuple[int, str | None]:
        """Run one flow; its answers, and the replica that carried both of its directions
        (None: no replica carried ROUNDS packets each way, or two replicas shared it)."""
        before = self.counters()
        argv = [sys.executable, "-c", FLOW, kind, str(port), str(ROUNDS), SERVER_IP]
        out = subprocess.run(
            ["ip", "netns", "exec", self.client, *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        after = self.counters()
        forward = {n: after[n][0] - before[n][0] for n in after}  # client -> replica eth1
        reverse = {n: after[n][1] - before[n][1] for n in after}  # replica eth1 -> client
        carriers = {n for n in after if forward[n] >= ROUNDS} | {
            n for n in after if reverse[n] >= ROUNDS
        }
        return int(out.stdout.strip() or 0), carriers.pop() if len(carriers) == 1 else None

    def ping(self) -> bool:
        done = subprocess.run(
            ["ip", "netns", "exec", self.client, "ping", "-c", "2", "-W", "1", SERVER_IP],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0


def _ready_chain(layout: Layout) -> Chain:
    kube = _kube(layout)
    wait_for("the chain Ready", lambda: _chain_ready(kube), 120)
    chain = Chain(layout)
    wait_for("a ping through the chain", chain.ping, 30)
    return chain


def test_every_agent_programs_every_endpoint_and_flows_cross_nodes(cluster: Layout) -> None:
    chain = _ready_chain(cluster)
    kube = _kube(cluster)
    bodies = [_xc(kube, name) for name in XCS]
    cluster_ids = {body["spec"]["clusterId"] for body in bodies}
    assert len(cluster_ids) == 2
    for body in bodies:
        ids = [ep["id"] for side in "ab" for ep in body["spec"][side]["endpoints"]]
        assert len(ids) == 4 and len(set(ids)) == 4
        assert set(body["status"]["nodes"]) == set(NODES)
        assert all(report["ready"] for report in body["status"]["nodes"].values())

    carried: dict[str, list[int]] = {name: [] for name in REPLICAS}
    for kind, first in (("udp", 41000), ("tcp", 42000)):
        for port in range(first, first + 15):
            answers, replica = chain.flow(kind, port)
            assert answers == ROUNDS, (kind, port)
            assert replica is not None, f"{kind} flow from {port}: both directions on one replica"
            carried[replica].append(port)
    # the local replica (fw-1, beside the client) and both remote ones carry flows
    assert all(carried.values()), carried


def _ip(netns_name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "-n", netns_name, *args], capture_output=True, text=True, check=False, timeout=10
    )


def _mac(netns_name: str) -> str:
    return str(json.loads(_ip(netns_name, "-j", "link", "show", "eth1").stdout)[0]["address"])


def _all_sessions(layout: Layout) -> list[Session]:
    """The sessions of both links on every node."""
    found: list[Session] = []
    for node in NODES:
        with Dataplane(layout.bpffs_root(node)) as dp:
            for xc in XCS:
                found.extend(dp.sessions(link_name(NS, xc)))
    return found


def test_ipv6_arp_and_nd_cross_nodes(cluster: Layout) -> None:
    chain = _ready_chain(cluster)
    server = _pod_netns(cluster, _kube(cluster), "server")
    for pod in (chain.client, server):
        for family in ("-4", "-6"):
            assert _ip(pod, family, "neigh", "flush", "dev", "eth1").returncode == 0
    unanswered = []
    pairs = [(ip, SERVER_IP) for ip in CLIENT_IPS] + [(ip, SERVER_IP6) for ip in CLIENT_IP6S]
    for source, target in pairs:
        argv = ["ping", "-n", "-c", "1", "-W", "2", "-I", source, target]
        done = subprocess.run(
            ["ip", "netns", "exec", chain.client, *argv], capture_output=True, check=False
        )
        if done.returncode:
            unanswered.append(source)
    assert not unanswered, f"no answer to the pings from {unanswered}"
    # the neighbours were resolved through the chain: each end knows the other's MAC
    client_mac, server_mac = _mac(chain.client), _mac(server)
    neighbours = [
        (chain.client, SERVER_IP, server_mac),
        (chain.client, SERVER_IP6, server_mac),
        (server, CLIENT_IPS[3], client_mac),
        (server, CLIENT_IP6S[3], client_mac),
    ]
    for pod, peer, mac in neighbours:
        neigh = json.loads(_ip(pod, "-j", "neigh", "show", "dev", "eth1", "to", peer).stdout)
        assert neigh and neigh[0].get("lladdr") == mac, (pod, peer, neigh)
    crossed: dict[str, int] = {}
    fresh = {*CLIENT_IPS[1:], *CLIENT_IP6S}  # addresses no earlier test used
    for s in _all_sessions(cluster):
        remote = s.a_ifname.startswith("#") or s.b_ifname.startswith("#")
        if remote and {s.addr_lo, s.addr_hi} & fresh:
            crossed[s.kind] = crossed.get(s.kind, 0) + 1
    # ARP and ND requests, and ICMPv6 echoes, went through replicas on other nodes
    assert crossed.get("arp") and crossed.get("nd") and crossed.get("l3-v6"), crossed


EXTRA = "fw-extra"  # a Deployment of firewall replicas beside the three pinned ones
DRAIN = 4.0  # seconds an extra replica keeps forwarding after SIGTERM
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"


def _extra_deployment(kube: SyncKube) -> None:
    script = (
        BRIDGE.replace("while true; do sleep 1; done", "")
        + f"trap 'sleep {DRAIN}; exit 0' TERM\nwhile true; do sleep 1 & wait $!; done\n"
    )
    labels = {"app": "firewall", "tier": "extra"}
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": EXTRA, "namespace": NS},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"k8s.v1.cni.cncf.io/networks": "fw-in@eth1,fw-out@eth2"},
                },
                "spec": {
                    "terminationGracePeriodSeconds": int(DRAIN) + 6,
                    "containers": [
                        {
                            "name": "main",
                            "image": "ignored.example/none:0",
                            "command": ["sh", "-c", script],
                        }
                    ],
                },
            },
        },
    }
    kube.request("POST", DEPLOYMENTS, body=body)


def _scale(kube: SyncKube, replicas: int) -> None:
    body = {"spec": {"replicas": replicas}}
    kube.request("PATCH", f"{DEPLOYMENTS}/{EXTRA}", body=body, content_type=MERGE_PATCH)


def _internal_ip(kube: SyncKube, node: str) -> str:
    addresses = _get(kube, f"/api/v1/nodes/{node}")["status"]["addresses"]
    return str(next(a["address"] for a in addresses if a["type"] == "InternalIP"))


def _firewall_endpoints(kube: SyncKube) -> list[dict[str, Any]]:
    """The firewall endpoints of the client's link, as the controller lists them."""
    return list(_xc(kube, XCS[0])["spec"]["b"]["endpoints"])


def _programmed(layout: Layout, states: dict[int, str]) -> bool:
    """Every node's data plane holds exactly these firewall endpoints (id -> state) in the
    client's link, and as many in the same states in the server's link (every node holds both
    links: each has a firewall replica)."""
    for node in NODES:
        with Dataplane(layout.bpffs_root(node)) as dp:
            eps = [
                [(e.id, e.state.value) for e in dp.endpoints(link_name(NS, xc))
                 if e.side.value == side]
                for xc, side in ((XCS[0], "b"), (XCS[1], "a"))
            ]  # fmt: skip
        if dict(eps[0]) != states or sorted(s for _, s in eps[1]) != sorted(states.values()):
            return False
    return True


class Placement:
    """Which firewall pod carries each TCP flow of the client, from node-1's (the client's)
    sessions: a local replica by host interface, a remote one by ``#ID@NODE``."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.kube = _kube(layout)

    def __call__(self, flows: list[EchoFlow]) -> dict[EchoFlow, str]:
        pods: dict[str, str] = {}
        for ep in _firewall_endpoints(self.kube):
            pods[ep["hostInterface"]] = pods[f"#{ep['id']}"] = ep["pod"]
        with Dataplane(self.layout.bpffs_root("node-1")) as dp:
            sessions = dp.sessions(link_name(NS, XCS[0]))
        by_port = {f.local_port: f for f in flows}
        found = {}
        for s in sessions:
            if s.proto == 6 and 7007 in (s.port_lo, s.port_hi):
                for port in {s.port_lo, s.port_hi} & set(by_port):
                    found[by_port[port]] = pods.get(s.b_ifname.partition("@")[0], s.b_ifname)
        return found

    def all_of(self, flows: list[EchoFlow]) -> dict[EchoFlow, str]:
        """The placement of every flow of ``flows`` (waits for their sessions)."""

        def placed() -> dict[EchoFlow, str] | None:
            found = self(flows)
            return found if len(found) == len(flows) else None

        return wait_for(f"{len(flows)} flows in node-1's sessions", placed, 10)


def _open(client: str, count: int) -> list[EchoFlow]:
    """``count`` long-lived flows, each echoing 1 KiB every 50 ms (every byte checked)."""
    flows = open_echo_flows(client, SERVER_IP, 7007, count)
    wait_for("every flow echoed", lambda: all(f.bytes_ok or f.broken for f in flows), 10)
    return flows


def _cover(client: str, placement: Placement, pods: set[str]) -> list[EchoFlow]:
    """Open flows in batches until each of ``pods`` carries one (at most 60)."""
    flows: list[EchoFlow] = []
    while len(flows) < 60:
        flows += _open(client, 6)
        if pods <= set(placement.all_of(flows).values()):
            return flows
    for flow in flows:
        flow.stop()
    raise AssertionError(f"60 new flows and not one on each of {sorted(pods)}")


def test_scale_out_and_in_across_nodes_under_50_tcp_flows(cluster: Layout) -> None:
    chain = _ready_chain(cluster)
    kube = _kube(cluster)
    flows: list[EchoFlow] = []
    try:
        _scale_out_and_in(cluster, kube, chain, flows)
    finally:
        for flow in flows:
            flow.stop()
        with contextlib.suppress(NotFoundError):
            kube.request("DELETE", f"{DEPLOYMENTS}/{EXTRA}")
        wait_for("the extra replicas gone", lambda: len(_firewall_endpoints(kube)) == 3, 60)
    assert len(flows) == 50
    broken = [(f.local_port, f.error) for f in flows if f.broken]
    assert not broken, broken


def _scale_out_and_in(cluster: Layout, kube: SyncKube, chain: Chain, flows: list[EchoFlow]) -> None:
    """Scale out then in under ``flows`` (filled with the 50 long-lived flows)."""
    placement = Placement(cluster)
    flows += _open(chain.client, 25)
    first = placement.all_of(flows)
    _extra_deployment(kube)
    _scale(kube, 3)

    def extra_listed() -> list[dict[str, Any]] | None:
        eps = _firewall_endpoints(kube)
        return [ep for ep in eps if ep["pod"].startswith(EXTRA)] if len(eps) == 6 else None

    extra = wait_for("3 extra firewall endpoints", extra_listed, 60)
    assert sorted(ep["node"] for ep in extra) == list(NODES)  # spread: one per node
    new = {ep["pod"] for ep in extra}
    ids = {ep["id"]: ep["pod"] for ep in _firewall_endpoints(kube)}
    active = dict.fromkeys(ids, "active")
    wait_for("6 firewall endpoints on every node", lambda: _programmed(cluster, active), 30)
    # node-1's metrics: one series per remote firewall endpoint, named #ID@NODE
    metrics = scrape_agent(cluster.node_netns("node-1"), AGENT_METRICS_PORT)
    addresses = {n: _internal_ip(kube, n) for n in NODES}
    assert {i for (xc, i), e in metrics.endpoints.items() if xc == XCS[0] and e.remote} == {
        f"#{ep['id']}@{addresses[ep['node']]}"
        for ep in _firewall_endpoints(kube)
        if ep["node"] != "node-1"
    }  # the client's endpoint is node-1's own

    # new flows reach every new replica; the first 25 keep theirs
    flows += _open(chain.client, 25)
    short = _cover(chain.client, placement, new)  # shorter than the drain window
    try:
        before = placement.all_of(flows)
        assert {f: before[f] for f in first} == first
        on_new = {f: pod for f, pod in placement.all_of(short).items() if pod in new}
        _scale(kube, 0)
        draining = {i: "draining" if pod in new else "active" for i, pod in ids.items()}
        wait_for("the new replicas draining on every node",
                 lambda: _programmed(cluster, draining), 10)  # fmt: skip
        began = {f: f.bytes_ok for f in on_new}
        # new flows avoid the draining replicas; flows on them stay and are served
        probes = _open(chain.client, 8)
        landed = placement.all_of(probes)
        for probe in probes:
            probe.stop()
        assert not set(landed.values()) & new, landed
        time.sleep(DRAIN / 2)
        assert placement(list(on_new)) == on_new
        assert all(f.bytes_ok > began[f] for f in on_new)
    finally:
        for flow in short:
            flow.stop()
    assert not [f.error for f in short if f.broken]  # they finished byte-exact on their replica

    left = {i: "active" for i, pod in ids.items() if pod not in new}
    wait_for("the new replicas removed on every node", lambda: _programmed(cluster, left), 30)
    moved = [f for f, pod in before.items() if pod in new]
    assert moved  # some long-lived flows were on removed replicas
    removed = {f: f.bytes_ok for f in flows}
    # flows of removed replicas pick another one once their sessions are invalid (TCP's
    # retransmission carries them over: the firewall keeps no state)
    wait_for("every long-lived flow moving after the removal",
             lambda: all(f.bytes_ok > removed[f] or f.broken for f in flows), 15)  # fmt: skip
    after = placement.all_of(flows)
    assert {f: after[f] for f in flows if f not in moved} == {
        f: before[f] for f in flows if f not in moved
    }  # flows on the remaining replicas never moved
    assert all(after[f] in REPLICAS for f in moved), {f.local_port: after[f] for f in moved}


def _chain_condition(kube: SyncKube, kind: str) -> dict[str, Any]:
    chain = _get(kube, f"/apis/sfc-k8s.io/v1alpha1/namespaces/{NS}/servicefunctionchains/{CHAIN}")
    conditions = (chain.get("status") or {}).get("conditions") or []
    return next((dict(c) for c in conditions if c["type"] == kind), {})


def test_interfaces_larger_than_the_tunnel_degrade_the_chain(cluster: Layout) -> None:
    """Every agent's tunnel fits the 1500-byte underlay (1450), and a firewall replica whose
    interfaces are 1500 bytes (a network without ``mtu``) is reported by its node's agent,
    which runs in the node's namespace with the host's sysfs: the chain turns Degraded
    (TunnelMTUExceeded, naming the node) until that replica is gone."""
    _ready_chain(cluster)
    kube = _kube(cluster)
    for node in NODES:
        (tun,) = json.loads(
            _ip(cluster.node_netns(node), "-j", "link", "show", "sfc-vxlan0").stdout
        )
        assert tun["mtu"] == TUNNEL_MTU, (node, tun)
    for name, eth in (("fw-big-in", "eth1"), ("fw-big-out", "eth2")):
        config = {"cniVersion": "1.0.0", "name": name, "type": "sfc-cni",
                  "macSeed": f"{NS}/fw/{eth}"}  # fmt: skip
        body = {
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"config": json.dumps(config)},
        }
        kube.request("POST", NAD_PATH, body=body)
    networks = "fw-big-in@eth1,fw-big-out@eth2"
    _pod(kube, "fw-big", "firewall", "node-2", networks=networks, argv=["sh", "-c", BRIDGE])
    try:

        def degraded() -> dict[str, Any] | None:
            found = _chain_condition(kube, "Degraded")
            return found if found.get("reason") == "TunnelMTUExceeded" else None

        condition = wait_for("the chain Degraded by fw-big's MTU", degraded, 30)
        assert "node-2" in condition["message"] and "1500" in condition["message"], condition
        assert _chain_condition(kube, "Ready").get("status") == "False"
    finally:
        kube.request("DELETE", f"/api/v1/namespaces/{NS}/pods/fw-big")
        for name in ("fw-big-in", "fw-big-out"):
            kube.request("DELETE", f"{NAD_PATH}/{name}")
    wait_for("fw-big gone", lambda: len(_firewall_endpoints(kube)) == 3, 30)
    wait_for("the chain Ready again", lambda: _chain_ready(kube), 30)


def _remote_endpoints(layout: Layout, node: str) -> dict[str, list[tuple[str, int, str, str]]]:
    """Each link's endpoints in ``node``'s data plane: (side, id, node address, state) of
    the remote ones, as pinned."""
    with Dataplane(layout.bpffs_root(node)) as dp:
        return {
            link: [
                (e.side.value, e.id, e.node, e.state.value) for e in dp.endpoints(link) if e.node
            ]
            for link in dp.links()
        }


def _agent_pid(layout: Layout) -> int:
    """The agent container's process of node-1 (a pod of deploy/'s DaemonSet); 0 if none."""
    return next(iter(operator_pods.container_pids(layout, "agent", "node-1")), 0)


def test_agent_restart_keeps_remote_endpoints_and_cross_node_flows(cluster: Layout) -> None:
    chain = _ready_chain(cluster)
    before = _remote_endpoints(cluster, "node-1")
    # fw-2 and fw-3 on the first link; fw-2, fw-3 and the server on the second
    assert sorted(len(eps) for eps in before.values()) == [2, 3], before
    port = next(p for p in range(46000, 46100) if chain.flow("udp", p)[1] in {"fw-2", "fw-3"})
    rounds = 300
    argv = [sys.executable, "-c", FLOW, "udp", str(port), str(rounds), SERVER_IP, "0.02"]
    running = subprocess.Popen(
        ["ip", "netns", "exec", chain.client, *argv], stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(1.0)
        pid = _agent_pid(cluster)
        os.kill(pid, signal.SIGTERM)
        wait_for("agent-node-1 to exit", lambda: not pid_alive(pid, None), 20)
        # the local cluster's supervisor starts it again, as a DaemonSet would
        wait_for("agent-node-1 restarted", lambda: _agent_pid(cluster) not in (0, pid), 20)
        out, _ = running.communicate(timeout=60)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert int(out.strip()) == rounds  # not one answer lost across the restart
    _ready_chain(cluster)
    assert _remote_endpoints(cluster, "node-1") == before


def _cli(layout: Layout, *args: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = local_cli.main([*args, "--state-dir", str(layout.state_dir)])
    assert code == 0, out.getvalue()


def _node_ready(kube: SyncKube, name: str) -> str:
    node = _get(kube, f"/api/v1/nodes/{name}")
    return next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready")


@contextlib.contextmanager
def _controller_paused(layout: Layout) -> Iterator[None]:
    """Freeze the controller (SIGSTOP): the CrossConnections keep listing the lost node's
    endpoints, so only the agents' own watch of the Nodes can take them out (as when the
    controller ran on the node that was lost)."""
    pids = operator_pods.container_pids(layout, "controller")  # both replicas
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # its node was stopped meanwhile
                os.kill(pid, signal.SIGCONT)


def test_lost_node_gets_no_new_flows_and_other_flows_stay(cluster: Layout) -> None:
    chain = _ready_chain(cluster)
    kube = _kube(cluster)
    placed = {port: chain.flow("udp", port)[1] for port in range(43000, 43015)}
    staying = {port: replica for port, replica in placed.items() if replica != "fw-2"}
    moving = [port for port, replica in placed.items() if replica == "fw-2"]
    assert len(staying) >= 3 and moving, placed

    with _controller_paused(cluster):
        _cli(cluster, "node", "stop", "node-2")
        wait_for("node-2 not Ready in the API", lambda: _node_ready(kube, "node-2") != "True", 30)
        shown = time.monotonic()

        def new_flows_avoid_node_2() -> bool:
            base = 44000 + int((time.monotonic() - shown) * 10) * 20
            return all(chain.flow("udp", port)[0] == ROUNDS for port in range(base, base + 12))

        # the bound (10 s) plus one round of probes (12 flows) on this loaded machine
        wait_for("new flows avoiding node-2", new_flows_avoid_node_2, 10 + 5)
        for port, replica in staying.items():  # never moved
            assert chain.flow("udp", port) == (ROUNDS, replica), port
        for port in moving:  # picked another replica (the NF state on fw-2 is lost)
            answers, replica = chain.flow("udp", port)
            assert answers == ROUNDS and replica in {"fw-1", "fw-3"}, (port, replica)

    _cli(cluster, "node", "start", "node-2")
    wait_for("node-2 Ready", lambda: _node_ready(kube, "node-2") == "True", 60)
    chain = Chain(cluster)  # fw-2 runs again in a new sandbox

    def fw_2_carries_again() -> bool:
        base = 45000 + int(time.monotonic() * 10) % 500 * 20
        return any(chain.flow("udp", p) == (ROUNDS, "fw-2") for p in range(base, base + 12))

    wait_for("new flows reaching fw-2 again", fw_2_carries_again, 90)


def test_deleted_node_leaves_no_agent_finalizer(cluster: Layout) -> None:
    kube = _kube(cluster)
    _ready_chain(cluster)
    finalizer = agent_finalizer("node-2")
    assert all(finalizer in _xc(kube, name)["metadata"]["finalizers"] for name in XCS)
    _cli(cluster, "node", "stop", "node-2")
    kube.request("DELETE", "/api/v1/nodes/node-2")

    def released() -> bool:
        return all(finalizer not in (_xc(kube, n)["metadata"].get("finalizers") or []) for n in XCS)

    # One controller replica runs on node-2: if it led, the other one resumes once the
    # leader's last keep-alive is a peering lifetime old, then lists everything again.
    wait_for("node-2's finalizer removed", released, ControllerConfig().peering_lifetime + 10)
    assert agent_finalizer("node-1") in _xc(kube, XCS[0])["metadata"]["finalizers"]
