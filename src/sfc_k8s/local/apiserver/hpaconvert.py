"""``autoscaling/v1`` HorizontalPodAutoscalers: a view of the ``autoscaling/v2`` objects.

As in Kubernetes, HPAs are stored once (here in ``v2``) and served in both versions, so that
``kubectl autoscale deployment X --cpu-percent=50 --min 1 --max 3`` (which posts ``v1``) makes
an HPA that every ``v2`` client sees, and the reverse. ``v1`` can only say "this CPU
utilization"; what it cannot say travels in annotations of the ``v1`` object, as Kubernetes
does, so that reading in ``v1`` and writing the object back loses nothing:

- ``autoscaling.alpha.kubernetes.io/metrics``: the spec's metrics other than a CPU
  ``Utilization`` target (JSON list);
- ``autoscaling.alpha.kubernetes.io/behavior``: ``spec.behavior``;
- ``autoscaling.alpha.kubernetes.io/current-metrics`` and ``.../conditions``: the status's
  other current metrics and its conditions.

One difference: Kubernetes writes the metric lists there in the older ``v2beta1`` shapes; here
they are in the ``v2`` shapes (the only ones this server reads back).
``to_v1``/``from_v1`` are pure; the store calls them (``store.CONVERSIONS``) when an object is
read or written through ``autoscaling/v1``. Unit tests: tests/unit/local/test_hpa_convert.py.
"""

from __future__ import annotations

import copy
import json
from typing import Any

Obj = dict[str, Any]

METRICS = "autoscaling.alpha.kubernetes.io/metrics"
BEHAVIOR = "autoscaling.alpha.kubernetes.io/behavior"
CURRENT_METRICS = "autoscaling.alpha.kubernetes.io/current-metrics"
CONDITIONS = "autoscaling.alpha.kubernetes.io/conditions"
ANNOTATIONS = (METRICS, BEHAVIOR, CURRENT_METRICS, CONDITIONS)
V1, V2 = "autoscaling/v1", "autoscaling/v2"


class ConversionError(ValueError):
    """An annotation of a v1 object does not hold what it should (bad JSON)."""


def _cpu_utilization(metric: Any, part: str) -> int | None:
    """The CPU utilization of a Resource metric's ``target``/``current``, else None."""
    if not isinstance(metric, dict) or metric.get("type") != "Resource":
        return None
    resource = metric.get("resource") or {}
    value = (resource.get(part) or {}).get("averageUtilization")
    if resource.get("name") != "cpu" or value is None:
        return None
    if part == "target" and (resource.get("target") or {}).get("type") != "Utilization":
        return None
    return int(value)


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def to_v1(hpa: Obj) -> Obj:
    """The ``autoscaling/v1`` view of a stored ``v2`` HPA (pure)."""
    v2_spec, v2_status = hpa.get("spec") or {}, hpa.get("status")
    meta = copy.deepcopy(hpa.get("metadata") or {})
    annotations = dict(meta.get("annotations") or {})
    spec: Obj = {
        key: copy.deepcopy(v2_spec[key])
        for key in ("scaleTargetRef", "minReplicas", "maxReplicas")
        if key in v2_spec
    }
    others = []
    for metric in v2_spec.get("metrics") or []:
        cpu = _cpu_utilization(metric, "target")
        if cpu is not None and "targetCPUUtilizationPercentage" not in spec:
            spec["targetCPUUtilizationPercentage"] = cpu
        else:
            others.append(metric)
    if others:
        annotations[METRICS] = _dump(others)
    if v2_spec.get("behavior"):
        annotations[BEHAVIOR] = _dump(v2_spec["behavior"])
    out: Obj = {"apiVersion": V1, "kind": hpa.get("kind", "HorizontalPodAutoscaler")}
    if isinstance(v2_status, dict):
        out["status"] = _status_to_v1(v2_status, annotations)
    if annotations:
        meta["annotations"] = annotations
    out["metadata"] = meta
    out["spec"] = spec
    return out


def _status_to_v1(v2_status: Obj, annotations: dict[str, str]) -> Obj:
    status: Obj = {
        key: v2_status[key]
        for key in ("observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas")
        if v2_status.get(key) is not None
    }
    status.setdefault("currentReplicas", 0)
    status.setdefault("desiredReplicas", 0)
    others = []
    for metric in v2_status.get("currentMetrics") or []:
        cpu = _cpu_utilization(metric, "current")
        if cpu is not None and "currentCPUUtilizationPercentage" not in status:
            status["currentCPUUtilizationPercentage"] = cpu
        else:
            others.append(metric)
    if others:
        annotations[CURRENT_METRICS] = _dump(others)
    if v2_status.get("conditions"):
        annotations[CONDITIONS] = _dump(v2_status["conditions"])
    return status


def _load(annotations: dict[str, str], key: str) -> Any:
    text = annotations.pop(key, None)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as err:
        raise ConversionError(f"metadata.annotations[{key}]: not JSON: {err}") from err


def _cpu_metric(part: str, value: int) -> Obj:
    inner: Obj = {"averageUtilization": value}
    if part == "target":
        inner["type"] = "Utilization"
    return {"type": "Resource", "resource": {"name": "cpu", part: inner}}


def from_v1(hpa: Obj) -> Obj:
    """The ``v2`` object a ``v1`` HPA stands for (pure): the CPU target as a Resource metric,
    after the annotations' other metrics (Kubernetes' order), the annotations consumed.
    Raises ``ConversionError`` for an annotation that is not JSON."""
    meta = copy.deepcopy(hpa.get("metadata") or {})
    annotations = dict(meta.get("annotations") or {})
    v1_spec = hpa.get("spec") or {}
    spec: Obj = {
        key: copy.deepcopy(v1_spec[key])
        for key in ("scaleTargetRef", "minReplicas", "maxReplicas")
        if key in v1_spec
    }
    metrics = list(_load(annotations, METRICS) or [])
    if v1_spec.get("targetCPUUtilizationPercentage") is not None:
        metrics.append(_cpu_metric("target", int(v1_spec["targetCPUUtilizationPercentage"])))
    if metrics:
        spec["metrics"] = metrics
    behavior = _load(annotations, BEHAVIOR)
    if behavior:
        spec["behavior"] = behavior
    current = list(_load(annotations, CURRENT_METRICS) or [])
    conditions = _load(annotations, CONDITIONS)
    out: Obj = {"apiVersion": V2, "kind": hpa.get("kind", "HorizontalPodAutoscaler")}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    out["metadata"] = meta
    out["spec"] = spec
    v1_status = hpa.get("status")
    if isinstance(v1_status, dict):
        status: Obj = {
            key: v1_status[key]
            for key in ("observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas")
            if v1_status.get(key) is not None
        }
        if v1_status.get("currentCPUUtilizationPercentage") is not None:
            cpu = int(v1_status["currentCPUUtilizationPercentage"])
            current.append(_cpu_metric("current", cpu))
        if current:
            status["currentMetrics"] = current
        if conditions:
            status["conditions"] = conditions
        out["status"] = status
    return out
