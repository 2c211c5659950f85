"""The custom metrics API documents and the provider's matching of agent reports to pods.

Covers: quantities (whole values plain, fractions in thousandths, rounding); the group and
resource lists; a MetricValueList in the v1beta2 and v1beta1 shapes; the provider's agent
address (annotation first, InternalIP with the agent port, IPv6 bracketed, none); pod values
matched by UID (a pod with the same name but another UID, a replaced pod, gets no value).
"""

from __future__ import annotations

from typing import Any

from sfc_k8s.api.custom_metrics import (
    PodValue,
    group_document,
    metric_value_list,
    quantity,
    resource_list,
)
from sfc_k8s.operator.metrics_provider import agent_url, pod_values


def test_quantities() -> None:
    assert quantity(400.0) == "400"
    assert quantity(400.4064) == "400406m"
    assert quantity(0.0005) == "1m"
    assert quantity(0) == "0"


def test_group_and_resources() -> None:
    group = group_document()
    assert group["preferredVersion"]["version"] == "v1beta2"
    assert [v["version"] for v in group["versions"]] == ["v1beta2", "v1beta1"]
    names = [r["name"] for r in resource_list("v1beta1")["resources"]]
    assert names == ["pods/packets_per_second", "pods/bits_per_second", "pods/sessions"]


def test_metric_value_list_shapes() -> None:
    value = PodValue("ns", "fw-1", 1.5, "2026-12-03T20:00:00Z", 5)
    v2 = metric_value_list("v1beta2", "sessions", [value])
    assert v2["apiVersion"] == "custom.metrics.k8s.io/v1beta2"
    assert v2["items"] == [
        {
            "describedObject": {
                "kind": "Pod",
                "namespace": "ns",
                "name": "fw-1",
                "apiVersion": "/v1",
            },
            "timestamp": "2026-12-03T20:00:00Z",
            "windowSeconds": 5,
            "value": "1500m",
            "metric": {"name": "sessions"},
        }
    ]
    (item,) = metric_value_list("v1beta1", "sessions", [value])["items"]
    assert item["metricName"] == "sessions"
    assert "metric" not in item


def _node(address: str = "", annotation: str = "") -> dict[str, Any]:
    node: dict[str, Any] = {"metadata": {"name": "n1"}, "status": {}}
    if annotation:
        node["metadata"]["annotations"] = {"sfc-k8s.io/agent-address": annotation}
    if address:
        node["status"]["addresses"] = [
            {"type": "Hostname", "address": "n1"},
            {"type": "InternalIP", "address": address},
        ]
    return node


def test_agent_url() -> None:
    assert agent_url(_node("172.18.0.2"), 9469) == "http://172.18.0.2:9469"
    assert agent_url(_node("fd00::2"), 9469) == "http://[fd00::2]:9469"
    assert agent_url(_node("172.18.0.2", "10.0.0.9:7000"), 9469) == "http://10.0.0.9:7000"
    assert agent_url(_node(), 9469) is None


def _pod(name: str, uid: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "uid": uid}}


def test_pod_values_matched_by_uid() -> None:
    report = {
        "timestamp": "2026-12-03T20:00:00Z",
        "pods": [
            {"uid": "u1", "packetsPerSecond": 400.5, "bitsPerSecond": 9, "sessions": 4,
             "windowSeconds": 5.2},
            {"uid": "old", "packetsPerSecond": 1.0, "bitsPerSecond": 1, "sessions": 1,
             "windowSeconds": 5},
        ],
    }  # fmt: skip
    pods = [_pod("fw-1", "u1"), _pod("fw-2", "new"), _pod("fw-3", "u3")]
    (value,) = pod_values("packets_per_second", pods, [report])
    assert value == PodValue("ns", "fw-1", 400.5, "2026-12-03T20:00:00Z", 5)
    (sessions,) = pod_values("sessions", pods, [report])
    assert sessions.value == 4
