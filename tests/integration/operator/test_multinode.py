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
- agent restart on the client's node: its pinned remote endpoints stay as they were, and a UDP
  sequence through a remote replica running across the restart loses no answer;
- node loss: ``local node stop node-2`` (short grace period, long eviction timeout) with the
  controller frozen, so that only the agents' watch of the Nodes can react: within 10 s of the
  API showing the Node not Ready, new flows all work (none is sent to the lost replica), flows
  carried by the other replicas never moved, and those of the lost replica picked another one;
  ``node start`` brings its replica back;
- a Node deleted for good: the controller removes its agent's finalizer from the
  CrossConnections.
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
from sfc_k8s.dataplane import Dataplane
from sfc_k8s.local import cli as local_cli
from sfc_k8s.local.kube import SyncKube, load_kubeconfig
from sfc_k8s.local.layout import Layout, list_netns, pid_alive, read_json
from sfc_k8s.local.nodes import agent_process

T = TypeVar("T")
NS = "sfc-mn"
CHAIN = "mn"
XCS = (f"{CHAIN}-client-firewall", f"{CHAIN}-firewall-server")
NODES = ("node-1", "node-2", "node-3")
REPLICAS = {f"fw-{i}": node for i, node in enumerate(NODES, start=1)}
SERVER_IP = "192.168.100.20"
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


def _nad(kube: SyncKube, name: str, seed: str, address: str | None = None) -> None:
    config: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "sfc-cni",
        "macSeed": seed,
        "mtu": TUNNEL_MTU,
    }
    if address:
        config["ipam"] = {"type": "static", "addresses": [{"address": address}]}
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
    _nad(kube, "client-net", f"{NS}/client", "192.168.100.10/24")
    _nad(kube, "server-net", f"{NS}/server", f"{SERVER_IP}/24")
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
    return int(read_json(layout.cluster_file)["processes"][agent_process("node-1")]["pid"])


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
    pid = int(read_json(layout.cluster_file)["processes"]["controller"]["pid"])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
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

    wait_for("node-2's finalizer removed", released, 15)
    assert agent_finalizer("node-1") in _xc(kube, XCS[0])["metadata"]["finalizers"]
