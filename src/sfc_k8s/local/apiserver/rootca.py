"""The ``kube-root-ca.crt`` ConfigMap in every namespace, as kube-controller-manager's
root-CA publisher keeps it.

Pods verify the API server with the ``ca.crt`` of their service-account volume, which the
kubelet takes from this ConfigMap (``local/node/volumes.py``). Only a server with a PKI (HTTPS,
``local up``) publishes it. ``Controllers`` runs ``RootCAPublisher.sync`` on each pass; a pass
costs nothing unless a namespace appeared or the ConfigMap was changed or deleted.
"""

from __future__ import annotations

from sfc_k8s.local.apiserver import errors
from sfc_k8s.local.apiserver.store import Event, Store, meta

NAME = "kube-root-ca.crt"
NAMESPACES = ("", "namespaces")
CONFIGMAPS = ("", "configmaps")


class RootCAPublisher:
    """Keeps ``kube-root-ca.crt`` (``ca.crt`` = the cluster's CA) in every active namespace."""

    def __init__(self, store: Store, ca_pem: str) -> None:
        self.store = store
        self.ca_pem = ca_pem
        self._dirty: set[str] | None = None  # None: every namespace (the first pass)
        store.listeners.append(self._on_event)

    def _on_event(self, key: tuple[str, str], event: Event) -> None:
        md = meta(event.obj)
        if key == NAMESPACES and event.type != "DELETED" and self._dirty is not None:
            self._dirty.add(str(md.get("name")))
        elif key == CONFIGMAPS and md.get("name") == NAME and self._dirty is not None:
            self._dirty.add(str(md.get("namespace")))

    def sync(self) -> None:
        namespaces = self.store.registry.by_key(NAMESPACES)
        configmaps = self.store.registry.by_key(CONFIGMAPS)
        assert namespaces is not None and configmaps is not None
        names = self._dirty
        self._dirty = set()
        if names is None:
            names = {str(meta(o).get("name")) for o in self.store.objects(NAMESPACES)}
        for name in sorted(names):
            namespace = self.store.find(NAMESPACES, None, name)
            if namespace is None or meta(namespace).get("deletionTimestamp"):
                continue
            current = self.store.find(CONFIGMAPS, name, NAME)
            data = {"ca.crt": self.ca_pem}
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NAME}}
            try:
                if current is None:
                    self.store.create(configmaps, name, {**body, "data": data})
                elif current.get("data") != data:
                    self.store.update_internal(configmaps, {**current, "data": data})
            except errors.StatusError:
                self._dirty.add(name)  # a racing write: the next pass tries again
