"""The local cluster's underlay: the "physical" network joining its node namespaces.

As kind plugs each node container into one Docker bridge network, ``sfc-k8s local up`` (and the
tests' cluster fixture) make one underlay network namespace per cluster holding a Linux bridge,
and give every node namespace one veth to it: ``eth0`` in the node, with the node's address
(its ``InternalIP``) and the underlay MTU, the other end a bridge port named after the node.
Nodes reach each other only over this bridge. The cluster network is routed over it as kindnet
routes it: every node gets a route to each other node's pod CIDR via that node's address.

Every address lives inside namespaces the cluster creates, so nothing on the host changes.
``plan`` is pure (what to create); ``create`` runs it with ``ip``; ``set_node_link`` takes a
node's cable out and puts it back (``local node stop|start``). Removal is the namespace's:
deleting the underlay namespace removes the bridge and every veth pair. Used by the CLI, the
node runtime (to read a node's address and MTU) and the tests.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from dataclasses import dataclass

from sfc_k8s.local.layout import Layout, node_name, pod_cidr
from sfc_k8s.local.netns import IP, netns_path

NODE_IFNAME = "eth0"  # the node's underlay interface, as in a kind node container
BRIDGE = "br-underlay"
SUBNET = ipaddress.IPv4Network("172.18.0.0/16")  # kind's Docker network, inside our namespaces
DEFAULT_MTU = 1500
MIN_MTU = 1280  # IPv6's minimum: pods get IPv6 on data-plane interfaces
MAX_MTU = 9000
MAX_NODES = 200


class UnderlayError(Exception):
    """The underlay could not be created or changed."""


@dataclass(frozen=True)
class NodeLink:
    """One node's attachment to the underlay."""

    node: str
    index: int
    address: str  # the node's InternalIP
    port: str  # the bridge-side end, in the underlay namespace
    pod_cidr: str

    def to_json(self) -> dict[str, str]:
        return {"address": self.address, "interface": NODE_IFNAME, "port": self.port}


def node_address(index: int) -> str:
    """The underlay address of the ``index``-th (1-based) node: 172.18.0.2, .3, ..."""
    return str(SUBNET.network_address + index + 1)


def check_options(nodes: int, mtu: int) -> None:
    """Refuse a node count or MTU the underlay cannot have, naming the value and the range."""
    if not 1 <= nodes <= MAX_NODES:
        raise UnderlayError(f"--nodes {nodes}: expected a whole number from 1 to {MAX_NODES}")
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise UnderlayError(f"--mtu {mtu}: expected an MTU from {MIN_MTU} to {MAX_MTU} bytes")


def plan(nodes: int) -> list[NodeLink]:
    """The links of a cluster of ``nodes`` nodes (pure)."""
    return [
        NodeLink(
            node=node_name(i),
            index=i,
            address=node_address(i),
            port=node_name(i),
            pod_cidr=pod_cidr(i),
        )
        for i in range(1, nodes + 1)
    ]


def record(layout: Layout, links: list[NodeLink], mtu: int) -> dict[str, object]:
    """What ``cluster.json`` keeps about the underlay (written before anything is created)."""
    return {
        "netns": layout.underlay_netns,
        "bridge": BRIDGE,
        "subnet": str(SUBNET),
        "mtu": mtu,
        "nodes": {link.node: link.to_json() for link in links},
    }


def routes(links: list[NodeLink], node: NodeLink) -> list[tuple[str, str]]:
    """``(pod CIDR, via)`` of every other node, as ``node`` routes them (pure)."""
    return [(link.pod_cidr, link.address) for link in links if link.node != node.node]


def _ip(*args: str) -> None:
    proc = subprocess.run([IP, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UnderlayError(f"'ip {' '.join(args)}' failed: {proc.stderr.strip()}")


def _ensure_netns(name: str) -> None:
    if not os.path.exists(netns_path(name)):
        _ip("netns", "add", name)
    _ip("-n", name, "link", "set", "lo", "up")


def _forwarding(ns: str) -> None:
    proc = subprocess.run(
        [IP, "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise UnderlayError(f"cannot enable IPv4 forwarding in {ns!r}: {proc.stderr.strip()}")


def create(layout: Layout, links: list[NodeLink], mtu: int) -> None:
    """Make the underlay namespace, its bridge, and every node's link, address and routes.

    The node namespaces are created here if missing (the node runtime adopts them). The caller
    records ``record(...)`` first, so ``local down`` removes all of it after any failure.
    """
    ul = layout.underlay_netns
    _ensure_netns(ul)
    _ip("-n", ul, "link", "add", BRIDGE, "mtu", str(mtu), "type", "bridge")
    _ip("-n", ul, "link", "set", BRIDGE, "up")
    for link in links:
        node_ns = layout.node_netns(link.node)
        _ensure_netns(node_ns)
        _ip(
            "-n", ul, "link", "add", link.port, "mtu", str(mtu), "type", "veth",
            "peer", "name", NODE_IFNAME, "mtu", str(mtu), "netns", node_ns,
        )  # fmt: skip
        _ip("-n", ul, "link", "set", link.port, "master", BRIDGE, "up")
        _ip("-n", node_ns, "addr", "add", f"{link.address}/{SUBNET.prefixlen}", "dev", NODE_IFNAME)
        _ip("-n", node_ns, "link", "set", NODE_IFNAME, "up")
        _forwarding(node_ns)
    for link in links:
        for cidr, via in routes(links, link):
            _ip("-n", layout.node_netns(link.node), "route", "replace", cidr, "via", via)


def set_node_link(layout: Layout, node: str, *, up: bool, timeout: float = 5.0) -> None:
    """Plug a node's cable in or out: its bridge port up or down. Returns once the node sees
    the carrier come or go (the kernel signals it asynchronously, within about a second)."""
    _ip("-n", layout.underlay_netns, "link", "set", node, "up" if up else "down")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        iface = read_node_interface(layout.node_netns(node))
        if iface is None or iface.carrier == up:
            return
        time.sleep(0.02)
    raise UnderlayError(f"node {node}'s underlay link did not go {'up' if up else 'down'}")


@dataclass(frozen=True)
class NodeInterface:
    """What a node namespace shows of its underlay interface."""

    address: str
    mtu: int
    carrier: bool


def read_node_interface(netns: str) -> NodeInterface | None:
    """The node's underlay address and MTU as its namespace shows them; None without one."""
    proc = subprocess.run(
        [IP, "-j", "-n", netns, "addr", "show", "dev", NODE_IFNAME],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return None
    try:
        (link,) = json.loads(proc.stdout)
    except ValueError:
        return None
    addresses = [a["local"] for a in link.get("addr_info") or [] if a.get("family") == "inet"]
    if not addresses:
        return None
    flags = link.get("flags") or []
    return NodeInterface(
        address=str(addresses[0]),
        mtu=int(link.get("mtu", DEFAULT_MTU)),
        carrier="LOWER_UP" in flags,
    )
