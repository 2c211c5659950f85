"""Node runtime with two emulated nodes.

Covers: one network namespace and one Ready Node object per node with its own pod CIDR; pods
spread over the nodes by the API server's scheduler; each pod's host-side veth (sfc-cni) in
its own node's namespace and its pod IP from its node's CIDR; the API endpoint inside each node
namespace (``127.0.0.1:<API port>`` forwarded to the API server), which the real kubectl uses
with the host's kubeconfig from inside the node, as the node agents do.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sfc_k8s.api.naming import host_ifname
from sfc_k8s.local.node.cni import NETWORKS_ANNOTATION
from tests.integration.local.cluster import Cluster, condition, local_cluster, ready


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with local_cluster(tmp_path_factory.mktemp("sfcl2"), nodes=2) as c:
        yield c


def _links(netns: str) -> str:
    return subprocess.run(
        ["ip", "-n", netns, "-o", "link", "show"], capture_output=True, text=True, check=True
    ).stdout


def test_pods_spread_over_nodes_with_their_veths(two_nodes: Cluster, tmp_path: Path) -> None:
    cluster = two_nodes
    nodes = {n["metadata"]["name"]: n for n in cluster.kube.get("/api/v1/nodes")["items"]}
    assert set(nodes) == {"node-1", "node-2"}
    assert all(condition(n, "Ready") == "True" for n in nodes.values())
    assert {n["spec"]["podCIDR"] for n in nodes.values()} == {"10.244.1.0/24", "10.244.2.0/24"}

    ns = cluster.namespace()
    config = {"cniVersion": "1.0.0", "name": "nf", "type": "sfc-cni", "macSeed": "nf"}
    cluster.kube.request(
        "POST",
        f"/apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions",
        body={"metadata": {"name": "nf", "namespace": ns}, "spec": {"config": json.dumps(config)}},
    )
    spec = {
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "main", "command": ["sleep", "1000"]}],
    }
    for i in range(2):
        cluster.create_pod(ns, f"p{i}", spec, annotations={NETWORKS_ANNOTATION: "nf@eth1"})
    pods = [cluster.wait_pod(ns, f"p{i}", ready) for i in range(2)]
    assert {p["spec"]["nodeName"] for p in pods} == {"node-1", "node-2"}
    for pod in pods:
        node = pod["spec"]["nodeName"]
        other = "node-2" if node == "node-1" else "node-1"
        veth = host_ifname(pod["metadata"]["uid"], "eth1")
        assert f" {veth}@" in _links(cluster.layout.node_netns(node))
        assert veth not in _links(cluster.layout.node_netns(other))
        assert pod["status"]["podIP"].startswith(f"10.244.{node[-1]}.")
    for i in range(2):
        cluster.delete_pod(ns, f"p{i}")
    for i in range(2):
        cluster.wait_gone(ns, f"p{i}")


def test_api_reachable_from_inside_a_node(two_nodes: Cluster) -> None:
    for node in ("node-1", "node-2"):
        proc = subprocess.run(
            [
                "ip", "netns", "exec", two_nodes.layout.node_netns(node),
                "/usr/bin/kubectl", "--kubeconfig", str(two_nodes.layout.kubeconfig),
                "get", "nodes", "-o", "name",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["node/node-1", "node/node-2"]
