"""A Kubernetes-compatible API server for the local cluster, tests and demos.

Public surface: `APIServer` (start/stop/url/write_kubeconfig) and `Store` for in-process use.
The split follows KMock: `app.py` is the stateless scaffold (URLs, discovery, Status errors,
Tables, watch streaming), `store.py` the stateful part (objects, resourceVersions, watch
history, finalizers, graceful deletion), `controllers.py` the scheduler, Deployment controller
and garbage collector. Product code never imports this package (import-linter enforces it).
"""

from sfc_k8s.local.apiserver.errors import StatusError
from sfc_k8s.local.apiserver.server import APIServer, APIServerError, kubeconfig_text
from sfc_k8s.local.apiserver.store import Store

__all__ = ["APIServer", "APIServerError", "StatusError", "Store", "kubeconfig_text"]
