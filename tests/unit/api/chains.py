"""Builders of chain and pod bodies shared by the API unit tests (not a test module)."""

from __future__ import annotations

import copy
from typing import Any

from sfc_k8s.api import PodInfo


def web_chain(name: str = "web", namespace: str = "default", **spec_extra: Any) -> dict[str, Any]:
    """A valid three-function chain: client -> firewall -> server."""
    body: dict[str, Any] = {
        "apiVersion": "sfc-k8s.io/v1alpha1",
        "kind": "ServiceFunctionChain",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 3},
        "spec": {
            "functions": [
                {
                    "name": "client",
                    "selector": {"matchLabels": {"app": "client"}},
                    "interfaces": ["eth1"],
                },
                {
                    "name": "firewall",
                    "selector": {"matchLabels": {"app": "firewall"}},
                    "interfaces": ["eth1", "eth2"],
                },
                {
                    "name": "server",
                    "selector": {"matchLabels": {"app": "server"}},
                    "interfaces": ["eth1"],
                },
            ],
            "links": [
                {
                    "name": "client-firewall",
                    "a": {"function": "client", "interface": "eth1"},
                    "b": {"function": "firewall", "interface": "eth1"},
                },
                {
                    "name": "firewall-server",
                    "a": {"function": "firewall", "interface": "eth2"},
                    "b": {"function": "server", "interface": "eth1"},
                },
            ],
            **spec_extra,
        },
    }
    return copy.deepcopy(body)


def pod(
    name: str,
    app: str,
    *,
    ready: bool = True,
    terminating: bool = False,
    node: str | None = "node-1",
    namespace: str = "default",
    **labels: str,
) -> PodInfo:
    return PodInfo(
        namespace=namespace,
        name=name,
        uid=f"uid-{name}",
        labels={"app": app, **labels},
        node=node,
        ready=ready,
        terminating=terminating,
    )
