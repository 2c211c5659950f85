"""The custom metrics API documents sfc-k8s serves: its metric names and the JSON of each answer.

``sfc_k8s.operator.metrics_provider`` (the built-in provider behind the ``APIService``) builds
its answers with these pure functions; the chain's ``autoscaling`` block
(``sfc_k8s.api.autoscaling``) names the same metrics; the prometheus-adapter rules
(``examples/autoscaling/prometheus-adapter-values.yaml``) expose them under the same names, so
an HPA works unchanged whichever provider serves ``custom.metrics.k8s.io``.

Documents follow ``custom.metrics.k8s.io`` ``v1beta2`` (``metric: {name, selector}``) and
``v1beta1`` (``metricName``); values are Kubernetes quantities in thousandths (``400500m``)
so that a rate keeps its fraction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CUSTOM_METRICS_GROUP = "custom.metrics.k8s.io"
CUSTOM_METRICS_VERSIONS = ("v1beta2", "v1beta1")  # preferred first

# Metric name in the custom metrics API -> what the agent reports for a pod.
PACKETS_PER_SECOND = "packets_per_second"
BITS_PER_SECOND = "bits_per_second"
SESSIONS = "sessions"
POD_METRICS: Mapping[str, str] = {
    PACKETS_PER_SECOND: "packetsPerSecond",
    BITS_PER_SECOND: "bitsPerSecond",
    SESSIONS: "sessions",
}


@dataclass(frozen=True)
class PodValue:
    """One pod's value of one metric, with when and over how long it was measured."""

    namespace: str
    name: str
    value: float
    timestamp: str  # RFC 3339
    window_seconds: int


def quantity(value: float) -> str:
    """``value`` as a quantity: whole numbers plain (``400``), others in thousandths."""
    milli = int((Decimal(repr(float(value))) * 1000).to_integral_value(rounding=ROUND_HALF_UP))
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def group_document() -> dict[str, Any]:
    """``/apis/custom.metrics.k8s.io``: the APIGroup."""
    versions = [
        {"groupVersion": f"{CUSTOM_METRICS_GROUP}/{v}", "version": v}
        for v in CUSTOM_METRICS_VERSIONS
    ]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": CUSTOM_METRICS_GROUP,
        "versions": versions,
        "preferredVersion": versions[0],
    }


def resource_list(version: str) -> dict[str, Any]:
    """``/apis/custom.metrics.k8s.io/VERSION``: one ``pods/METRIC`` resource per metric."""
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{CUSTOM_METRICS_GROUP}/{version}",
        "resources": [
            {
                "name": f"pods/{metric}",
                "singularName": "",
                "namespaced": True,
                "kind": "MetricValueList",
                "verbs": ["get"],
            }
            for metric in POD_METRICS
        ],
    }


def metric_value_list(version: str, metric: str, values: Iterable[PodValue]) -> dict[str, Any]:
    """A ``MetricValueList`` of ``metric`` for pods, in ``version``'s shape."""
    items = []
    for pod in values:
        item: dict[str, Any] = {
            "describedObject": {
                "kind": "Pod",
                "namespace": pod.namespace,
                "name": pod.name,
                "apiVersion": "/v1",
            },
            "timestamp": pod.timestamp,
            "windowSeconds": pod.window_seconds,
            "value": quantity(pod.value),
        }
        if version == "v1beta1":
            item["metricName"] = metric
        else:
            item["metric"] = {"name": metric}
        items.append(item)
    return {
        "kind": "MetricValueList",
        "apiVersion": f"{CUSTOM_METRICS_GROUP}/{version}",
        "metadata": {},
        "items": items,
    }


def not_found(what: str) -> dict[str, Any]:
    """A ``Status`` for a metric or object the provider does not have (404)."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": what,
        "reason": "NotFound",
        "code": 404,
    }
