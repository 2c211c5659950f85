"""The node agent's own small Kubernetes access: login from a kubeconfig, and one list call.

Kopf does the watching and patching; the agent needs two things Kopf does not offer publicly:
credentials from an explicit ``--kubeconfig`` path (Kopf's built-in login reads only
``$KUBECONFIG``, which is process-global and wrong for several agents in one test process), and a
plain list of CrossConnections at startup to find links left behind by objects deleted while the
agent was down. Called by ``sfc_k8s.operator.agent``.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import yaml

XC_GROUP = "sfc-k8s.io"
XC_VERSION = "v1alpha1"
XC_PLURAL = "crossconnections"


class KubeError(Exception):
    """The agent could not read its kubeconfig or list objects from the API server."""


def connection_from_kubeconfig(path: str | os.PathLike[str]) -> kopf.ConnectionInfo:
    """Credentials of the current context of kubeconfig ``path`` (paths resolved beside it)."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise KubeError(f"failed to read kubeconfig {str(path)!r}: {err}") from err
    by_name = {
        kind: {item.get("name"): item.get(kind[:-1]) or {} for item in config.get(kind) or []}
        for kind in ("contexts", "clusters", "users")
    }
    context_name = config.get("current-context")
    if context_name not in by_name["contexts"]:
        raise KubeError(
            f"kubeconfig {str(path)!r}: current-context {context_name!r} is not among its contexts"
        )
    context = by_name["contexts"][context_name]
    cluster = by_name["clusters"].get(context.get("cluster"))
    if not cluster or not cluster.get("server"):
        raise KubeError(
            f"kubeconfig {str(path)!r}: context {context_name!r} names no cluster with a server"
        )
    user = by_name["users"].get(context.get("user")) or {}

    def local(key: str, source: dict[str, Any]) -> str | None:
        value = source.get(key)
        return str(path.parent / value) if value else None

    def data(key: str, source: dict[str, Any]) -> bytes | None:
        value = source.get(key)
        return base64.b64decode(value) if value else None

    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = Path(path.parent / user["tokenFile"]).read_text().strip()
    return kopf.ConnectionInfo(
        server=str(cluster["server"]),
        ca_path=local("certificate-authority", cluster),
        ca_data=data("certificate-authority-data", cluster),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        username=user.get("username"),
        password=user.get("password"),
        scheme="Bearer" if token else None,
        token=token,
        certificate_path=local("client-certificate", user),
        certificate_data=data("client-certificate-data", user),
        private_key_path=local("client-key", user),
        private_key_data=data("client-key-data", user),
        default_namespace=context.get("namespace"),
    )


@contextmanager
def _materialised(blob: str | bytes | None) -> Iterator[str | None]:
    """Certificate/key data as a temporary file (ssl loads client certificates from files)."""
    if blob is None:
        yield None
        return
    with tempfile.NamedTemporaryFile("wb", suffix=".pem") as handle:
        handle.write(blob.encode() if isinstance(blob, str) else blob)
        handle.flush()
        yield handle.name


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if not info.server.startswith("https:"):
        return True
    if info.insecure:
        return False
    cadata = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
    context = ssl.create_default_context(
        cafile=os.fsdecode(info.ca_path) if info.ca_path else None, cadata=cadata
    )
    with (
        _materialised(info.certificate_data) as cert_file,
        _materialised(info.private_key_data) as key_file,
    ):
        cert = cert_file or (os.fsdecode(info.certificate_path) if info.certificate_path else None)
        key = key_file or (os.fsdecode(info.private_key_path) if info.private_key_path else None)
        if cert:
            context.load_cert_chain(cert, key)
    return context


async def list_cross_connections(
    info: kopf.ConnectionInfo, namespaces: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """(namespace, name) of every CrossConnection, in ``namespaces`` or cluster-wide if empty."""
    headers = {"Accept": "application/json"}
    auth = None
    if info.token:
        headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
    elif info.username and info.password:
        auth = aiohttp.BasicAuth(info.username, info.password)
    base = f"{info.server.rstrip('/')}/apis/{XC_GROUP}/{XC_VERSION}"
    urls = [f"{base}/namespaces/{ns}/{XC_PLURAL}" for ns in namespaces] or [f"{base}/{XC_PLURAL}"]
    found: list[tuple[str, str]] = []
    connector = aiohttp.TCPConnector(ssl=_ssl_context(info))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, auth=auth, timeout=timeout
    ) as session:
        for url in urls:
            params = {"limit": "500"}
            while True:
                try:
                    async with session.get(url, params=params) as response:
                        if response.status >= 400:
                            text = await response.text()
                            raise KubeError(
                                f"failed to list {url}: HTTP {response.status}: {text[:200]}"
                            )
                        page = await response.json()
                except aiohttp.ClientError as err:
                    raise KubeError(f"failed to list {url}: {err}") from err
                for item in page.get("items") or []:
                    meta = item.get("metadata") or {}
                    found.append((str(meta.get("namespace")), str(meta.get("name"))))
                cont = (page.get("metadata") or {}).get("continue")
                if not cont:
                    break
                params = {"limit": "500", "continue": cont}
    return found
