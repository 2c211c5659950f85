"""Benchmark of cross-connections between two nodes, side by side with VXLAN baselines in one run.

Run as root: ``.venv/bin/python bench/crossnode.py [--quick] [--reps N] [--no-same-node]``.
Not a test: it prints a table, the paired ratios and PASS/FAIL lines for the targets of issue 9,
and writes ``bench/results/crossnode.json``. Method and measured numbers: ``docs/benchmarks.md``.

Two node namespaces joined by one veth pair (the underlay, MTU 1500; every pod interface 1450,
the tunnel's MTU), built by ``tests/integration/dataplane/multinode.py``; every setup has its
client pod on node 1 and its server pod on node 2, so every packet crosses the underlay once,
encapsulated in VXLAN (outer UDP checksums on, as the agent's tunnel does by default):

- ``vxlan`` (the ceiling): pods on routed veths (a /26 per node, the host end its gateway),
  the nodes routing each other's pod subnet through one plain VXLAN device (UDP 4793) whose
  remote is the other node: the least a VXLAN overlay can do;
- ``bridge-vxlan`` (what a user would run instead, flannel's VXLAN backend rebuilt by hand):
  pods on a Linux bridge per node (``cni0``, the gateway), the other node's subnet routed
  through a VXLAN device without learning (UDP 8472) with a static neighbour and FDB entry;
- ``xn-1:1``: one cross-connection, side A the client on node 1, side B the server on node 2,
  both nodes programmed as their agents would (the local endpoint by interface, the remote one
  by node address and id) with the ``sfc-vxlan0`` tunnel (UDP 4792);
- ``xn-chain-1:4``: the chain client -> NF -> server with four L2-transparent NF replicas (a
  bridge in a namespace) spread over both nodes (two each), two cross-connections; a flow
  crosses the underlay once, at the first link (remote replica) or at the second (local one).
  It carries one NF hop (two veths and a bridge) more than the baselines, which have no NF.

With ``--same-node`` (the default) it also builds ``bench/dataplane.py``'s ``direct`` pair and
1:1 cross-connection in the root namespace (``same-direct``, ``same-xc-1:1``) and measures them
in the same rounds, so the single-node path is seen beside the cross-node one.

Figures per setup and the rounds are ``bench/dataplane.py``'s: iperf3 TCP 1 and 8 streams,
UDP 64 B datagrams received per second, ping p50/p99; every test runs on every setup back to
back within a round, the order rotating between rounds; ratios are paired within a round.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import dataclasses
import ipaddress
from pathlib import Path
from typing import Any

from bench._common import Machine, needs_root, write_report
from bench.dataplane import (
    REPO,
    Setup,
    build_setups,
    markdown,
    medians_of,
    paired_ratios,
    print_ratios,
    print_table,
    print_targets,
    ratio_targets,
    run_rounds,
    serve_iperf3,
)
from tests.fixtures.topology import Addressing, ip_batch, sysctl
from tests.integration.dataplane.multinode import Cluster, Node
from tests.nettools import Janitor, run

RESULTS = REPO / "bench" / "results" / "crossnode.json"
PLAIN_VXLAN_PORT = 4793
FLANNEL_PORT = 8472  # flannel's own VXLAN port
XN_LINK, XN_CLUSTER_ID = "xn-11", 103  # the 1:1 link (the chain's are 101 and 102)
REPLICA_NODES = (0, 1, 0, 1)  # the chain's four NF replicas, two per node

# Each measured setup against its baselines (paired ratios), and the targets of the issue.
AGAINST = {
    "xn-1:1": ["vxlan", "bridge-vxlan"],
    "xn-chain-1:4": ["vxlan", "bridge-vxlan"],
    "bridge-vxlan": ["vxlan"],
    "same-xc-1:1": ["same-direct"],
}
BASES = ("vxlan", "bridge-vxlan", "same-direct")
TARGETS = [
    ("xn-1:1", "tcp_1_gbps", "vxlan", 0.95),
    ("xn-1:1", "tcp_8_gbps", "vxlan", 0.95),
    ("xn-1:1", "udp64_kpps", "bridge-vxlan", 1.0),
    ("xn-chain-1:4", "tcp_1_gbps", "vxlan", 0.95),
    ("xn-chain-1:4", "tcp_8_gbps", "vxlan", 0.95),
    ("xn-chain-1:4", "udp64_kpps", "bridge-vxlan", 1.0),
    # bench/dataplane.py's own targets for the same-node 1:1 link, measured here again
    ("same-xc-1:1", "tcp_1_gbps", "same-direct", 0.95),
    ("same-xc-1:1", "tcp_8_gbps", "same-direct", 0.95),
    ("same-xc-1:1", "udp64_kpps", "same-direct", 0.90),
]


# --- the cross-connection setups ---------------------------------------------------------------
def build_xc(cluster: Cluster) -> list[Setup]:
    """The 1:1 link and the 1:4 chain, every node programmed with both (one plan per node)."""
    a = Addressing.random()
    client = cluster.pod(0, "sfct-cli", f"{a.client_ip}/24", "", a.client_mac)
    server = cluster.pod(1, "sfct-srv", f"{a.server_ip}/24", "", a.server_mac)
    for index, node in enumerate(cluster.nodes):
        plan = cluster.plan(index)
        plan["links"].append(
            {
                "name": XN_LINK,
                "cluster_id": XN_CLUSTER_ID,
                "side_a": [cluster.endpoint_spec(index, 0, client.host, 1)],
                "side_b": [cluster.endpoint_spec(index, 1, server.host, 2)],
            }
        )
        node.dp("apply", plan)
    assert cluster.client is not None and cluster.server is not None
    chain = cluster.addressing
    return [
        Setup("xn-1:1", client.netns, server.netns, a.server_ip),
        Setup("xn-chain-1:4", cluster.client.netns, cluster.server.netns, chain.server_ip),
    ]


# --- the VXLAN baselines -----------------------------------------------------------------------
def _subnets() -> list[ipaddress.IPv4Network]:
    """A fresh /24 in four /26s: node 1's pods, node 2's pods, the VXLAN devices, unused."""
    return list(Addressing.random().net4.subnets(new_prefix=26))


def _forwarding(node: Node, *ifnames: str) -> None:
    """IPv4 forwarding on these interfaces only (the kernel asks the incoming one): the
    cross-connections' host ends on the same node keep it off."""
    # slashes: an interface name may hold a dot (flannel.1)
    sysctl({f"net/ipv4/conf/{i}/forwarding": 1 for i in ifnames}, netns=node.netns)


def _routed_pod(cluster: Cluster, index: int, subnet: ipaddress.IPv4Network, role: str) -> str:
    """A pod on a routed veth: ``subnet[2]`` in the pod, ``subnet[1]`` (its gateway) on the
    host end. Returns the pod's namespace."""
    a = Addressing.random()
    pod = cluster.pod(index, f"sfct-{role}", f"{subnet[2]}/{subnet.prefixlen}", "", a.client_mac)
    ip_batch([f"addr add {subnet[1]}/{subnet.prefixlen} dev {pod.host}"],
             netns=cluster.nodes[index].netns)  # fmt: skip
    ip_batch([f"route add default via {subnet[1]}"], netns=pod.netns)
    _forwarding(cluster.nodes[index], pod.host)
    return pod.netns


def build_plain_vxlan(cluster: Cluster) -> Setup:
    """The ceiling: routed pods, one point-to-point VXLAN device per node."""
    *nets, tunnel, _ = _subnets()  # node 1's pods, node 2's pods, the VXLAN devices
    ends = [_routed_pod(cluster, i, nets[i], role) for i, role in enumerate(("cli", "srv"))]
    for index, node in enumerate(cluster.nodes):
        peer = cluster.nodes[1 - index]
        ip_batch(
            [
                f"link add vxp0 type vxlan id 42 local {node.address} remote {peer.address} "
                f"dstport {PLAIN_VXLAN_PORT} dev ul0 udpcsum",
                f"addr add {tunnel[1 + index]}/{tunnel.prefixlen} dev vxp0",
                "link set vxp0 up",
                f"route add {nets[1 - index]} via {tunnel[2 - index]} dev vxp0",
            ],
            netns=node.netns,
        )
        _forwarding(node, "vxp0")
    return Setup("vxlan", ends[0], ends[1], str(nets[1][2]))


def build_bridge_vxlan(cluster: Cluster) -> Setup:
    """Flannel's VXLAN backend by hand: a bridge per node, static neighbour and FDB entries."""
    nets = _subnets()[:2]  # node 1's pods, node 2's pods
    macs = [Addressing.random().client_mac for _ in cluster.nodes]
    ends = []
    for index, (node, role) in enumerate(zip(cluster.nodes, ("cli", "srv"), strict=True)):
        net = nets[index]
        ip_batch(["link add cni0 type bridge stp_state 0",
                  f"addr add {net[1]}/{net.prefixlen} dev cni0", "link set cni0 up"],
                 netns=node.netns)  # fmt: skip
        a = Addressing.random()
        pod = cluster.pod(index, f"sfct-{role}", f"{net[2]}/{net.prefixlen}", "", a.client_mac)
        ip_batch([f"link set {pod.host} master cni0"], netns=node.netns)
        ip_batch([f"route add default via {net[1]}"], netns=pod.netns)
        ends.append(pod.netns)
    for index, node in enumerate(cluster.nodes):
        peer, peer_net = cluster.nodes[1 - index], nets[1 - index]
        ip_batch(
            [
                f"link add flannel.1 address {macs[index]} type vxlan id 1 local {node.address} "
                f"dev ul0 dstport {FLANNEL_PORT} nolearning udpcsum",
                f"addr add {nets[index].network_address}/32 dev flannel.1",
                "link set flannel.1 up",
                f"neigh add {peer_net.network_address} lladdr {macs[1 - index]} dev flannel.1 "
                "nud permanent",
                f"route add {peer_net} via {peer_net.network_address} dev flannel.1 onlink",
            ],
            netns=node.netns,
        )
        run("bridge", "fdb", "append", macs[1 - index], "dev", "flannel.1", "dst", peer.address,
            netns=node.netns)  # fmt: skip
        _forwarding(node, "cni0", "flannel.1")
    return Setup("bridge-vxlan", ends[0], ends[1], str(nets[1][2]))


def build_crossnode(janitor: Janitor) -> tuple[Cluster, list[Setup]]:
    """Both nodes and every cross-node setup, in table order."""
    cluster = Cluster.build(janitor, nodes=2, replica_nodes=REPLICA_NODES, ipv6=False,
                            underlay="veth")  # fmt: skip
    setups = [build_plain_vxlan(cluster), build_bridge_vxlan(cluster), *build_xc(cluster)]
    return cluster, setups


def build_same_node(janitor: Janitor) -> list[Setup]:
    """``bench/dataplane.py``'s direct pair and 1:1 cross-connection, renamed ``same-*``."""
    setups = build_setups(janitor, replicas=1)[0]
    return [
        dataclasses.replace(s, name=f"same-{s.name}")
        for s in setups
        if s.name in ("direct", "xc-1:1")
    ]


# --- main ----------------------------------------------------------------------------------------
def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition, 1 s tests")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument("--seconds", type=float, default=2.0, help="iperf3 -t (default 2)")
    parser.add_argument("--pings", type=int, default=1000, help="pings per repetition")
    same = "also measure bench/dataplane.py's direct pair and 1:1 link (default)"
    parser.add_argument("--same-node", action=argparse.BooleanOptionalAction, default=True,
                        help=same)  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--markdown", action="store_true", help="also print Markdown tables")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.seconds, args.pings = 1, 1.0, 300
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    if not needs_root("bench/crossnode.py"):
        return 2
    machine = Machine.start()
    janitor = Janitor()
    try:
        setups = build_crossnode(janitor)[1] + (build_same_node(janitor) if args.same_node else [])
        serve_iperf3(janitor, setups)
        runs = run_rounds(setups, args)
    finally:
        janitor.close()

    medians = medians_of(runs)
    print_table(medians, args.reps)
    rel = paired_ratios(runs, AGAINST)
    print_ratios(rel)
    checks = ratio_targets(rel, TARGETS)
    print_targets(checks)
    report: dict[str, Any] = {
        "machine": machine.describe(),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": runs,
        "medians": medians,
        "ratios": rel,
        "targets": checks,
    }
    write_report(args.out, report)
    if args.markdown:
        print(markdown(report, BASES))
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
