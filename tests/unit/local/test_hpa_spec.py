"""HPA objects (`local/apiserver/hpaspec.py`): admission defaults and checks, typed reading, the
TARGETS column.

Covers: the defaults the real API server sets (minReplicas 1, a CPU 80 % metric, every missing
part of a given `behavior`), canonical quantities, the checks and their field paths (a metric
source other than the type's is forbidden, an Object metric needs its described object, a
target quantity that is not one), `read_spec()` on defaults, and TARGETS as kubectl prints it
(`180k/100k`, `<unknown>`, Object `(avg)`, `+ N more...`).
"""

from __future__ import annotations

import copy
from typing import Any

from sfc_k8s.local.apiserver.hpa import DEFAULT_SCALE_DOWN, DEFAULT_SCALE_UP, PolicyType
from sfc_k8s.local.apiserver.hpaspec import admit_hpa, read_spec, targets_text

PODS_METRIC = {
    "type": "Pods",
    "pods": {
        "metric": {"name": "packets_per_second"},
        "target": {"type": "AverageValue", "averageValue": "100000"},
    },
}


def _hpa(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fw"},
        "maxReplicas": 5,
        "metrics": [copy.deepcopy(PODS_METRIC)],
    }
    body.update(spec)
    return {"metadata": {"name": "fw", "namespace": "default"}, "spec": body}


def _fields(hpa: dict[str, Any]) -> list[str]:
    return [c.field for c in admit_hpa(hpa, None)]


def test_defaults_are_those_of_the_api_server() -> None:
    hpa = _hpa(metrics=[], behavior={"scaleDown": {"stabilizationWindowSeconds": 60}})
    assert admit_hpa(hpa, None) == []
    spec = hpa["spec"]
    assert spec["minReplicas"] == 1
    assert spec["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 80,
    }
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 60
    assert spec["behavior"]["scaleDown"]["selectPolicy"] == "Max"
    assert spec["behavior"]["scaleUp"]["policies"] == [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15},
    ]


def test_target_quantities_are_stored_canonically() -> None:
    hpa = _hpa()
    admit_hpa(hpa, None)
    assert hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "100k"


def test_a_second_metric_source_is_forbidden() -> None:
    metric = copy.deepcopy(PODS_METRIC)
    metric["object"] = {}
    assert _fields(_hpa(metrics=[metric])) == ["spec.metrics[0].object"]


def test_an_object_metric_needs_its_object_and_a_target() -> None:
    metric = {"type": "Object", "object": {"metric": {"name": "rps"}, "target": {"type": "Value"}}}
    assert _fields(_hpa(metrics=[metric])) == [
        "spec.metrics[0].object.describedObject.kind",
        "spec.metrics[0].object.describedObject.name",
        "spec.metrics[0].object.target.averageValue",
    ]


def test_a_target_that_is_no_quantity_names_the_form() -> None:
    metric = copy.deepcopy(PODS_METRIC)
    metric["pods"]["target"]["averageValue"] = "lots"
    causes = admit_hpa(_hpa(metrics=[metric]), None)
    assert [c.field for c in causes] == ["spec.metrics[0].pods.target.averageValue"]
    assert "100k, 250m" in causes[0].message


def test_a_missing_target_ref_and_max_are_required() -> None:
    hpa = _hpa(scaleTargetRef={})
    del hpa["spec"]["maxReplicas"]
    assert _fields(hpa) == [
        "spec.maxReplicas",
        "spec.scaleTargetRef.kind",
        "spec.scaleTargetRef.name",
    ]


def test_read_spec_uses_the_default_behaviour_when_there_is_none() -> None:
    hpa = _hpa()
    admit_hpa(hpa, None)
    spec = read_spec(hpa)
    assert (spec.scale_up, spec.scale_down) == (DEFAULT_SCALE_UP, DEFAULT_SCALE_DOWN)
    assert spec.metrics[0].target == 100_000_000
    assert spec.metrics[0].target_type == "AverageValue"


def test_read_spec_reads_a_given_behaviour() -> None:
    behavior = {"scaleUp": {"policies": [{"type": "Percent", "value": 900, "periodSeconds": 60}]}}
    hpa = _hpa(behavior=behavior)
    admit_hpa(hpa, None)
    rules = read_spec(hpa).scale_up
    assert rules.policies[0].type is PolicyType.PERCENT
    assert (rules.policies[0].value, rules.stabilization_window_seconds) == (900, 0)


def test_targets_show_current_over_target() -> None:
    hpa = _hpa()
    admit_hpa(hpa, None)
    assert targets_text(hpa) == "<unknown>/100k"
    hpa["status"] = {
        "currentMetrics": [
            {
                "type": "Pods",
                "pods": {"metric": {"name": "p"}, "current": {"averageValue": "180000"}},
            }
        ]
    }
    assert targets_text(hpa) == "180k/100k"


def test_object_average_targets_are_marked_and_long_lists_cut() -> None:
    metric = {
        "type": "Object",
        "object": {
            "metric": {"name": "rps"},
            "describedObject": {"kind": "Service", "name": "web"},
            "target": {"type": "AverageValue", "averageValue": "50"},
        },
    }
    hpa = _hpa(metrics=[metric] + [copy.deepcopy(PODS_METRIC) for _ in range(5)])
    assert admit_hpa(hpa, None) == []
    text = targets_text(hpa)
    assert text.startswith("<unknown>/50 (avg), <unknown>/100k")
    assert text.endswith(" + 2 more...")
