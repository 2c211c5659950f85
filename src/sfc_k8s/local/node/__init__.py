"""The local cluster's node runtime (the kubelet role): pods as network namespaces + processes.

``python -m sfc_k8s.local.node`` runs it as a process (``sfc-k8s local up`` does); tests and
the demo may also embed ``NodeRuntime`` in their own event loop.
"""

from sfc_k8s.api.attachments import NETWORK_STATUS_ANNOTATION
from sfc_k8s.local.node.cni import NETWORKS_ANNOTATION, NetworkAttachmentError
from sfc_k8s.local.node.runtime import NodeRuntime, NodeSpec

__all__ = [
    "NETWORKS_ANNOTATION",
    "NETWORK_STATUS_ANNOTATION",
    "NetworkAttachmentError",
    "NodeRuntime",
    "NodeSpec",
]
