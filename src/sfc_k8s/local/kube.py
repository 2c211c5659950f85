"""The local cluster's side of the Kubernetes client: a blocking client and a kubeconfig writer.

Kubeconfig loading, TLS, the async client (``KubeClient``, used by the node runtime) and the
error tree are the product's (``sfc_k8s.kube``) and are re-exported here for the local
cluster's modules. What only the local cluster needs lives here: ``SyncKube`` for
``sfc-k8s local`` and ``sfc-k8s demo`` (stdlib only, a handful of reads) and
``write_kubeconfig`` for the cluster's own loopback kubeconfig.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from sfc_k8s.kube import (
    JSON_PATCH,
    MERGE_PATCH,
    ApiError,
    ConflictError,
    Connection,
    GoneError,
    JsonObj,
    KubeClient,
    KubeconfigError,
    KubeError,
    NotFoundError,
    api_error,
    auth_headers,
    load_kubeconfig,
    query_string,
    ssl_context,
)

__all__ = [
    "JSON_PATCH",
    "MERGE_PATCH",
    "ApiError",
    "ConflictError",
    "Connection",
    "GoneError",
    "JsonObj",
    "KubeClient",
    "KubeError",
    "KubeconfigError",
    "NotFoundError",
    "SyncKube",
    "load_kubeconfig",
    "write_kubeconfig",
]


def write_kubeconfig(path: Path, server: str, *, name: str = "sfc-k8s-local") -> Path:
    """Write a minimal kubeconfig (no credentials: the local API server is on loopback)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server}}],
        "users": [{"name": name, "user": {}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class SyncKube:
    """Blocking client for the CLI and the demo (stdlib only, a handful of calls)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._ctx = ssl_context(conn)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> JsonObj:
        url = self.conn.server + path + query_string(params or {})
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        req.add_header("Content-Type", content_type)
        for key, value in auth_headers(self.conn).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ctx) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raise api_error(method, path, err.code, err.read()) from err
        except (urllib.error.URLError, OSError) as err:
            raise ApiError(method, path, 0, type(err).__name__, str(err)) from err
        result: JsonObj = json.loads(raw) if raw else {}
        return result

    def get(self, path: str, **params: Any) -> JsonObj:
        return self.request("GET", path, params=params)

    def reachable(self) -> bool:
        try:
            self.get("/version")
        except KubeError:
            return False
        return True
