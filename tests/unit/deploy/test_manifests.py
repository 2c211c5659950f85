"""The deployment manifests in deploy/ are valid Kubernetes objects and consistent with the code.

Covers: every YAML document parses and validates (strict) against the Kubernetes JSON schemas
shipped by kubernetes-validate; `kubectl kustomize deploy/` builds offline and contains every
object once; one image everywhere; service accounts and roles referenced exist; the controller
role grants what the controller writes (chain status, CrossConnections, events, peering) and
the agent role what the agent writes (and single pods to read, no list); the controller
Deployment has two replicas, a liveness probe on the port it serves, and arguments the
controller's own parser accepts; the agent DaemonSet is host-network, privileged, with the host
bpffs mounted Bidirectional; the Dockerfile builds the one image both run.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sfc_k8s.operator.settings import controller_config_from_args

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.32.0"
CUSTOM_GROUPS = ("kopf.dev/", "sfc-k8s.io/")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@functools.cache
def built() -> list[dict[str, Any]]:
    """The objects `kubectl kustomize deploy/` produces (offline, built once per session)."""
    result = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def find(kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in built() if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


@pytest.mark.parametrize(
    "path", sorted(p.relative_to(DEPLOY) for p in DEPLOY.rglob("*.yaml")), ids=str
)
def test_every_document_is_a_valid_object(path: Path) -> None:
    for doc in documents(DEPLOY / path):
        if path.name == "kustomization.yaml":
            assert doc["kind"] == "Kustomization"
            continue
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
        if not doc["apiVersion"].startswith(CUSTOM_GROUPS):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomize_builds_every_object_once() -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in built())
    assert kinds == sorted(
        [
            ("Namespace", "sfc-system"),
            ("CustomResourceDefinition", "servicefunctionchains.sfc-k8s.io"),
            ("CustomResourceDefinition", "crossconnections.sfc-k8s.io"),
            ("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev"),
            ("CustomResourceDefinition", "kopfpeerings.kopf.dev"),
            ("ServiceAccount", "sfc-k8s-controller"),
            ("ServiceAccount", "sfc-k8s-agent"),
            ("ClusterRole", "sfc-k8s-controller"),
            ("ClusterRole", "sfc-k8s-agent"),
            ("ClusterRoleBinding", "sfc-k8s-controller"),
            ("ClusterRoleBinding", "sfc-k8s-agent"),
            ("Deployment", "sfc-k8s-controller"),
            ("DaemonSet", "sfc-k8s-agent"),
        ]
    )
    for obj in built():
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sfc-k8s"
        if obj["kind"] in ("ServiceAccount", "Deployment", "DaemonSet"):
            assert obj["metadata"]["namespace"] == "sfc-system"


def pod_spec(kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = find(kind, name)["spec"]["template"]["spec"]
    return spec


def test_one_image_and_existing_service_accounts() -> None:
    workloads = [("Deployment", "sfc-k8s-controller"), ("DaemonSet", "sfc-k8s-agent")]
    images = {c["image"] for kind, name in workloads for c in pod_spec(kind, name)["containers"]}
    assert images == {"sfc-k8s:0.1.0"}
    accounts = {o["metadata"]["name"] for o in built() if o["kind"] == "ServiceAccount"}
    for kind, name in workloads:
        assert pod_spec(kind, name)["serviceAccountName"] in accounts
        workload = find(kind, name)
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
    for binding in (o for o in built() if o["kind"] == "ClusterRoleBinding"):
        find("ClusterRole", binding["roleRef"]["name"])
        for subject in binding["subjects"]:
            assert subject["name"] in accounts
            assert subject["namespace"] == "sfc-system"


def allowed(role: str, group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        for rule in find("ClusterRole", role)["rules"]
    )


@pytest.mark.parametrize(
    ("group", "resource", "verb"),
    [
        ("sfc-k8s.io", "servicefunctionchains", "watch"),
        ("sfc-k8s.io", "servicefunctionchains/status", "patch"),
        ("sfc-k8s.io", "servicefunctionchains/finalizers", "update"),
        ("sfc-k8s.io", "crossconnections", "create"),
        ("sfc-k8s.io", "crossconnections", "patch"),
        ("sfc-k8s.io", "crossconnections", "delete"),
        ("sfc-k8s.io", "crossconnections", "watch"),
        ("", "pods", "watch"),
        ("", "events", "create"),
        ("kopf.dev", "clusterkopfpeerings", "patch"),
        ("kopf.dev", "clusterkopfpeerings", "create"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ],
)
def test_controller_role_covers_its_requests(group: str, resource: str, verb: str) -> None:
    assert allowed("sfc-k8s-controller", group, resource, verb)


def test_controller_role_cannot_write_pods_or_chains() -> None:
    for verb in ("create", "patch", "delete"):
        assert not allowed("sfc-k8s-controller", "", "pods", verb)
        assert not allowed("sfc-k8s-controller", "sfc-k8s.io", "servicefunctionchains", verb)


@pytest.mark.parametrize(
    ("resource", "verb"),
    [
        ("crossconnections", "watch"),
        ("crossconnections", "patch"),
        ("crossconnections/status", "patch"),
    ],
)
def test_agent_role_covers_its_requests(resource: str, verb: str) -> None:
    assert allowed("sfc-k8s-agent", "sfc-k8s.io", resource, verb)
    assert not allowed("sfc-k8s-agent", "sfc-k8s.io", "crossconnections", "create")


def test_agent_role_reads_single_pods_only() -> None:
    assert allowed("sfc-k8s-agent", "", "pods", "get")  # a pod whose interface is missing
    for verb in ("list", "watch", "patch", "delete"):
        assert not allowed("sfc-k8s-agent", "", "pods", verb)


def test_controller_deployment() -> None:
    deployment = find("Deployment", "sfc-k8s-controller")
    assert deployment["spec"]["replicas"] == 2
    (container,) = pod_spec("Deployment", "sfc-k8s-controller")["containers"]
    args = container["args"]
    assert args[0] == "controller"
    env = {e["name"]: e["value"] for e in container["env"]}
    config = controller_config_from_args(args[1:], env)
    assert config.clusterwide
    assert config.peering == "sfc-k8s-controller"
    assert config.priority == 0  # random per replica: equal priorities would pause both
    assert config.liveness is not None
    port = int(config.liveness.rsplit(":", 1)[1].split("/")[0])
    probe = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[probe["port"]] == port
    assert config.liveness.endswith(probe["path"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_agent_daemonset() -> None:
    spec = pod_spec("DaemonSet", "sfc-k8s-agent")
    assert spec["hostNetwork"] is True
    (container,) = spec["containers"]
    assert container["args"][0] == "agent"
    assert container["securityContext"]["privileged"] is True
    (mount,) = container["volumeMounts"]
    assert (mount["mountPath"], mount["mountPropagation"]) == ("/sys/fs/bpf", "Bidirectional")
    (volume,) = spec["volumes"]
    assert volume["name"] == mount["name"]
    assert volume["hostPath"]["path"] == "/sys/fs/bpf"
    root = container["args"][container["args"].index("--bpffs-root") + 1]
    assert root.startswith("/sys/fs/bpf/")
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_dockerfile_builds_the_image_both_run() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert 'ENTRYPOINT ["sfc-k8s"]' in lines
    assert any(line.startswith("FROM python:3.11") for line in lines)
    assert "pip install --no-cache-dir ." in text
    for path in ("pyproject.toml", "README.md", "src/sfc_k8s/dataplane/bpf"):
        assert (ROOT / path).exists(), path
