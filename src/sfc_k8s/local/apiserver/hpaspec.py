"""`autoscaling/v2` HorizontalPodAutoscaler objects: admission, typed reading, kubectl columns.

The store calls `admit_hpa()` on every create and update (defaults as the real API server sets
them, then Kubernetes' validation rules with its messages); the HPA controller reads specs
through `read_spec()`; `tables.py` prints `kubectl get hpa` rows with `hpa_cells()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sfc_k8s.local.apiserver import hpaconvert
from sfc_k8s.local.apiserver.errors import Cause
from sfc_k8s.local.apiserver.hpa import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    PolicyType,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
)
from sfc_k8s.local.apiserver.quantity import QuantityError, format_milli, parse_milli

METRIC_TYPES = ("ContainerResource", "External", "Object", "Pods", "Resource")
TARGET_TYPES = ("AverageValue", "Utilization", "Value")
MAX_STABILIZATION_SECONDS = 3600
MAX_PERIOD_SECONDS = 1800
SOURCE_FIELD = {
    "Object": "object",
    "Pods": "pods",
    "Resource": "resource",
    "ContainerResource": "containerResource",
    "External": "external",
}


def _required(path: str, detail: str = "") -> Cause:
    return Cause(
        path, "FieldValueRequired", f"Required value: {detail}" if detail else "Required value"
    )


def _invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause(path, "FieldValueInvalid", f"Invalid value: {value!r}: {detail}")


def _unsupported(path: str, value: Any, allowed: tuple[str, ...]) -> Cause:
    listed = ", ".join(f'"{a}"' for a in allowed)
    return Cause(
        path, "FieldValueNotSupported", f'Unsupported value: "{value}": supported values: {listed}'
    )


# ----- defaults ----------------------------------------------------------------------------------


def rules_object(rules: ScalingRules) -> dict[str, Any]:
    """`ScalingRules` as the API writes them."""
    return {
        "stabilizationWindowSeconds": rules.stabilization_window_seconds,
        "selectPolicy": str(rules.select_policy),
        "policies": [
            {"type": str(p.type), "value": p.value, "periodSeconds": p.period_seconds}
            for p in rules.policies
        ],
    }


def _default(spec: dict[str, Any]) -> None:
    """What the API server fills in: minReplicas 1, a CPU 80 % metric when none is given, and
    every missing part of a given `behavior`."""
    spec.setdefault("minReplicas", 1)
    if not spec.get("metrics"):
        spec["metrics"] = [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80},
                },
            }
        ]
    behavior = spec.get("behavior")
    if not isinstance(behavior, dict):
        return
    for direction, defaults in (("scaleUp", DEFAULT_SCALE_UP), ("scaleDown", DEFAULT_SCALE_DOWN)):
        rules = behavior.get(direction)
        if not isinstance(rules, dict):
            behavior[direction] = rules_object(defaults)
            continue
        for key, value in rules_object(defaults).items():
            rules.setdefault(key, value)


# ----- validation --------------------------------------------------------------------------------


def _check_quantities(path: str, target: dict[str, Any]) -> list[Cause]:
    causes = []
    for key in ("value", "averageValue"):
        if key not in target:
            continue
        try:
            positive = parse_milli(target[key]) > 0
        except QuantityError as err:
            causes.append(_invalid(f"{path}.target.{key}", target[key], str(err)))
            continue
        if not positive:
            causes.append(_invalid(f"{path}.target.{key}", target[key], "must be positive"))
            continue
        # stored in canonical form, as the real server's Quantity type writes it back
        target[key] = format_milli(parse_milli(target[key]))
    return causes


def _check_target(path: str, target: Any, *, needs: str) -> list[Cause]:
    if not isinstance(target, dict):
        return [_required(f"{path}.target", "must specify a metric target")]
    causes = []
    kind = target.get("type")
    if not kind:
        causes.append(_required(f"{path}.target.type", "must specify a metric target type"))
    elif kind not in TARGET_TYPES:
        causes.append(_unsupported(f"{path}.target.type", kind, TARGET_TYPES))
    causes.extend(_check_quantities(path, target))
    if needs == "averageValue" and "averageValue" not in target:
        causes.append(
            _required(f"{path}.target.averageValue", "must specify a positive target averageValue")
        )
    if needs == "either" and "value" not in target and "averageValue" not in target:
        causes.append(
            _required(
                f"{path}.target.averageValue", "must set either a target value or averageValue"
            )
        )
    return causes


def _check_metric_name(path: str, source: dict[str, Any]) -> list[Cause]:
    metric = source.get("metric")
    if not isinstance(metric, dict) or not metric.get("name"):
        return [_required(f"{path}.metric.name", "must specify a metric name")]
    return []


def _check_source(path: str, kind: str, source: dict[str, Any]) -> list[Cause]:
    target = source.get("target")
    if kind == "Pods":
        return _check_metric_name(path, source) + _check_target(path, target, needs="averageValue")
    if kind in ("Object", "External"):
        causes = _check_metric_name(path, source)
        if kind == "Object":
            described = source.get("describedObject")
            described = described if isinstance(described, dict) else {}
            causes += [
                _required(f"{path}.describedObject.{key}")
                for key in ("kind", "name")
                if not described.get(key)
            ]
        return causes + _check_target(path, target, needs="either")
    if not source.get("name"):
        return [_required(f"{path}.name", "must specify a resource name")]
    return _check_target(path, target, needs="")


def _check_metric(index: int, metric: Any) -> list[Cause]:
    path = f"spec.metrics[{index}]"
    if not isinstance(metric, dict):
        return [_invalid(path, metric, "must be an object")]
    kind = metric.get("type")
    if not kind:
        return [_required(f"{path}.type", "must specify a metric source type")]
    if kind not in METRIC_TYPES:
        return [_unsupported(f"{path}.type", kind, METRIC_TYPES)]
    expected = SOURCE_FIELD[kind]
    causes = [
        Cause(
            f"{path}.{name}",
            "FieldValueForbidden",
            "Forbidden: must populate the given metric source only",
        )
        for name in SOURCE_FIELD.values()
        if name != expected and name in metric
    ]
    source = metric.get(expected)
    if not isinstance(source, dict):
        causes.append(
            _required(f"{path}.{expected}", "must populate information for the given metric source")
        )
        return causes
    return causes + _check_source(f"{path}.{expected}", kind, source)


def _check_policy(where: str, policy: Any) -> list[Cause]:
    if not isinstance(policy, dict) or policy.get("type") not in tuple(PolicyType):
        kind = policy.get("type") if isinstance(policy, dict) else policy
        return [_unsupported(f"{where}.type", kind, tuple(PolicyType))]
    causes = []
    value, period = policy.get("value"), policy.get("periodSeconds")
    if not isinstance(value, int) or value <= 0:
        causes.append(_invalid(f"{where}.value", value, "must be greater than zero"))
    if not isinstance(period, int) or not 0 < period <= MAX_PERIOD_SECONDS:
        causes.append(
            _invalid(
                f"{where}.periodSeconds",
                period,
                f"must be greater than zero and less than or equal to {MAX_PERIOD_SECONDS}",
            )
        )
    return causes


def _check_rules(path: str, rules: dict[str, Any]) -> list[Cause]:
    causes = []
    window = rules.get("stabilizationWindowSeconds")
    if not isinstance(window, int) or not 0 <= window <= MAX_STABILIZATION_SECONDS:
        causes.append(
            _invalid(
                f"{path}.stabilizationWindowSeconds",
                window,
                f"must be between 0 and {MAX_STABILIZATION_SECONDS}",
            )
        )
    select = rules.get("selectPolicy")
    if select not in tuple(SelectPolicy):
        causes.append(_unsupported(f"{path}.selectPolicy", select, tuple(SelectPolicy)))
    policies = rules.get("policies")
    if not isinstance(policies, list) or not policies:
        causes.append(_required(f"{path}.policies", "must specify at least one Policy"))
        return causes
    for i, policy in enumerate(policies):
        causes.extend(_check_policy(f"{path}.policies[{i}]", policy))
    return causes


def _check_bounds(spec: dict[str, Any]) -> list[Cause]:
    low, high = spec.get("minReplicas"), spec.get("maxReplicas")
    causes = []
    if not isinstance(low, int) or low < 1:
        causes.append(_invalid("spec.minReplicas", low, "must be greater than or equal to 1"))
    if high is None:
        causes.append(_required("spec.maxReplicas"))
    elif not isinstance(high, int) or high < 1:
        causes.append(_invalid("spec.maxReplicas", high, "must be greater than 0"))
    elif isinstance(low, int) and low > high:
        causes.append(
            _invalid("spec.maxReplicas", high, "must be greater than or equal to `minReplicas`")
        )
    return causes


def admit_hpa(hpa: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    """Default and validate an HPA as the real API server does; the causes of a refusal."""
    spec = hpa.setdefault("spec", {})
    if not isinstance(spec, dict):
        return [_invalid("spec", spec, "must be an object")]
    _default(spec)
    causes = _check_bounds(spec)
    ref = spec.get("scaleTargetRef")
    ref = ref if isinstance(ref, dict) else {}
    causes += [
        _required(f"spec.scaleTargetRef.{key}") for key in ("kind", "name") if not ref.get(key)
    ]
    for index, metric in enumerate(spec["metrics"]):
        causes.extend(_check_metric(index, metric))
    behavior = spec.get("behavior")
    if isinstance(behavior, dict):
        for direction in ("scaleUp", "scaleDown"):
            causes.extend(_check_rules(f"spec.behavior.{direction}", behavior[direction]))
    return causes


# ----- typed reading, for the controller ---------------------------------------------------------


@dataclass(frozen=True)
class MetricTarget:
    """One metric of an HPA, as the controller acts on it."""

    type: str  # "Pods", "Object", "Resource", ...
    name: str  # the metric's name (the resource's for Resource metrics)
    target_type: str  # "AverageValue", "Value" or "Utilization"
    target: int  # thousandths; a percentage for Utilization
    selector: dict[str, Any] | None = None
    described: dict[str, Any] | None = None  # an Object metric's describedObject


@dataclass(frozen=True)
class HPASpec:
    target_api_version: str
    target_kind: str
    target_name: str
    min_replicas: int
    max_replicas: int
    metrics: tuple[MetricTarget, ...]
    scale_up: ScalingRules
    scale_down: ScalingRules


def _read_rules(rules: Any, default: ScalingRules) -> ScalingRules:
    if not isinstance(rules, dict):
        return default
    return ScalingRules(
        int(rules.get("stabilizationWindowSeconds", default.stabilization_window_seconds)),
        SelectPolicy(rules.get("selectPolicy", default.select_policy)),
        tuple(
            ScalingPolicy(PolicyType(p["type"]), int(p["value"]), int(p["periodSeconds"]))
            for p in rules.get("policies") or ()
        ),
    )


def _read_metric(metric: dict[str, Any]) -> MetricTarget:
    kind = metric["type"]
    source = metric[SOURCE_FIELD[kind]]
    target = source.get("target") or {}
    target_type = target.get("type", "")
    if target_type == "Utilization":
        amount = int(target.get("averageUtilization", 0))
    else:
        key = "value" if target_type == "Value" and "value" in target else "averageValue"
        target_type = "Value" if key == "value" else "AverageValue"
        amount = parse_milli(target.get(key, 0))
    described = source.get("describedObject")
    inner = source.get("metric") or {}
    return MetricTarget(
        type=kind,
        name=inner.get("name") or source.get("name", ""),
        target_type=target_type,
        target=amount,
        selector=inner.get("selector"),
        described=described if isinstance(described, dict) else None,
    )


def read_spec(hpa: dict[str, Any]) -> HPASpec:
    """The typed spec of an admitted HPA (behaviour defaults when it has none)."""
    spec = hpa["spec"]
    ref = spec["scaleTargetRef"]
    behavior = spec.get("behavior") or {}
    return HPASpec(
        target_api_version=ref.get("apiVersion", "apps/v1"),
        target_kind=ref["kind"],
        target_name=ref["name"],
        min_replicas=int(spec.get("minReplicas", 1)),
        max_replicas=int(spec["maxReplicas"]),
        metrics=tuple(_read_metric(m) for m in spec.get("metrics") or ()),
        scale_up=_read_rules(behavior.get("scaleUp"), DEFAULT_SCALE_UP),
        scale_down=_read_rules(behavior.get("scaleDown"), DEFAULT_SCALE_DOWN),
    )


# ----- kubectl columns ---------------------------------------------------------------------------

MAX_LISTED_METRICS = 4  # kubectl lists four targets, then "+ N more..."


def _quantity(value: Any) -> str:
    try:
        return format_milli(parse_milli(value))
    except QuantityError:
        return str(value)


def _current_of(status_metric: Any, kind: str) -> dict[str, Any]:
    if not isinstance(status_metric, dict) or status_metric.get("type") != kind:
        return {}
    source = status_metric.get(SOURCE_FIELD.get(kind, "")) or {}
    current = source.get("current")
    return current if isinstance(current, dict) else {}


def _target_text(metric: dict[str, Any], status_metric: Any) -> str:
    kind = metric.get("type", "")
    source = metric.get(SOURCE_FIELD.get(kind, "")) or {}
    target = source.get("target") or {}
    current = _current_of(status_metric, kind)
    if "averageUtilization" in target:
        now = current.get("averageUtilization")
        shown = f"{now}%" if now is not None else "<unknown>"
        return f"{source.get('name', '')}: {shown}/{target['averageUtilization']}%"
    by_value = kind in ("Object", "External") and "value" in target
    key = "value" if by_value else "averageValue"
    now_text = _quantity(current[key]) if key in current else "<unknown>"
    text = f"{now_text}/{_quantity(target.get(key, '0'))}"
    if kind in ("Object", "External") and not by_value:
        text += " (avg)"
    return text


def targets_text(hpa: dict[str, Any]) -> str:
    """The TARGETS column: `current/target` per metric, `<unknown>` until measured."""
    metrics = (hpa.get("spec") or {}).get("metrics") or []
    if not metrics:
        return "<none>"
    current = (hpa.get("status") or {}).get("currentMetrics") or []
    texts = [
        _target_text(m, current[i] if i < len(current) else None) for i, m in enumerate(metrics)
    ]
    if len(texts) > MAX_LISTED_METRICS:
        more = len(texts) - MAX_LISTED_METRICS
        return ", ".join(texts[:MAX_LISTED_METRICS]) + f" + {more} more..."
    return ", ".join(texts)


def hpa_cells(hpa: dict[str, Any], created: str) -> list[Any]:
    """NAME, REFERENCE, TARGETS, MINPODS, MAXPODS, REPLICAS, AGE (of a v1 view too)."""
    if hpa.get("apiVersion") == hpaconvert.V1:
        hpa = hpaconvert.from_v1(hpa)
    spec, status = hpa.get("spec") or {}, hpa.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    return [
        (hpa.get("metadata") or {}).get("name", ""),
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        targets_text(hpa),
        spec.get("minReplicas", "<unset>"),
        spec.get("maxReplicas", 0),
        status.get("currentReplicas", 0),
        created,
    ]
