"""The controller owns an HPA per chain function with ``autoscaling`` (Kopf for real, against
the local API server and its HPA controller; pods made Ready by the test, playing the kubelet).

Covers:
- a function with an ``autoscaling`` block whose pods belong to a Deployment -> an
  ``autoscaling/v2`` HPA ``<chain>-<function>`` targeting that Deployment, owned by the chain,
  with the custom metric and target; the chain status shows the HPA's current and desired
  replicas and its conditions (here ``ScalingActive=False, FailedGetPodsMetric``: no metrics
  provider runs in this test);
- a change of the block updates the HPA; removing it deletes the HPA, and so does deleting the
  chain (owner reference); the Deployment's replicas are never written by the controller;
- a function whose pods have no workload yet (none selected) reports what to fix in its status;
- invalid blocks (min > max, an unknown metric) are refused by the real kubectl at admission
  with the CRD's messages.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from sfc_k8s.operator.controller import Controller
from tests.fixtures.apiserver import LocalAPIServer, local_apiserver
from tests.fixtures.controller import (
    Cluster,
    chain_body,
    controller_config,
    eventually,
    running,
)

BLOCK = {"maxReplicas": 4, "metric": "packetsPerSecond", "targetAverageValue": "100k"}


@pytest.fixture
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAPIServer]:
    """The shared fixture's server (the controller's ``cluster`` stands on it), its HPA
    controller syncing every 0.2 s instead of 15 s: an HPA's conditions show at once."""
    with local_apiserver(tmp_path_factory.mktemp("apiserver"), hpa_sync_period=0.2) as server:
        yield server


def deployment(namespace: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "fw", "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "firewall"}},
                "template": {
                    "metadata": {"labels": {"app": "firewall"}},
                    "spec": {
                        "nodeName": "node-1",
                        "containers": [{"name": "fw", "image": "fw"}],
                    },
                },
            },
        }
    )


def autoscaled(block: dict[str, Any] | None) -> dict[str, Any]:
    body = chain_body()
    if block is not None:
        body["spec"]["functions"][1]["autoscaling"] = block
    return body


def hpa_path(cluster: Cluster, name: str = "web-firewall") -> str:
    return f"/apis/autoscaling/v2/namespaces/{cluster.ns}/horizontalpodautoscalers/{name}"


def replicas(cluster: Cluster) -> int:
    path = f"/apis/apps/v1/namespaces/{cluster.ns}/deployments/fw"
    return int(cluster.get(path)["spec"]["replicas"])


def set_block(cluster: Cluster, block: dict[str, Any] | None) -> None:
    chain = cluster.chain("web")
    functions = copy.deepcopy(chain["spec"]["functions"])
    functions[1].pop("autoscaling", None)
    if block is not None:
        functions[1]["autoscaling"] = block
    cluster.merge(cluster.chain_path("web"), {"spec": {"functions": functions}})


def test_controller_owns_the_functions_hpa(cluster: Cluster) -> None:
    cluster.ensure_node("node-1")
    cluster.apiserver.kubectl("apply", "-f", "-", input=deployment(cluster.ns), check=True)
    (pod,) = eventually(lambda: cluster.get(cluster.pod_path())["items"])
    cluster.set_ready(pod["metadata"]["name"], True)
    cluster.create_pod("client-0", "client")
    cluster.create_chain(autoscaled(BLOCK))
    with running(Controller(controller_config(cluster.apiserver, cluster.ns))):
        hpa = eventually(lambda: cluster.find(hpa_path(cluster)))
        chain = cluster.chain("web")
        (owner,) = hpa["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("ServiceFunctionChain", chain["metadata"]["uid"])
        spec = hpa["spec"]
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "fw",
        }
        assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 4)
        assert spec["metrics"][0]["pods"]["metric"]["name"] == "packets_per_second"
        assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300

        def reported() -> dict[str, Any]:
            view = cluster.chain("web")["status"]["functions"]["firewall"]["autoscaling"]
            kinds = {c["type"]: (c["status"], c.get("reason")) for c in view["conditions"]}
            assert kinds["ScalingActive"] == ("False", "FailedGetPodsMetric"), view
            return dict(view)

        view = eventually(reported, timeout=30)
        assert view["horizontalPodAutoscaler"] == "web-firewall"
        assert view["currentReplicas"] == 1

        set_block(cluster, {**BLOCK, "maxReplicas": 6})
        eventually(lambda: cluster.get(hpa_path(cluster))["spec"]["maxReplicas"] == 6)
        set_block(cluster, None)
        eventually(lambda: cluster.find(hpa_path(cluster)) is None)
        eventually(
            lambda: "autoscaling" not in cluster.chain("web")["status"]["functions"]["firewall"]
        )
        assert replicas(cluster) == 1

        set_block(cluster, BLOCK)  # back, then the chain deleted: the HPA goes with it
        eventually(lambda: cluster.find(hpa_path(cluster)))
        cluster.request("DELETE", cluster.chain_path("web"))
        eventually(lambda: cluster.find(hpa_path(cluster)) is None)
        assert replicas(cluster) == 1


def test_no_workload_to_find_is_reported(cluster: Cluster) -> None:
    cluster.create_pod("client-0", "client")
    cluster.create_chain(autoscaled(BLOCK))
    with running(Controller(controller_config(cluster.apiserver, cluster.ns))):

        def reported() -> str:
            view = cluster.chain("web")["status"]["functions"]["firewall"]["autoscaling"]
            return str(view["message"])

        assert eventually(reported) == (
            "function firewall: no pod selected yet to find its workload from; name it in"
            " autoscaling.workload"
        )
        assert cluster.find(hpa_path(cluster)) is None


def test_invalid_blocks_refused_at_admission(cluster: Cluster) -> None:
    for block, message in (
        ({**BLOCK, "minReplicas": 5}, "minReplicas must not exceed maxReplicas"),
        ({**BLOCK, "metric": "jitter"}, 'Unsupported value: "jitter"'),
    ):
        body = autoscaled(block)
        body["metadata"]["namespace"] = cluster.ns
        result = cluster.apiserver.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
        assert result.returncode != 0
        assert message in result.stderr, result.stderr
