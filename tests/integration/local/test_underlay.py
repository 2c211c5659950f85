"""The underlay joining the nodes, and the cluster network routed over it.

Covers: every node has one underlay interface (``eth0``) with the address its Node object
publishes as ``InternalIP`` and the MTU asked for; a node reaches another node's InternalIP
over the underlay (a packet of exactly the MTU passes with DF set, one byte more does not) and
only over it (with the other node's cable out, nothing gets through; back in, it does again);
pods get the underlay MTU on ``eth0`` and reach pods on the other node (real pings both ways,
with ``hostIP`` the node's InternalIP).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from sfc_k8s.local import underlay
from tests.integration.local.cluster import Cluster, local_cluster, ready, wait_for

MTU = 1400
IP_ICMP_HEADERS = 28  # 20 bytes of IPv4 header, 8 of ICMP echo


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with local_cluster(tmp_path_factory.mktemp("sfclu"), nodes=2, mtu=MTU) as c:
        yield c


def _ping(netns: str, address: str, *, size: int = 56, df: bool = False) -> bool:
    argv = ["ip", "netns", "exec", netns, "ping", "-c", "1", "-W", "1", "-s", str(size)]
    if df:
        argv += ["-M", "do"]
    proc = subprocess.run([*argv, address], capture_output=True, timeout=10, check=False)
    return proc.returncode == 0


def _internal_ip(cluster: Cluster, node: str) -> str:
    addresses = cluster.kube.get(f"/api/v1/nodes/{node}")["status"]["addresses"]
    (ip,) = [a["address"] for a in addresses if a["type"] == "InternalIP"]
    return str(ip)


def test_nodes_have_their_internal_ip_and_mtu_on_the_underlay(two_nodes: Cluster) -> None:
    for node, expected in (("node-1", "172.18.0.2"), ("node-2", "172.18.0.3")):
        iface = underlay.read_node_interface(two_nodes.layout.node_netns(node))
        assert iface is not None and iface.carrier
        assert (iface.address, iface.mtu) == (expected, MTU)
        assert _internal_ip(two_nodes, node) == expected


def test_nodes_reach_each_other_only_over_the_underlay(two_nodes: Cluster) -> None:
    layout = two_nodes.layout
    node1 = layout.node_netns("node-1")
    peer = _internal_ip(two_nodes, "node-2")
    assert _ping(node1, peer)
    assert _ping(node1, peer, size=MTU - IP_ICMP_HEADERS, df=True)
    assert not _ping(node1, peer, size=MTU - IP_ICMP_HEADERS + 1, df=True)
    underlay.set_node_link(layout, "node-2", up=False)  # node-2's cable out
    try:
        assert not _ping(node1, peer)
        iface = underlay.read_node_interface(layout.node_netns("node-2"))
        assert iface is not None and not iface.carrier
    finally:
        underlay.set_node_link(layout, "node-2", up=True)
    # Back in: reachable again (a first ping may still meet the neighbour entry that failed).
    wait_for("node-2 reachable again", lambda: _ping(node1, peer), 5)


def test_pods_on_two_nodes_reach_each_other(two_nodes: Cluster) -> None:
    cluster = two_nodes
    ns = cluster.namespace()
    for node in ("node-1", "node-2"):
        spec = {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "command": ["sleep", "1000"]}],
        }
        cluster.create_pod(ns, f"on-{node}", spec)
    pods = {node: cluster.wait_pod(ns, f"on-{node}", ready) for node in ("node-1", "node-2")}
    for node, pod in pods.items():
        assert pod["status"]["hostIP"] == _internal_ip(cluster, node)
        link = subprocess.run(
            ["ip", "-n", cluster.netns(pod), "-o", "link", "show", "eth0"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f" mtu {MTU} " in link
    a, b = pods["node-1"], pods["node-2"]
    assert _ping(cluster.netns(a), b["status"]["podIP"])
    assert _ping(cluster.netns(b), a["status"]["podIP"])
    for node in pods:
        cluster.delete_pod(ns, f"on-{node}")
    for node in pods:
        cluster.wait_gone(ns, f"on-{node}")
