"""sfc-k8s: scalable Service Function Chains on Kubernetes.

The package is layered (checked by import-linter, see pyproject.toml):

- ``sfc_k8s.api``: the ServiceFunctionChain/CrossConnection models and pure decisions;
- ``sfc_k8s.dataplane``: the eBPF cross-connection, its loader and the ``dp`` CLI;
- ``sfc_k8s.cni``: the ``sfc-cni`` plugin that Multus delegates data-plane interfaces to;
- ``sfc_k8s.operator``: the Kopf controller and node agent;
- ``sfc_k8s.local``: the local cluster (API server and node runtime) for development and CI.
"""

__version__ = "0.1.0"

API_GROUP = "sfc-k8s.io"
API_VERSION = "v1alpha1"

__all__ = ["API_GROUP", "API_VERSION", "__version__"]
