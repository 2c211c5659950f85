"""``autoscaling/v1`` HPAs as a view of the stored ``autoscaling/v2`` objects (hpaconvert.py).

Covers, as Kubernetes converts: a v1 CPU target becomes a v2 ``Resource`` ``Utilization``
metric (after the annotation's other metrics); a v2 HPA with a Pods metric, a CPU target,
behavior and a status reads in v1 as the CPU fields plus the
``autoscaling.alpha.kubernetes.io/*`` annotations, and converts back to the same v2 object;
a broken annotation is refused with its name. Through the store: an HPA created in v1 is read
in v2 (min defaulted, the CPU metric), one created in v2 with a custom metric and behavior
survives a merge patch made through v1 (the v1 view loses nothing), and a v1 list
shows the v1 shape; an annotation that is not JSON is a 400.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from sfc_k8s.local.apiserver import StatusError, Store
from sfc_k8s.local.apiserver.hpaconvert import (
    BEHAVIOR,
    CONDITIONS,
    CURRENT_METRICS,
    METRICS,
    ConversionError,
    from_v1,
    to_v1,
)
from sfc_k8s.local.apiserver.store import PATCH_MERGE

REF = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fw"}
PODS_METRIC = {
    "type": "Pods",
    "pods": {
        "metric": {"name": "packets_per_second"},
        "target": {"type": "AverageValue", "averageValue": "100k"},
    },
}
CPU_TARGET = {
    "type": "Resource",
    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
}
BEHAVIOR_SPEC = {
    "scaleDown": {
        "stabilizationWindowSeconds": 30,
        "selectPolicy": "Max",
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
    }
}
CONDITION = {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"}


def v2_hpa() -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "fw", "namespace": "default", "annotations": {"team": "nf"}},
        "spec": {
            "scaleTargetRef": REF,
            "minReplicas": 1,
            "maxReplicas": 5,
            "metrics": [PODS_METRIC, CPU_TARGET],
            "behavior": BEHAVIOR_SPEC,
        },
        "status": {
            "currentReplicas": 2,
            "desiredReplicas": 3,
            "currentMetrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "packets_per_second"},
                        "current": {"averageValue": "180k"},
                    },
                },
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "current": {"averageUtilization": 7}},
                },
            ],
            "conditions": [CONDITION],
        },
    }


def test_v1_cpu_target_becomes_a_v2_utilization_metric() -> None:
    v1 = {
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "fw"},
        "spec": {"scaleTargetRef": REF, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
    }
    v2 = from_v1(v1)
    assert v2["apiVersion"] == "autoscaling/v2"
    assert v2["spec"] == {"scaleTargetRef": REF, "maxReplicas": 3, "metrics": [CPU_TARGET]}
    assert "annotations" not in v2["metadata"]


def test_v2_reads_in_v1_with_annotations_and_converts_back_unchanged() -> None:
    v1 = to_v1(v2_hpa())
    assert v1["apiVersion"] == "autoscaling/v1"
    assert v1["spec"] == {
        "scaleTargetRef": REF,
        "minReplicas": 1,
        "maxReplicas": 5,
        "targetCPUUtilizationPercentage": 50,
    }
    assert v1["status"] == {
        "currentReplicas": 2,
        "desiredReplicas": 3,
        "currentCPUUtilizationPercentage": 7,
    }
    notes = v1["metadata"]["annotations"]
    assert notes["team"] == "nf"
    assert json.loads(notes[METRICS]) == [PODS_METRIC]
    assert json.loads(notes[BEHAVIOR]) == BEHAVIOR_SPEC
    assert json.loads(notes[CONDITIONS]) == [CONDITION]
    assert json.loads(notes[CURRENT_METRICS])[0]["pods"]["current"] == {"averageValue": "180k"}
    assert from_v1(v1) == v2_hpa()


def test_a_broken_annotation_is_refused_by_name() -> None:
    v1 = to_v1(v2_hpa())
    v1["metadata"]["annotations"][BEHAVIOR] = "{not json"
    with pytest.raises(ConversionError, match=re.escape(BEHAVIOR)):
        from_v1(v1)


def test_through_the_store_v1_and_v2_are_one_object() -> None:
    store = Store()
    v1_type = store.resource("autoscaling", "v1", "horizontalpodautoscalers")
    v2_type = store.resource("autoscaling", "v2", "horizontalpodautoscalers")
    made = store.create(
        v1_type,
        "default",
        {
            "apiVersion": "autoscaling/v1",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "cpu"},
            "spec": {"scaleTargetRef": REF, "maxReplicas": 3, "targetCPUUtilizationPercentage": 60},
        },
    )
    assert made["apiVersion"] == "autoscaling/v1" and made["spec"]["minReplicas"] == 1
    seen = store.get(v2_type, "default", "cpu")
    assert seen["apiVersion"] == "autoscaling/v2"
    assert seen["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60

    body = v2_hpa()
    del body["status"]
    store.create(v2_type, "default", body)
    patched = store.patch(v1_type, "default", "fw", PATCH_MERGE, {"spec": {"maxReplicas": 9}})
    assert patched["spec"]["maxReplicas"] == 9 and BEHAVIOR in patched["metadata"]["annotations"]
    after = store.get(v2_type, "default", "fw")
    assert after["spec"]["maxReplicas"] == 9
    assert after["spec"]["metrics"] == [PODS_METRIC, CPU_TARGET]
    assert after["spec"]["behavior"]["scaleDown"] == {**BEHAVIOR_SPEC["scaleDown"]}
    assert after["metadata"]["annotations"] == {"team": "nf"}
    listed, _ = store.list_objects(v1_type, "default")
    assert {o["apiVersion"] for o in listed} == {"autoscaling/v1"}

    broken = {"metadata": {"name": "bad", "annotations": {METRICS: "["}}, "spec": {}}
    with pytest.raises(StatusError) as refused:
        store.create(v1_type, "default", {**broken, "apiVersion": "autoscaling/v1"})
    assert refused.value.code == 400 and METRICS in str(refused.value)
