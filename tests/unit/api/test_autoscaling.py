"""A function's ``autoscaling`` block: admission, parsing, workload, the HPA and its status.

Covers: valid blocks admitted by the CRD schema (minimal, and with behavior and workload) and
parsed (minReplicas defaulting to 1); min > max and an unknown metric refused at admission with
a clear message, and by the parser naming the field; the rendered HPA (name, labels, the chain
as controlling owner, scale target, the Pods metric under the custom metrics API's name, the
per-replica target, min/max, the NF default behavior or the function's own); the workload
found from the pods' controller owners (a ReplicaSet's Deployment, a StatefulSet), named
explicitly, or a problem saying what to fix (no pods, several workloads, a bare ReplicaSet);
the status view of an HPA (replicas, conditions) and of a missing one.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from sfc_k8s.api import ChainInvalid, parse_chain
from sfc_k8s.api.autoscaling import (
    DEFAULT_BEHAVIOR,
    hpa_status,
    render_hpa,
    workload_of,
)
from sfc_k8s.api.models import WorkloadRef
from tests.fixtures.chains import web_chain
from tests.unit.deploy.schemas import admit, load_crd

SFC = load_crd("servicefunctionchains.yaml")


def chain_with(autoscaling: dict[str, Any]) -> dict[str, Any]:
    body = web_chain()
    body["spec"]["functions"][1]["autoscaling"] = autoscaling
    return body


BASIC = {"maxReplicas": 8, "metric": "packetsPerSecond", "targetAverageValue": "100k"}


def test_valid_blocks_are_admitted_and_parsed() -> None:
    assert admit(SFC, chain_with(BASIC)) == []
    firewall = parse_chain(chain_with(BASIC)).function("firewall")
    assert firewall.autoscaling is not None
    assert (firewall.autoscaling.min_replicas, firewall.autoscaling.max_replicas) == (1, 8)
    full = {
        **BASIC,
        "minReplicas": 2,
        "metric": "sessions",
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
        "workload": {"kind": "StatefulSet", "name": "fw"},
    }
    assert admit(SFC, chain_with(full)) == []
    spec = parse_chain(chain_with(full)).function("firewall").autoscaling
    assert spec is not None
    assert spec.workload == WorkloadRef("StatefulSet", "fw")
    assert parse_chain(web_chain()).function("firewall").autoscaling is None


@pytest.mark.parametrize(
    ("change", "admission", "parser"),
    [
        (
            {"minReplicas": 9},
            "minReplicas must not exceed maxReplicas",
            "spec.functions[1].autoscaling: minReplicas (9) must not exceed maxReplicas (8)",
        ),
        (
            {"metric": "jitter"},
            "'jitter' is not one of ['packetsPerSecond', 'bitsPerSecond', 'sessions']",
            "spec.functions[1].autoscaling.metric: 'jitter' is not one of packetsPerSecond,"
            " bitsPerSecond, sessions",
        ),
        (
            {"workload": {"kind": "DaemonSet", "name": "fw"}},
            "'DaemonSet' is not one of ['Deployment', 'StatefulSet']",
            "spec.functions[1].autoscaling.workload.kind: 'DaemonSet' is not Deployment or"
            " StatefulSet",
        ),
    ],
)
def test_invalid_blocks_are_refused(change: dict[str, Any], admission: str, parser: str) -> None:
    body = chain_with({**BASIC, **change})
    assert any(admission in r for r in admit(SFC, copy.deepcopy(body))), admit(SFC, body)
    with pytest.raises(ChainInvalid) as refused:
        parse_chain(body)
    assert parser in str(refused.value)


def test_rendered_hpa() -> None:
    chain = parse_chain(chain_with({**BASIC, "minReplicas": 2}))
    firewall = chain.function("firewall")
    assert firewall.autoscaling is not None
    hpa = render_hpa(chain, firewall, firewall.autoscaling, WorkloadRef("Deployment", "fw"))
    assert hpa["metadata"]["name"] == "web-firewall"
    assert hpa["metadata"]["labels"] == {
        "sfc-k8s.io/chain": "web",
        "sfc-k8s.io/function": "firewall",
    }
    (owner,) = hpa["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "ServiceFunctionChain",
        "web",
        "uid-web",
        True,
    )
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fw"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 8)
    assert spec["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "packets_per_second"},
                "target": {"type": "AverageValue", "averageValue": "100k"},
            },
        }
    ]
    assert spec["behavior"] == DEFAULT_BEHAVIOR
    assert DEFAULT_BEHAVIOR["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert DEFAULT_BEHAVIOR["scaleDown"]["stabilizationWindowSeconds"] == 300
    kubernetes_validate.validate(hpa, "1.32.0", strict=True)

    own = {"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 5}]}}
    chain = parse_chain(chain_with({**BASIC, "behavior": own, "metric": "bitsPerSecond"}))
    firewall = chain.function("firewall")
    assert firewall.autoscaling is not None
    hpa = render_hpa(chain, firewall, firewall.autoscaling, WorkloadRef("StatefulSet", "fw"))
    assert hpa["spec"]["behavior"] == own
    assert hpa["spec"]["metrics"][0]["pods"]["metric"] == {"name": "bits_per_second"}


def test_workload_from_owners() -> None:
    chain = parse_chain(chain_with(BASIC))
    fw = chain.function("firewall")
    rs = [("ReplicaSet", "fw-6d4f"), ("ReplicaSet", "fw-6d4f")]
    assert workload_of(fw, rs, {"fw-6d4f": "fw"}) == (WorkloadRef("Deployment", "fw"), "")
    sts = [("StatefulSet", "fw")]
    assert workload_of(fw, sts, {}) == (WorkloadRef("StatefulSet", "fw"), "")
    direct = [("Deployment", "fw")]  # the local cluster's Deployment controller owns its pods
    assert workload_of(fw, direct, {}) == (WorkloadRef("Deployment", "fw"), "")

    none, why = workload_of(fw, [], {})
    assert none is None
    assert why == (
        "function firewall: no pod selected yet to find its workload from; name it in"
        " autoscaling.workload"
    )
    two = [("ReplicaSet", "a-1"), ("StatefulSet", "b")]
    assert workload_of(fw, two, {"a-1": "a"})[1] == (
        "function firewall: its pods belong to several workloads (Deployment/a,"
        " StatefulSet/b); name one in autoscaling.workload"
    )
    assert (
        "belong to ReplicaSet/bare, not a Deployment or StatefulSet"
        in (workload_of(fw, [("ReplicaSet", "bare")], {})[1])
    )
    named = parse_chain(chain_with({**BASIC, "workload": {"name": "fw2"}})).function("firewall")
    assert workload_of(named, two, {}) == (WorkloadRef("Deployment", "fw2"), "")


def test_status_view() -> None:
    hpa = {
        "status": {
            "currentReplicas": 2,
            "desiredReplicas": 3,
            "conditions": [
                {"type": "AbleToScale", "status": "True", "reason": "SucceededRescale"},
                {
                    "type": "ScalingActive",
                    "status": "True",
                    "reason": "ValidMetricFound",
                    "message": "the HPA was able to compute a replica count",
                    "lastTransitionTime": "2026-12-03T20:00:00Z",
                },
            ],
        }
    }
    assert hpa_status(hpa, "web-firewall") == {
        "horizontalPodAutoscaler": "web-firewall",
        "currentReplicas": 2,
        "desiredReplicas": 3,
        "conditions": [
            {"type": "AbleToScale", "status": "True", "reason": "SucceededRescale"},
            {
                "type": "ScalingActive",
                "status": "True",
                "reason": "ValidMetricFound",
                "message": "the HPA was able to compute a replica count",
            },
        ],
    }
    assert hpa_status(None, "web-firewall", "why") == {
        "horizontalPodAutoscaler": "web-firewall",
        "message": "why",
    }
