"""The autoscaling components of deploy/ build, validate and agree with the code.

Covers: ``components/metrics-provider`` builds on top of deploy/base with kustomize, every
object validates strictly against Kubernetes 1.29-1.33; its APIServices (v1beta2 preferred,
v1beta1) point to its Service, whose target port is the container's named port; the
container's arguments parse with the provider's own parser and name the port the agent
DaemonSet serves its metrics (and ``/traffic/pods``) on; the probes use HTTPS on that port.
The prometheus-adapter rules expose the provider's three metric names from series the agent's
per-pod collector exports, mapped to pods by their ``namespace``/``pod`` labels, which the
ServiceMonitor keeps (``honorLabels``); the KEDA example's HPA settings validate as an HPA and
its query names exported series.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from sfc_k8s.api.custom_metrics import POD_METRICS
from sfc_k8s.operator.agent_traffic import PodTrafficCollector
from sfc_k8s.operator.metrics_provider import config_from_args
from tests.unit.deploy.test_manifests import (
    CUSTOM_GROUPS,
    DEPLOY,
    K8S_VERSIONS,
    ROOT,
    allowed,
    built,
)

COMPONENTS = DEPLOY / "components"
EXAMPLES = ROOT / "examples" / "autoscaling"


def build_with(tmp_path: Path, component: str) -> list[dict[str, Any]]:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(DEPLOY, tmp_path)],
                "components": [os.path.relpath(COMPONENTS / component, tmp_path)],
            }
        )
    )
    return built(tmp_path)


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def test_metrics_provider_component(tmp_path: Path) -> None:
    objects = build_with(tmp_path, "metrics-provider")
    for version in K8S_VERSIONS:
        for obj in objects:
            if not obj["apiVersion"].startswith(CUSTOM_GROUPS):
                kubernetes_validate.validate(obj, version, strict=True)
    service = one(objects, "Service", "sfc-k8s-metrics-provider")
    deployment = one(objects, "Deployment", "sfc-k8s-metrics-provider")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (port,) = container["ports"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    priorities = {}
    for version in ("v1beta2", "v1beta1"):
        spec = one(objects, "APIService", f"{version}.custom.metrics.k8s.io")["spec"]
        assert spec["service"] == {
            "namespace": service["metadata"]["namespace"],
            "name": service["metadata"]["name"],
            "port": service["spec"]["ports"][0]["port"],
        }
        priorities[version] = spec["versionPriority"]
    assert priorities["v1beta2"] > priorities["v1beta1"]

    assert container["args"][0] == "metrics-provider"
    config = config_from_args(container["args"][1:])
    assert config.port == port["containerPort"]
    (agent,) = one(objects, "DaemonSet", "sfc-k8s-agent")["spec"]["template"]["spec"]["containers"]
    agent_ports = {p["name"]: p["containerPort"] for p in agent["ports"]}
    assert config.agent_port == agent_ports["metrics"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
        assert container[probe]["httpGet"]["port"] == port["name"]


def _exported_names() -> set[str]:
    """The series names the agent's per-pod collector exports (counters with ``_total``)."""
    names = set()
    for family in PodTrafficCollector(lambda _: []).describe():
        suffix = "_total" if family.type == "counter" else ""
        names.add(family.name + suffix)
    return names


def test_prometheus_adapter_rules_serve_the_providers_metrics() -> None:
    values = yaml.safe_load((EXAMPLES / "prometheus-adapter-values.yaml").read_text())
    rules = values["rules"]["custom"]
    assert [rule["name"]["as"] for rule in rules] == list(POD_METRICS)
    exported = _exported_names()
    for rule in rules:
        series = re.fullmatch(r"(\w+)\{.*\}", rule["seriesQuery"])
        assert series is not None, rule
        assert series.group(1) in exported, rule
        assert re.fullmatch(rule["name"]["matches"], series.group(1))
        assert rule["resources"]["overrides"] == {
            "namespace": {"resource": "namespace"},
            "pod": {"resource": "pod"},
        }
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert placeholder in rule["metricsQuery"], rule


def test_servicemonitor_keeps_the_agents_pod_labels() -> None:
    monitor = yaml.safe_load((COMPONENTS / "servicemonitor" / "servicemonitor.yaml").read_text())
    assert all(endpoint["honorLabels"] for endpoint in monitor["spec"]["endpoints"])


def test_keda_example() -> None:
    """KEDA's CRD schema is not available offline: the HPA parts it renders are checked
    against Kubernetes' own HPA schema, and the query against the series the agents export."""
    (scaled,) = yaml.safe_load_all((EXAMPLES / "keda-scaledobject.yaml").read_text())
    assert scaled["apiVersion"] == "keda.sh/v1alpha1" and scaled["kind"] == "ScaledObject"
    spec = scaled["spec"]
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": scaled["metadata"]["name"]},
        "spec": {
            "scaleTargetRef": spec["scaleTargetRef"],
            "minReplicas": spec["minReplicaCount"],
            "maxReplicas": spec["maxReplicaCount"],
            "behavior": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"],
        },
    }
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(hpa, version, strict=True)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    used = set(re.findall(r"sfc_k8s_\w+", trigger["metadata"]["query"]))
    assert used and used <= _exported_names()
    assert float(trigger["metadata"]["threshold"]) > 0


def test_controller_role_owns_hpas_but_not_replicas() -> None:
    """The controller renders HPAs for chain functions and reads ReplicaSets to find their
    Deployments; it never writes a workload or its scale (the HPA does)."""
    for verb in ("watch", "create", "update", "delete"):
        assert allowed("sfc-k8s-controller", "autoscaling", "horizontalpodautoscalers", verb)
    assert allowed("sfc-k8s-controller", "apps", "replicasets", "get")
    for resource in ("deployments", "deployments/scale", "statefulsets", "statefulsets/scale"):
        for verb in ("patch", "update"):
            assert not allowed("sfc-k8s-controller", "apps", resource, verb)
