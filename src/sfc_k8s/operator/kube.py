"""The operator's login from an explicit kubeconfig, on top of the shared client plumbing.

Kopf watches, indexes and patches the objects it handles. The operator needs two more things
that Kopf does not offer publicly: credentials from an explicit ``--kubeconfig`` path (Kopf's
built-in login reads only ``$KUBECONFIG``, which is process-global and wrong for several agents
in one test process), and a client for other requests (the controller's writes to
CrossConnections and events, the agent's list of CrossConnections at start-up). Both come from
the same ``kopf.ConnectionInfo``, which ``sfc_k8s.kube.KubeClient`` accepts as it is; loading,
TLS and the error tree (``ApiError`` and its subclasses) are ``sfc_k8s.kube``'s.
"""

from __future__ import annotations

import dataclasses
import os

import kopf

from sfc_k8s.kube import ApiError, KubeClient, KubeconfigError, load_kubeconfig, object_path

__all__ = [
    "ApiError",
    "KubeClient",
    "KubeconfigError",
    "connection_from_kubeconfig",
    "object_path",
]


def connection_from_kubeconfig(path: str | os.PathLike[str]) -> kopf.ConnectionInfo:
    """Kopf's credentials for the current context of kubeconfig ``path``."""
    return kopf.ConnectionInfo(**dataclasses.asdict(load_kubeconfig(path)))
