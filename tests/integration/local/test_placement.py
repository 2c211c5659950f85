"""Pod placement on a three-node local cluster (scheduler in the API server, pods really run).

Covers: a Deployment's six replicas run two per node; ``nodeName`` binds a pod directly;
``nodeSelector`` on the hostname label and a required node affinity (``NotIn``) place a pod on
the one node allowed; a cordoned node (``spec.unschedulable``) gets no new replica; a pod no
node fits stays Pending with ``PodScheduled=False`` and kube-scheduler's message, and runs once
a node is labelled to fit it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from sfc_k8s.local.kube import MERGE_PATCH
from tests.integration.local.cluster import Cluster, local_cluster, ready, wait_for

SLEEP = {"name": "main", "image": "none", "command": ["sleep", "1000"]}


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with local_cluster(tmp_path_factory.mktemp("sfclp"), nodes=3) as c:
        yield c


def _deployment(cluster: Cluster, ns: str, name: str, replicas: int) -> None:
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 0, "containers": [SLEEP]},
            },
        },
    }
    cluster.kube.request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", body=body)


def _ready_pods(cluster: Cluster, ns: str, app: str, count: int) -> list[dict[str, Any]]:
    def probe() -> list[dict[str, Any]] | None:
        pods = cluster.kube.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=f"app={app}")
        live = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
        return live if len(live) == count and all(ready(p) for p in live) else None

    return wait_for(f"{count} ready pods of {app}", probe, 60)


def _patch_node(cluster: Cluster, name: str, body: dict[str, Any]) -> None:
    cluster.kube.request("PATCH", f"/api/v1/nodes/{name}", body=body, content_type=MERGE_PATCH)


def test_deployment_replicas_spread_over_the_nodes(three_nodes: Cluster) -> None:
    ns = three_nodes.namespace()
    _deployment(three_nodes, ns, "nf", 6)
    pods = _ready_pods(three_nodes, ns, "nf", 6)
    assert Counter(p["spec"]["nodeName"] for p in pods) == {"node-1": 2, "node-2": 2, "node-3": 2}
    three_nodes.kube.request("DELETE", f"/api/v1/namespaces/{ns}")


def test_name_selector_and_affinity_place_a_pod(three_nodes: Cluster) -> None:
    cluster = three_nodes
    ns = cluster.namespace()
    spec: dict[str, Any] = {"terminationGracePeriodSeconds": 0, "containers": [SLEEP]}
    cluster.create_pod(ns, "named", {**spec, "nodeName": "node-2"})
    selected = {**spec, "nodeSelector": {"kubernetes.io/hostname": "node-3"}}
    cluster.create_pod(ns, "selected", selected)
    not_12 = {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["node-1", "node-2"]}
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [not_12]}]
            }
        }
    }
    cluster.create_pod(ns, "affine", {**spec, "affinity": affinity})
    placed = {
        n: cluster.wait_pod(ns, n, ready)["spec"]["nodeName"]
        for n in ("named", "selected", "affine")
    }
    assert placed == {"named": "node-2", "selected": "node-3", "affine": "node-3"}
    cluster.kube.request("DELETE", f"/api/v1/namespaces/{ns}")


def test_cordoned_node_gets_no_new_replica(three_nodes: Cluster) -> None:
    cluster = three_nodes
    ns = cluster.namespace()
    _patch_node(cluster, "node-1", {"spec": {"unschedulable": True}})
    try:
        _deployment(cluster, ns, "cordoned", 4)
        pods = _ready_pods(cluster, ns, "cordoned", 4)
        assert Counter(p["spec"]["nodeName"] for p in pods) == {"node-2": 2, "node-3": 2}
    finally:
        _patch_node(cluster, "node-1", {"spec": {"unschedulable": None}})
    cluster.kube.request("DELETE", f"/api/v1/namespaces/{ns}")


def test_unschedulable_pod_stays_pending_with_the_reason(three_nodes: Cluster) -> None:
    cluster = three_nodes
    ns = cluster.namespace()
    spec = {
        "terminationGracePeriodSeconds": 0,
        "containers": [SLEEP],
        "nodeSelector": {"sfc-k8s.io/nic": "fast"},
    }
    cluster.create_pod(ns, "picky", spec)

    def scheduled_false(pod: dict[str, Any]) -> bool:
        conditions = (pod.get("status") or {}).get("conditions") or []
        return any(c["type"] == "PodScheduled" and c["status"] == "False" for c in conditions)

    pod = cluster.wait_pod(ns, "picky", scheduled_false)
    (condition,) = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert condition["reason"] == "Unschedulable"
    assert condition["message"] == (
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    )
    assert not pod["spec"].get("nodeName") and pod["status"].get("phase", "Pending") == "Pending"
    label = {"metadata": {"labels": {"sfc-k8s.io/nic": "fast"}}}
    _patch_node(cluster, "node-2", label)
    try:
        assert cluster.wait_pod(ns, "picky", ready)["spec"]["nodeName"] == "node-2"
    finally:
        _patch_node(cluster, "node-2", {"metadata": {"labels": {"sfc-k8s.io/nic": None}}})
    cluster.kube.request("DELETE", f"/api/v1/namespaces/{ns}")
