"""The operator's own small access to the Kubernetes API, shared by the controller and the agent.

Kopf watches, indexes and patches the objects it handles. The operator needs two more things
that Kopf does not offer publicly: credentials from an explicit ``--kubeconfig`` path (Kopf's
built-in login reads only ``$KUBECONFIG``, which is process-global and wrong for several agents
in one test process), and a client for other requests (the controller's writes to
CrossConnections and events, the agent's list of CrossConnections at start-up). Both come from
the same ``kopf.ConnectionInfo``. Errors become ``KubeApiError`` carrying the HTTP status and the
Kubernetes ``Status`` reason, so callers branch on ``status``/``reason``, never on message text.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf
import yaml

MERGE_PATCH = "application/merge-patch+json"


class KubeconfigError(Exception):
    """A kubeconfig could not be read or has no usable current context."""


def connection_from_kubeconfig(path: str | os.PathLike[str]) -> kopf.ConnectionInfo:
    """Credentials of the current context of kubeconfig ``path`` (paths resolved beside it)."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise KubeconfigError(f"failed to read kubeconfig {str(path)!r}: {err}") from err
    by_name = {
        kind: {item.get("name"): item.get(kind[:-1]) or {} for item in config.get(kind) or []}
        for kind in ("contexts", "clusters", "users")
    }
    context_name = config.get("current-context")
    if context_name not in by_name["contexts"]:
        raise KubeconfigError(
            f"kubeconfig {str(path)!r}: current-context {context_name!r} is not among its contexts"
        )
    context = by_name["contexts"][context_name]
    cluster = by_name["clusters"].get(context.get("cluster"))
    if not cluster or not cluster.get("server"):
        raise KubeconfigError(
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


class KubeApiError(Exception):
    """An API request failed; ``status`` is the HTTP status (0: no response)."""

    def __init__(self, method: str, path: str, status: int, reason: str, message: str) -> None:
        self.method, self.path, self.status, self.reason = method, path, status, reason
        self.detail = message
        super().__init__(f"{method} {path} failed: HTTP {status} {reason}: {message}")

    @property
    def retryable(self) -> bool:
        """Server-side or transport trouble, worth retrying; 4xx other than 409/429 are not."""
        return self.status == 0 or self.status >= 500 or self.status in (409, 429)


def object_path(
    group: str,
    version: str,
    plural: str,
    namespace: str | None,
    *,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """``/apis/G/V/namespaces/NS/PLURAL[/NAME[/SUB]]`` (``/api/v1/...`` for the core group)."""
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    if namespace:
        base += f"/namespaces/{quote(namespace, safe='')}"
    path = f"{base}/{plural}"
    if name:
        path += f"/{quote(name, safe='')}"
        if subresource:
            path += f"/{subresource}"
    return path


@contextmanager
def _as_file(blob: str | bytes | None) -> Iterator[str | None]:
    if blob is None:
        yield None
        return
    with tempfile.NamedTemporaryFile("wb", suffix=".pem") as handle:
        handle.write(blob.encode() if isinstance(blob, str) else blob)
        handle.flush()
        yield handle.name


def ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    """TLS settings for ``info`` (True: plain default for http URLs, False: verification off)."""
    if not info.server.startswith("https:"):
        return True
    if info.insecure:
        return False
    ca_data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
    context = ssl.create_default_context(
        cafile=os.fsdecode(info.ca_path) if info.ca_path else None, cadata=ca_data
    )
    with _as_file(info.certificate_data) as cert_file, _as_file(info.private_key_data) as key_file:
        cert = cert_file or (os.fsdecode(info.certificate_path) if info.certificate_path else None)
        key = key_file or (os.fsdecode(info.private_key_path) if info.private_key_path else None)
        if cert:
            context.load_cert_chain(cert, key)
    return context


class KubeClient:
    """One aiohttp session to the API server; open in the operator's loop, close at cleanup."""

    def __init__(
        self, info: kopf.ConnectionInfo, *, timeout: float = 30.0, user_agent: str = "sfc-k8s"
    ) -> None:
        self.info = info
        self._timeout = timeout
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        headers = {"Accept": "application/json", "User-Agent": self._user_agent}
        auth = None
        if self.info.token:
            headers["Authorization"] = f"{self.info.scheme or 'Bearer'} {self.info.token}"
        elif self.info.username and self.info.password:
            auth = aiohttp.BasicAuth(self.info.username, self.info.password)
        self._session = aiohttp.ClientSession(
            base_url=self.info.server.rstrip("/") + "/",
            headers=headers,
            auth=auth,
            connector=aiohttp.TCPConnector(ssl=ssl_context(self.info), limit=32),
            # No total timeout: a request waiting for a free pooled connection is not failing.
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self._timeout, sock_read=self._timeout
            ),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        if self._session is None:
            raise KubeApiError(method, path, 0, "NotConnected", "the client is not open")
        headers = {"Content-Type": content_type} if body is not None else None
        try:
            async with self._session.request(
                method, path.lstrip("/"), json=body, headers=headers, params=params
            ) as response:
                if response.status >= 400:
                    reason, message = response.reason or "", await response.text()
                    try:
                        status = await response.json(content_type=None)
                        reason = str(status.get("reason") or reason)
                        message = str(status.get("message") or message)
                    except ValueError:
                        pass
                    raise KubeApiError(method, path, response.status, reason, message[:500])
                data = await response.json(content_type=None)
                return data if isinstance(data, dict) else {}
        except (TimeoutError, aiohttp.ClientError) as err:
            raise KubeApiError(method, path, 0, type(err).__name__, str(err)) from err

    async def get(self, path: str) -> dict[str, Any]:
        return await self.request("GET", path)

    async def list(self, path: str, *, page_size: int = 500) -> list[dict[str, Any]]:
        """Every item of collection ``path``, following ``continue`` tokens."""
        items: list[dict[str, Any]] = []
        params = {"limit": str(page_size)}
        while True:
            page = await self.request("GET", path, params=params)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params = {"limit": str(page_size), "continue": token}

    async def create(self, collection: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", collection, body=body)

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def delete(self, path: str) -> None:
        await self.request("DELETE", path, body={"propagationPolicy": "Background"})
