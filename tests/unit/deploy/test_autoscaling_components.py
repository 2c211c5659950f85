"""The autoscaling components of deploy/ build, validate and agree with the code.

Covers: ``components/metrics-provider`` builds on top of deploy/base with kustomize, every
object validates strictly against Kubernetes 1.29-1.33; its APIServices (v1beta2 preferred,
v1beta1) point to its Service, whose target port is the container's named port; the
container's arguments parse with the provider's own parser and name the port the agent
DaemonSet serves its metrics (and ``/traffic/pods``) on; the probes use HTTPS on that port.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from sfc_k8s.operator.metrics_provider import config_from_args
from tests.unit.deploy.test_manifests import CUSTOM_GROUPS, DEPLOY, K8S_VERSIONS, built

COMPONENTS = DEPLOY / "components"


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
