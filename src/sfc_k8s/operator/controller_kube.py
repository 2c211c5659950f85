"""The controller's HTTP access to the Kubernetes API: create, patch, delete, get, post events.

Kopf watches and indexes; writes to objects other than the one being handled need a client Kopf
does not expose publicly, so the controller uses this small aiohttp one, built from the same
``kopf.ConnectionInfo`` Kopf logs in with. Errors become ``KubeApiError`` carrying the HTTP
status and the Kubernetes ``Status`` reason, so callers branch on ``status``/``reason``, never on
message text. Called by ``sfc_k8s.operator.controller``.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

MERGE_PATCH = "application/merge-patch+json"


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

    def __init__(self, info: kopf.ConnectionInfo, *, timeout: float = 30.0) -> None:
        self.info = info
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        headers = {"Accept": "application/json", "User-Agent": "sfc-k8s-controller"}
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

    async def create(self, collection: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", collection, body=body)

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def delete(self, path: str) -> None:
        await self.request("DELETE", path, body={"propagationPolicy": "Background"})
