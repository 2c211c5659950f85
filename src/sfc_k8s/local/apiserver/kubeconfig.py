"""Kubeconfigs for the local API server: where it is, the CA it is trusted with, a credential.

Apart from `pki.py` so that a plain-HTTP server (the tests' fixture) never imports the
cryptography package. Used by `server.APIServer.write_kubeconfig` and by the local cluster's
`credentials.py`.
"""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

CLUSTER_NAME = "sfc-k8s-local"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_text(
    url: str,
    *,
    ca: Path | None = None,
    client: tuple[Path, Path] | None = None,
    token: str | None = None,
    user: str = CLUSTER_NAME,
    namespace: str = "default",
) -> str:
    """A kubeconfig (YAML) for the server at ``url``: the CA it trusts (embedded), and a
    client certificate and key (embedded) or a bearer token; neither for a server without
    authentication."""
    cluster: dict[str, str] = {"server": url}
    if ca is not None:
        cluster["certificate-authority-data"] = _b64(ca)
    credential: dict[str, str] = {}
    if client is not None:
        credential["client-certificate-data"] = _b64(client[0])
        credential["client-key-data"] = _b64(client[1])
    if token is not None:
        credential["token"] = token
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": cluster}],
        "users": [{"name": user, "user": credential}],
        "contexts": [
            {
                "name": CLUSTER_NAME,
                "context": {"cluster": CLUSTER_NAME, "user": user, "namespace": namespace},
            }
        ],
        "current-context": CLUSTER_NAME,
    }
    return yaml.safe_dump(config, sort_keys=False)
