"""sfc-k8s: scalable Service Function Chains on Kubernetes.

The package is layered (checked by import-linter, see pyproject.toml):

- ``sfc_k8s.api``: the ServiceFunctionChain/CrossConnection models and pure decisions;
- ``sfc_k8s.dataplane``: the eBPF cross-connection, its loader and the ``dp`` CLI;
- ``sfc_k8s.cni``: the ``sfc-cni`` plugin that Multus delegates data-plane interfaces to;
- ``sfc_k8s.operator``: the Kopf controller and node agent;
- ``sfc_k8s.local``: the local cluster (API server and node runtime) for development and CI.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
