"""The local cluster serves the custom metrics API out of the box: the built-in provider, wired.

``sfc-k8s local up`` calls ``start`` once the nodes and their agents run. It installs
``deploy/components/metrics-provider`` the way a real cluster would, but for what the local
cluster has no Service networking for (``registration``, pure):

- the provider (``sfc-k8s metrics-provider``, its service account's token, deploy/'s RBAC)
  runs as a supervised process inside the first node's network namespace, as its pod would run
  on that node: from there it reaches every node's agent at ``<InternalIP>:9469`` over the
  underlay, exactly as on a real cluster;
- the API server, on the host, reaches it through a supervised forwarder
  (``sfc_k8s.local.forward``) listening on the host's loopback; the component's Service is
  made selector-less, with hand-written Endpoints naming that forwarder
  (``--enable-aggregator-routing`` then resolves the APIServices to it).

The HPA controller of the local API server reads the API through the aggregation layer, so
``kubectl get --raw /apis/custom.metrics.k8s.io/v1beta2/...`` and ``kubectl get hpa`` show
live values. docs/autoscaling.md ("On the local cluster").
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import yaml

from sfc_k8s.local import netns
from sfc_k8s.local.credentials import OPERATOR_NAMESPACE, write_component_kubeconfig
from sfc_k8s.local.kube import KubeError, SyncKube, load_kubeconfig
from sfc_k8s.local.layout import Layout
from sfc_k8s.local.paths import source_root
from sfc_k8s.local.processes import python, start_process, wait_until

PROVIDER = "metrics-provider"  # the supervised processes' names
FORWARDER = "metrics-provider-forward"
SERVICE = "sfc-k8s-metrics-provider"
SERVICE_ACCOUNT = "sfc-k8s-metrics-provider"
PROVIDER_PORT = 6443  # inside the node's namespace, as the Deployment's container port
AGENT_PORT = 9469
API_PATH = "/apis/custom.metrics.k8s.io/v1beta2"
# The local API server's --horizontal-pod-autoscaler-sync-period (kube-controller-manager's
# default is 15 s): a development cluster whose demo shows HPAs following a load ramp.
HPA_SYNC_SECONDS = 1.0


def component_manifest() -> list[dict[str, Any]]:
    """The documents of ``deploy/components/metrics-provider/metrics-provider.yaml``."""
    path = source_root() / "deploy" / "components" / "metrics-provider" / "metrics-provider.yaml"
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def registration(documents: list[dict[str, Any]], port: int) -> list[dict[str, Any]]:
    """The component as the local cluster applies it (pure): no Deployment (a process runs the
    provider), the Service without selector and Endpoints at ``127.0.0.1:port`` (the
    forwarder), everything else (service account, RBAC, APIServices) unchanged."""
    out: list[dict[str, Any]] = []
    for doc in documents:
        kind = doc.get("kind")
        if kind == "Deployment":
            continue
        if kind == "Service":
            service = json.loads(json.dumps(doc))
            service["spec"].pop("selector", None)
            out.append(service)
            ports = [
                {"name": str(p.get("targetPort") or p.get("name")), "port": port}
                for p in service["spec"].get("ports") or []
            ]
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "Endpoints",
                    "metadata": {
                        "name": doc["metadata"]["name"],
                        "namespace": doc["metadata"]["namespace"],
                        "labels": dict(doc["metadata"].get("labels") or {}),
                    },
                    "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": ports}],
                }
            )
            continue
        out.append(doc)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(
    layout: Layout,
    record: dict[str, Any],
    node: str,
    kubectl: Callable[..., str],
    *,
    timeout: float,
) -> str:
    """Register and start the provider on ``node``; returns where the API server reaches it.

    ``kubectl(*args)`` runs kubectl as the admin. Waits until the API server answers
    ``custom.metrics.k8s.io`` through the aggregation layer.
    """
    port = _free_port()
    manifest = layout.state_dir / "apiserver" / "metrics-provider.yaml"  # gone with `down`
    manifest.write_text(yaml.safe_dump_all(registration(component_manifest(), port)))
    kubectl("apply", "-f", str(manifest))
    admin = SyncKube(load_kubeconfig(layout.kubeconfig))
    config = write_component_kubeconfig(layout, admin, PROVIDER, service_account=SERVICE_ACCOUNT)
    provider = [
        python(), "-m", "sfc_k8s.cli", "metrics-provider",
        "--kubeconfig", str(config),
        "--host", "127.0.0.1",
        "--port", str(PROVIDER_PORT),
        "--agent-port", str(AGENT_PORT),
    ]  # fmt: skip
    node_ns = layout.node_netns(node)
    start_process(layout, record, PROVIDER, netns.nsenter_argv(node_ns, provider), {})
    forwarder = [
        python(), "-m", "sfc_k8s.local.forward",
        "--listen", f"127.0.0.1:{port}",
        "--netns", node_ns,
        "--to", f"127.0.0.1:{PROVIDER_PORT}",
    ]  # fmt: skip
    start_process(layout, record, FORWARDER, forwarder, {})

    def serving() -> bool:
        try:
            admin.get(API_PATH)
        except KubeError:
            return False
        return True

    wait_until("the custom metrics API", serving, timeout, str(layout.logs_dir))
    return f"{OPERATOR_NAMESPACE}/{SERVICE} via 127.0.0.1:{port} -> {node}:{PROVIDER_PORT}"


__all__ = ["FORWARDER", "PROVIDER", "component_manifest", "registration", "start"]
