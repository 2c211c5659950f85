"""A function's ``autoscaling`` block: parsing, its HorizontalPodAutoscaler, and its status.

The controller (``sfc_k8s.operator.autoscalers``) owns one ``autoscaling/v2`` HPA per function
that carries an ``autoscaling`` block; everything it decides is here, pure:

- ``parse_autoscaling``: the block -> ``AutoscalingSpec`` (the CRD's schema and CEL rules refuse
  the same mistakes at admission; this is the controller's own check of what it reads);
- ``workload_of``: which Deployment or StatefulSet the function's pods belong to, from their
  controller owners (a ReplicaSet's owning Deployment given by the caller), or a problem saying
  why none can be chosen;
- ``render_hpa``: the HPA body: a ``Pods`` metric of the custom metrics API
  (``sfc_k8s.api.custom_metrics``) with the per-replica target, min/max, the function's
  ``behavior`` or the NF defaults, labels naming the chain and function, and the chain as its
  controlling owner (garbage-collected with it);
- ``hpa_status``: what the chain's status shows of it: current/desired replicas and its
  conditions.

The controller never writes ``replicas``: the HPA does, through the scale subresource.

NF defaults (``DEFAULT_BEHAVIOR``): scale up at once (no stabilization; double, or add 4 pods,
every 15 s, whichever is more), scale down slowly (a 300 s stabilization window, then one pod a
minute): an NF that runs short of capacity drops packets at once, while an extra replica costs
only resources, and every scale-in drains flows (give the pods a termination grace period at
least the chain's ``drainTimeoutSeconds``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sfc_k8s.api.custom_metrics import BITS_PER_SECOND, PACKETS_PER_SECOND, SESSIONS
from sfc_k8s.api.models import (
    CHAIN_LABEL,
    AutoscalingSpec,
    ChainSpec,
    FunctionSpec,
    WorkloadRef,
)

FUNCTION_LABEL = "sfc-k8s.io/function"
METRICS: Mapping[str, str] = {
    "packetsPerSecond": PACKETS_PER_SECOND,
    "bitsPerSecond": BITS_PER_SECOND,
    "sessions": SESSIONS,
}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
MAX_REPLICAS = 1000
DEFAULT_BEHAVIOR: Mapping[str, Any] = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15},
            {"type": "Pods", "value": 4, "periodSeconds": 15},
        ],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 300,
        "selectPolicy": "Max",
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
    },
}


def _int(raw: Mapping[str, Any], key: str, at: str, problems: list[str], default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REPLICAS:
        problems.append(f"{at}.{key}: expected a whole number from 1 to {MAX_REPLICAS}")
        return default
    return value


def _workload(raw: object, at: str, problems: list[str]) -> WorkloadRef | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not raw.get("name"):
        problems.append(f"{at}.workload: expected {{kind: Deployment|StatefulSet, name: NAME}}")
        return None
    kind = str(raw.get("kind") or "Deployment")
    if kind not in WORKLOAD_KINDS:
        problems.append(f"{at}.workload.kind: {kind!r} is not Deployment or StatefulSet")
        return None
    return WorkloadRef(kind, str(raw["name"]))


def parse_autoscaling(raw: object, at: str) -> tuple[AutoscalingSpec | None, list[str]]:
    """The block (None if absent) and its problems, each ``where: what to fix``."""
    if raw is None:
        return None, []
    if not isinstance(raw, Mapping):
        return None, [f"{at}: must be an object (minReplicas, maxReplicas, metric, ...)"]
    problems: list[str] = []
    low = _int(raw, "minReplicas", at, problems, 1)
    high = _int(raw, "maxReplicas", at, problems, 0) if "maxReplicas" in raw else 0
    if "maxReplicas" not in raw:
        problems.append(f"{at}.maxReplicas: is required")
    elif high and low > high:
        problems.append(f"{at}: minReplicas ({low}) must not exceed maxReplicas ({high})")
    metric = str(raw.get("metric") or "")
    if metric not in METRICS:
        problems.append(f"{at}.metric: {metric!r} is not one of {', '.join(METRICS)}")
    target = raw.get("targetAverageValue")
    if not isinstance(target, str | int) or isinstance(target, bool) or not str(target).strip():
        problems.append(f"{at}.targetAverageValue: expected a quantity per replica (100k, 250)")
    behavior = raw.get("behavior")
    if behavior is not None and not isinstance(behavior, Mapping):
        problems.append(f"{at}.behavior: must be an HPA behavior object (scaleUp, scaleDown)")
    workload = _workload(raw.get("workload"), at, problems)
    if problems:
        return None, problems
    return (
        AutoscalingSpec(
            min_replicas=low,
            max_replicas=high,
            metric=metric,
            target_average_value=str(target),
            behavior=behavior if isinstance(behavior, Mapping) else None,
            workload=workload,
        ),
        [],
    )


def hpa_name(chain: ChainSpec, function: FunctionSpec) -> str:
    """``<chain>-<function>``: a DNS subdomain (chain names are labels, functions labels)."""
    return f"{chain.name}-{function.name}"


def workload_of(
    function: FunctionSpec,
    owners: Iterable[tuple[str, str]],
    deployment_of: Mapping[str, str],
) -> tuple[WorkloadRef | None, str]:
    """The function's workload: the named one, else the one all its pods' controller owners
    (kind, name) lead to (``deployment_of``: ReplicaSet name -> its Deployment). Returns it,
    or None and what to fix."""
    spec = function.autoscaling
    if spec is not None and spec.workload is not None:
        return spec.workload, ""
    found: set[WorkloadRef] = set()
    for kind, name in owners:
        if kind == "ReplicaSet" and name in deployment_of:
            found.add(WorkloadRef("Deployment", deployment_of[name]))
        elif kind in WORKLOAD_KINDS:
            found.add(WorkloadRef(kind, name))
        else:
            found.add(WorkloadRef(kind or "(none)", name))
    if len(found) == 1:
        (only,) = found
        if only.kind in WORKLOAD_KINDS:
            return only, ""
        return None, (
            f"function {function.name}: its pods belong to {only}, not a Deployment or"
            " StatefulSet; name the workload in autoscaling.workload"
        )
    if not found:
        return None, (
            f"function {function.name}: no pod selected yet to find its workload from; name it"
            " in autoscaling.workload"
        )
    listed = ", ".join(sorted(map(str, found)))
    return None, (
        f"function {function.name}: its pods belong to several workloads ({listed}); name one"
        " in autoscaling.workload"
    )


def render_hpa(
    chain: ChainSpec, function: FunctionSpec, spec: AutoscalingSpec, workload: WorkloadRef
) -> dict[str, Any]:
    """The HPA the controller owns for ``function`` (``workload`` scaled on ``spec``)."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": hpa_name(chain, function),
            "namespace": chain.namespace,
            "labels": {CHAIN_LABEL: chain.name, FUNCTION_LABEL: function.name},
            "ownerReferences": [chain.owner_reference()],
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": workload.kind,
                "name": workload.name,
            },
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": METRICS[spec.metric]},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": spec.target_average_value,
                        },
                    },
                }
            ],
            "behavior": dict(spec.behavior) if spec.behavior is not None else DEFAULT_BEHAVIOR,
        },
    }


def hpa_status(hpa: Mapping[str, Any] | None, name: str, problem: str = "") -> dict[str, Any]:
    """The chain status's view of a function's HPA: its name, current and desired replicas and
    its conditions (type, status, reason, message), or the problem that keeps it from existing.
    """
    if hpa is None:
        return {"horizontalPodAutoscaler": name, "message": problem or "not created yet"}
    status = hpa.get("status") or {}
    return {
        "horizontalPodAutoscaler": name,
        "currentReplicas": int(status.get("currentReplicas") or 0),
        "desiredReplicas": int(status.get("desiredReplicas") or 0),
        "conditions": [
            {k: str(c[k]) for k in ("type", "status", "reason", "message") if c.get(k)}
            for c in status.get("conditions") or []
        ],
    }
