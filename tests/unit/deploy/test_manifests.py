"""The deployment manifests in deploy/ are valid Kubernetes objects and consistent with the code.

Covers: every YAML document parses and validates (strict) against the Kubernetes JSON schemas
shipped by kubernetes-validate; `kubectl kustomize` builds deploy/ and every overlay (kind, k3s,
kubeadm) offline, each containing every object once and validating strictly against the
schemas of Kubernetes 1.29 to 1.33; the overlays differ only where their distribution does
(k3s's CNI paths, kind's never-pulled image); the ServiceMonitor component builds; the image is
named in kustomization.yaml only, one image everywhere; the namespace allows privileged pods
(Pod Security label); the controller has a PodDisruptionBudget selecting its pods and its own
PriorityClass, the agent system-node-critical; the agent's liveness and readiness probes and
the metrics Service use the port and paths the agent serves, its arguments parse; its memory
limit covers the session tables by the formula of docs/install.md; service accounts and roles
referenced exist; the controller role grants what the controller writes (chain status,
CrossConnections, events, peering) and the agent role what the agent writes (and single pods to
read, no list); the controller Deployment has two replicas, a liveness probe on the port it
serves, and arguments the controller's own parser accepts; the agent DaemonSet is host-network,
privileged, with the host bpffs mounted Bidirectional; its install-cni init container writes the
ConfigMap's CNI bin directory, and the agent serves the sfc-cni shim at the protocol's default
socket and spool with the node's CNI paths mounted at the node's own paths (every overlay); the
Dockerfile builds the one image both run: the eBPF object, the C Maglev builder and the static
sfc-cni shim compiled in a build stage, the IPAM plugins beside the shim, only the runtime
dependencies installed, a non-root default user, the native builder required; .dockerignore
keeps the venv, build outputs and caches out of the build context.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sfc_k8s.cni import install, wire
from sfc_k8s.dataplane import SESSIONS_DEFAULT
from sfc_k8s.operator import agent_cni
from sfc_k8s.operator.agent import config_from_args as agent_config_from_args
from sfc_k8s.operator.settings import controller_config_from_args

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.32.0"
CUSTOM_GROUPS = ("kopf.dev/", "sfc-k8s.io/", "monitoring.coreos.com/")
OVERLAYS = ["kind", "k3s", "kubeadm"]
# The Kubernetes versions the manifests must be valid for (kubernetes-validate ships their
# schemas offline).
K8S_VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"]
KUSTOMIZE_FILES = ("kustomization.yaml",)


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@functools.cache
def built(path: Path = DEPLOY) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize PATH` produces (offline, built once per session)."""
    result = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=False
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
        if path.name in KUSTOMIZE_FILES:
            assert doc["kind"] in ("Kustomization", "Component")
            continue
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]
        if not doc["apiVersion"].startswith(CUSTOM_GROUPS):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


EXPECTED_OBJECTS = sorted(
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
        ("PriorityClass", "sfc-k8s-controller"),
        ("ConfigMap", "sfc-k8s-node"),
        ("Deployment", "sfc-k8s-controller"),
        ("PodDisruptionBudget", "sfc-k8s-controller"),
        ("DaemonSet", "sfc-k8s-agent"),
        ("Service", "sfc-k8s-agent-metrics"),
    ]
)


@pytest.mark.parametrize("overlay", ["", *OVERLAYS], ids=lambda o: o or "deploy")
def test_kustomize_builds_every_object_once(overlay: str) -> None:
    objects = built(DEPLOY / "overlays" / overlay if overlay else DEPLOY)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == EXPECTED_OBJECTS
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sfc-k8s"
        if obj["kind"] in ("ServiceAccount", "Deployment", "DaemonSet", "Service", "ConfigMap"):
            assert obj["metadata"]["namespace"] == "sfc-system"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_strictly(overlay: str, version: str) -> None:
    for obj in built(DEPLOY / "overlays" / overlay):
        if not obj["apiVersion"].startswith(CUSTOM_GROUPS):
            kubernetes_validate.validate(obj, version, strict=True)


def _differences(overlay: str) -> list[str]:
    """JSON-ish paths where an overlay's objects differ from the plain deploy/ build."""
    base = {(o["kind"], o["metadata"]["name"]): o for o in built()}
    found: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{path}.{key}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{path}[{i}]")
        elif a != b:
            found.append(f"{path}={b}")

    for obj in built(DEPLOY / "overlays" / overlay):
        key = (obj["kind"], obj["metadata"]["name"])
        walk(base[key], obj, f"{key[0]}/{key[1]}")
    return found


def test_overlays_differ_only_where_their_distribution_does() -> None:
    assert _differences("kubeadm") == []
    k3s_bin = "/var/lib/rancher/k3s/data/current/bin"
    assert _differences("k3s") == [
        f"ConfigMap/sfc-k8s-node.data.cniBinDir={k3s_bin}",
        "ConfigMap/sfc-k8s-node.data.cniConfDir=/var/lib/rancher/k3s/agent/etc/cni/net.d",
        f"DaemonSet/sfc-k8s-agent.spec.template.spec.containers[0].volumeMounts[3].mountPath={k3s_bin}",
        f"DaemonSet/sfc-k8s-agent.spec.template.spec.volumes[1].hostPath.path={k3s_bin}",
    ]
    never = "spec.template.spec.containers[0].imagePullPolicy=Never"
    assert sorted(_differences("kind")) == [
        f"DaemonSet/sfc-k8s-agent.{never}",
        f"Deployment/sfc-k8s-controller.{never}",
    ]


def test_servicemonitor_component_builds(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(DEPLOY / "base", tmp_path)],
                "components": [os.path.relpath(DEPLOY / "components" / "servicemonitor", tmp_path)],
            }
        )
    )
    objects = built(tmp_path)
    (monitor,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    service = find("Service", "sfc-k8s-agent-metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def pod_spec(kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = find(kind, name)["spec"]["template"]["spec"]
    return spec


def test_one_image_and_existing_service_accounts() -> None:
    workloads = [("Deployment", "sfc-k8s-controller"), ("DaemonSet", "sfc-k8s-agent")]
    images = {c["image"] for kind, name in workloads for c in pod_spec(kind, name)["containers"]}
    assert images == {"sfc-k8s:0.1.0"}
    # named in one place: the manifests carry the bare name, kustomization.yaml the tag
    raw = [DEPLOY / "base" / "agent.yaml", DEPLOY / "base" / "controller.yaml"]
    for path in raw:
        (doc,) = documents(path)
        assert {c["image"] for c in doc["spec"]["template"]["spec"]["containers"]} == {"sfc-k8s"}
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
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    mount = mounts["bpffs"]
    assert (mount["mountPath"], mount["mountPropagation"]) == ("/sys/fs/bpf", "Bidirectional")
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert set(volumes) == set(mounts)
    assert volumes["bpffs"]["hostPath"]["path"] == "/sys/fs/bpf"
    root = container["args"][container["args"].index("--bpffs-root") + 1]
    assert root.startswith("/sys/fs/bpf/")
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_dockerfile_builds_the_image_both_run() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert 'ENTRYPOINT ["sfc-k8s"]' in lines
    assert any(line.startswith("FROM python:3.11") for line in lines)
    # the runtime dependencies only: a plain install, no extras
    assert "RUN pip install --no-cache-dir . \\" in lines
    assert ".[" not in text
    # both native parts compiled in the build stage and copied where the package loads them
    assert "native/sfc_maglev.c -o native/libsfcmaglev.so" in text
    assert "COPY --from=native /build/native/libsfcmaglev.so src/sfc_k8s/dataplane/native/" in lines
    assert "COPY --from=native /build/bpf/*.bpf.o src/sfc_k8s/dataplane/bpf/" in lines
    assert "ENV SFC_K8S_REQUIRE_NATIVE_MAGLEV=1" in lines
    # the shim built static from the generated header; it and the IPAM plugins where
    # install-cni copies from by default
    assert "PYTHONPATH=src python3 -m sfc_k8s.cni.wire --header > cni/sfc_cni_wire.h" in text
    assert "musl-gcc -static -s -Os -Wall -Wextra -Werror -Icni src/sfc_k8s/cni/shim/" in text
    cni = "COPY --from=native /build/cni/sfc-cni /build/cni/host-local /build/cni/static"
    assert f"{cni} {install.SOURCE_DIR}/" in lines
    # non-root by default (the controller); the agent's DaemonSet asks for root explicitly
    (user,) = [line for line in lines if line.startswith("USER ")]
    assert user == "USER 65532:65532"
    (controller,) = pod_spec("Deployment", "sfc-k8s-controller")["containers"]
    assert pod_spec("Deployment", "sfc-k8s-controller")["securityContext"]["runAsNonRoot"]
    assert controller["securityContext"]["allowPrivilegeEscalation"] is False
    (agent,) = pod_spec("DaemonSet", "sfc-k8s-agent")["containers"]
    assert agent["securityContext"]["runAsUser"] == 0
    for path in ("pyproject.toml", "README.md", "src/sfc_k8s/dataplane/bpf",
                 "src/sfc_k8s/dataplane/native/sfc_maglev.c"):  # fmt: skip
        assert (ROOT / path).exists(), path


def test_dockerignore_keeps_the_context_to_the_sources() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    assert {p for p in patterns if p.startswith("!")} == {"!pyproject.toml", "!README.md", "!src/"}
    # objects compiled on this machine never replace the image's own
    assert {"src/**/*.bpf.o", "src/**/*.so", "src/**/__pycache__"} <= set(patterns)


def test_namespace_allows_the_privileged_agent() -> None:
    labels = find("Namespace", "sfc-system")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


def _selects(selector: dict[str, Any], kind: str, name: str) -> bool:
    labels = find(kind, name)["spec"]["template"]["metadata"]["labels"]
    return bool(selector.items() <= labels.items())


def test_controller_disruption_budget_and_priorities() -> None:
    pdb = find("PodDisruptionBudget", "sfc-k8s-controller")
    assert pdb["metadata"]["namespace"] == "sfc-system"
    assert pdb["spec"]["minAvailable"] == 1
    assert find("Deployment", "sfc-k8s-controller")["spec"]["replicas"] > 1
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert _selects(selector, "Deployment", "sfc-k8s-controller")
    assert not _selects(selector, "DaemonSet", "sfc-k8s-agent")
    priority = pod_spec("Deployment", "sfc-k8s-controller")["priorityClassName"]
    assert find("PriorityClass", priority)["value"] > 0
    assert not find("PriorityClass", priority)["globalDefault"]
    assert pod_spec("DaemonSet", "sfc-k8s-agent")["priorityClassName"] == "system-node-critical"


def test_agent_probes_and_metrics_service_use_what_the_agent_serves() -> None:
    (container,) = pod_spec("DaemonSet", "sfc-k8s-agent")["containers"]
    config = agent_config_from_args(["--node", "n", *container["args"][1:]])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == config.metrics_port
    # the paths sfc_k8s.operator.agent_metrics serves (tests/integration/operator/
    # test_agent_probes.py requests them from a running agent)
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):  # fmt: skip
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}
    service = find("Service", "sfc-k8s-agent-metrics")
    assert service["spec"]["clusterIP"] == "None"  # one address per agent
    assert _selects(service["spec"]["selector"], "DaemonSet", "sfc-k8s-agent")
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (config.metrics_port, "metrics")
    (controller,) = pod_spec("Deployment", "sfc-k8s-controller")["containers"]
    assert controller["readinessProbe"]["httpGet"] == controller["livenessProbe"]["httpGet"]


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


# docs/install.md, "Memory": the agent process, then what the pinned maps charge to its cgroup
PROCESS_MIB = 128
NODE_MAPS_MIB = 4  # endpoint, interface, Maglev-of-maps and other fixed node-wide maps
SESSION_BYTES = 232  # both session tables, per entry of --session-table-size
LINKS, LINK_MIB = 64, 1
CPUS, CPU_MIB = 32, 1.5


def test_agent_memory_limit_covers_the_session_tables() -> None:
    (container,) = pod_spec("DaemonSet", "sfc-k8s-agent")["containers"]
    sessions = agent_config_from_args(["--node", "n", *container["args"][1:]]).session_table_size
    assert sessions == SESSIONS_DEFAULT
    tables = SESSION_BYTES * sessions / 2**20
    needed = PROCESS_MIB + NODE_MAPS_MIB + tables + LINKS * LINK_MIB + CPUS * CPU_MIB
    limit = _mebibytes(container["resources"]["limits"]["memory"])
    request = _mebibytes(container["resources"]["requests"]["memory"])
    assert limit >= needed
    assert request >= PROCESS_MIB + NODE_MAPS_MIB + tables


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_agent_installs_and_serves_the_cni_shim(overlay: str) -> None:
    """install-cni writes the node's CNI bin directory (the ConfigMap's); the agent serves the
    shim at the protocol's default socket and spool, and sees the bin directory, host-local's
    leases and the pods' namespaces at the node's own paths."""
    objects = built(DEPLOY / "overlays" / overlay)
    (config,) = [o for o in objects if o["metadata"]["name"] == "sfc-k8s-node"]
    (agent_ds,) = [o for o in objects if o["kind"] == "DaemonSet"]
    spec = agent_ds["spec"]["template"]["spec"]
    assert spec["hostPID"] is True
    volumes = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    bin_dir = config["data"]["cniBinDir"]
    assert volumes["cni-bin"] == bin_dir
    (init,) = spec["initContainers"]
    assert init["image"] == spec["containers"][0]["image"]
    assert init["args"][:2] == ["install-cni", "--bin-dir"]
    (mount,) = init["volumeMounts"]
    assert (mount["name"], mount["mountPath"]) == ("cni-bin", init["args"][2])
    assert init["securityContext"]["runAsUser"] == 0
    (agent,) = spec["containers"]
    assert agent_config_from_args([*agent["args"][1:], "--node", "n"]).cni_server == (
        agent_cni.CniServerOptions(wire.DEFAULT_SOCKET, wire.DEFAULT_SPOOL_DIR)
    )
    mounts = {m["name"]: m["mountPath"] for m in agent["volumeMounts"]}
    assert mounts["cni-socket"] == volumes["cni-socket"] == os.path.dirname(wire.DEFAULT_SOCKET)
    assert mounts["cni-spool"] == volumes["cni-spool"] == wire.DEFAULT_SPOOL_DIR
    assert mounts["cni-bin"] == bin_dir
    assert mounts["cni-state"] == volumes["cni-state"] == "/var/lib/cni"
    assert mounts["netns"] == volumes["netns"] == "/var/run/netns"
