"""The operator of a local cluster, installed from ``deploy/`` and run as pods.

``local up`` installs sfc-k8s as on a real cluster: ``kubectl apply -k deploy/`` (the base every
install builds on: CRDs, RBAC, the controller Deployment with its two peering replicas, the agent
DaemonSet), and the local cluster runs those pods like any other (``node/``): the project's
image stands for this checkout's ``sfc-k8s`` (``node/images.py``), the agent's ``hostPath``
volumes land in its node's own tree and bpffs folder, its ``hostNetwork`` is the node's
namespace, and the node runtime restarts, probes and reports them as a kubelet does.

One local adaptation, only when ``local up --mtu`` is not the default: a kustomization in the
state directory (``<state>/deploy``) on top of ``deploy/`` adds ``--tunnel-mtu`` to the agent's
arguments, as a real cluster with a smaller underlay MTU would in its own overlay.

Used by ``cli.py`` (``up``, ``status``) and ``nodes.py``; tests find the pods and their container
processes here.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from sfc_k8s.dataplane import tunnel
from sfc_k8s.local import netns, underlay
from sfc_k8s.local.credentials import OPERATOR_NAMESPACE
from sfc_k8s.local.kube import KubeError, SyncKube, load_kubeconfig
from sfc_k8s.local.layout import Layout
from sfc_k8s.local.paths import source_root
from sfc_k8s.local.processes import LocalClusterError, wait_until

CONTROLLER = "sfc-k8s-controller"  # the Deployment
AGENT = "sfc-k8s-agent"  # the DaemonSet
SELECTORS = {
    "controller": "app.kubernetes.io/name=sfc-k8s,app.kubernetes.io/component=controller",
    "agent": "app.kubernetes.io/name=sfc-k8s,app.kubernetes.io/component=agent",
}
METRICS_PORT = 9469  # the agent's, deploy/base/agent.yaml
CRDS = ("servicefunctionchains.sfc-k8s.io", "crossconnections.sfc-k8s.io")


def deploy_dir() -> Path:
    return source_root() / "deploy"


def kustomization(layout: Layout, mtu: int) -> Path:
    """The kustomization ``up`` applies: ``deploy/`` itself, or the minimal local overlay
    that sizes the agent's tunnel for a non-default underlay MTU (module docstring)."""
    if mtu == underlay.DEFAULT_MTU:
        return deploy_dir()
    overlay = layout.state_dir / "deploy"
    overlay.mkdir(parents=True, exist_ok=True)
    base = os.path.relpath(deploy_dir(), overlay)  # kustomize refuses absolute resources
    (overlay / "kustomization.yaml").write_text(
        "# made by 'sfc-k8s local up --mtu': deploy/ with the agent's tunnel sized for the\n"
        "# underlay (docs/local-cluster.md, The operator as pods)\n"
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources:\n  - {base}\n"
        "patches:\n"
        f"  - target:\n      kind: DaemonSet\n      name: {AGENT}\n"
        "    patch: |\n"
        "      - op: add\n"
        "        path: /spec/template/spec/containers/0/args/-\n"
        f"        value: --tunnel-mtu={tunnel.mtu_for(mtu)}\n"
    )
    return overlay


def _kubectl(kubectl: str, layout: Layout, *args: str) -> str:
    try:
        proc = subprocess.run(
            [kubectl, "--kubeconfig", str(layout.kubeconfig), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as err:
        raise LocalClusterError(f"kubectl {' '.join(args)} failed: {err}") from err
    if proc.returncode != 0:
        raise LocalClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def apply(layout: Layout, mtu: int, *, kubectl: str) -> int:
    """``kubectl apply -k`` of the operator's kustomization; the number of objects applied."""
    out = _kubectl(kubectl, layout, "apply", "-k", str(kustomization(layout, mtu)))
    _kubectl(kubectl, layout, "wait", "--for=condition=Established", "--timeout=30s",
             *(f"crd/{name}" for name in CRDS))  # fmt: skip
    return len(out.splitlines())


def pods(layout: Layout, component: str) -> list[dict[str, Any]]:
    """The live pods of ``controller`` or ``agent``."""
    kube = SyncKube(load_kubeconfig(layout.kubeconfig))
    items = kube.get(
        f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods", labelSelector=SELECTORS[component]
    )["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def agent_pod(layout: Layout, node: str) -> dict[str, Any] | None:
    return next((p for p in pods(layout, "agent") if p["spec"].get("nodeName") == node), None)


def _running(pod: dict[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all("running" in (s.get("state") or {}) for s in statuses)


def container_pid(layout: Layout, pod: dict[str, Any], container: str) -> int:
    """The host pid of a running container's process (what ``kill -9`` of it would name)."""
    path = layout.pod_dir(pod["metadata"]["uid"]) / f"{container}.pid"
    try:
        return int(path.read_text())
    except (OSError, ValueError) as err:
        raise LocalClusterError(f"no process for {pod['metadata']['name']}/{container}") from err


def container_pids(layout: Layout, component: str, node: str | None = None) -> list[int]:
    """The pids of the ``controller`` or ``agent`` containers (of ``node``'s pods only, if
    given) that run now: what ``kill`` of the operator names on this machine."""
    found = []
    for pod in pods(layout, component):
        if node is None or pod["spec"].get("nodeName") == node:
            with contextlib.suppress(LocalClusterError):
                found.append(container_pid(layout, pod, component))
    return found


def agent_ready(layout: Layout, node: str) -> bool:
    """The node's agent answers its readiness endpoint (``/readyz`` on the metrics port, in the
    node's namespace: its data plane open, the CrossConnections listed) with 200."""
    try:
        sock = netns.connect_in_netns(layout.node_netns(node), "127.0.0.1", METRICS_PORT, timeout=1)
    except (OSError, netns.NetnsError):
        return False
    with sock:
        try:
            sock.settimeout(1)
            sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False


def container_logs(layout: Layout) -> list[Path]:
    """The log files of the operator's containers (controller and agents), for a report."""
    if not layout.pods_dir.is_dir():
        return []
    return sorted(
        log for name in ("controller", "agent") for log in layout.pods_dir.glob(f"*/{name}.log")
    )


def wait_running(layout: Layout, nodes: list[str], timeout: float, *, replicas: int = 2) -> None:
    """Until every node's agent pod runs and answers ready (the readiness the pod's probe
    reports at its next period) and the controller's ``replicas`` pods run (Kopf has no
    readiness before its peering settles; the pods turn Ready at their probe's next period)."""

    def up() -> bool:
        try:
            agents = {p["spec"].get("nodeName") for p in pods(layout, "agent") if _running(p)}
            controllers = [p for p in pods(layout, "controller") if _running(p)]
        except KubeError:
            return False
        if not all(n in agents for n in nodes) or len(controllers) < replicas:
            return False
        return all(agent_ready(layout, n) for n in nodes)

    wait_until("the operator's pods (deploy/)", up, timeout, str(layout.pods_dir))


def pods_summary(layout: Layout) -> list[str]:
    """One line per operator pod for ``local status``: name, node, ready, restarts, age."""
    lines = []
    now = time.time()
    for component in ("controller", "agent"):
        for pod in pods(layout, component):
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
            ready = sum(1 for s in statuses if s.get("ready"))
            created = pod["metadata"].get("creationTimestamp", "")
            age = _age(created, now)
            lines.append(
                f"  {pod['metadata']['name']:<40} {pod['spec'].get('nodeName') or '-':<8} "
                f"{ready}/{len(statuses):<5} {restarts:<9} {age}"
            )
    return lines


def _age(timestamp: str, now: float) -> str:
    try:
        then = time.mktime(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    except ValueError:
        return "-"
    return f"{max(now - then, 0):.0f}s"
