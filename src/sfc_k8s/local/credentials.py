"""Who is who in the local cluster: the admin's kubeconfig and the operator's service accounts.

`sfc-k8s local up` serves the API over HTTPS with the cluster's own CA and enforces RBAC, as
kind does. This module gives each party its credential: the user gets an admin kubeconfig (the
CA and a client certificate of system:masters, as kind's); the controller and the agents get
kubeconfigs carrying a token of their service account (`sfc-k8s-controller`,
`sfc-k8s-agent` in `sfc-system`), made from `deploy/base`'s RBAC, which `local up` applies as
it is, so that they run with exactly the permissions a real cluster gives them. Tokens come
from the API server's TokenRequest endpoint (what `kubectl create token` calls). Those
kubeconfigs are for `local up --operator processes`; run as pods (the default), the controller
and the agents authenticate in-cluster with their projected tokens. Used by `cli.py`.
"""

from __future__ import annotations

from pathlib import Path

from sfc_k8s.local.apiserver import kubeconfig
from sfc_k8s.local.apiserver import pki as pki_files
from sfc_k8s.local.kube import SyncKube
from sfc_k8s.local.layout import Layout

OPERATOR_NAMESPACE = "sfc-system"
# component -> its service account in deploy/base/rbac.yaml
SERVICE_ACCOUNTS = {"controller": "sfc-k8s-controller", "agent": "sfc-k8s-agent"}
# A local cluster lives long and nothing refreshes these tokens (a later step gives pods
# projected tokens the runtime renews): one year.
TOKEN_SECONDS = 365 * 24 * 3600


def _write_private(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)
    return path


def write_admin_kubeconfig(layout: Layout, server: str) -> Path:
    """The user's kubeconfig: the cluster CA and the admin's client certificate, made with the
    rest of the cluster's PKI if missing."""
    made = pki_files.ensure_pki(layout.pki_dir)
    text = kubeconfig.kubeconfig_text(
        server,
        ca=made.ca_cert,
        client=(made.admin_cert, made.admin_key),
        user=pki_files.ADMIN_USER,
    )
    return _write_private(layout.kubeconfig, text)


def write_component_kubeconfig(
    layout: Layout, admin: SyncKube, component: str, *, service_account: str | None = None
) -> Path:
    """A kubeconfig for ``component`` with a fresh token of its service account (which must
    exist: `deploy/base/rbac.yaml` applied)."""
    account = service_account or SERVICE_ACCOUNTS[component]
    path = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts/{account}/token"
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": TOKEN_SECONDS},
    }
    token = admin.request("POST", path, body=body)["status"]["token"]
    text = kubeconfig.kubeconfig_text(
        admin.conn.server,
        ca=pki_files.PKI(layout.pki_dir).ca_cert,
        token=token,
        user=f"system:serviceaccount:{OPERATOR_NAMESPACE}:{account}",
        namespace=OPERATOR_NAMESPACE,
    )
    return _write_private(layout.component_kubeconfig(component), text)
