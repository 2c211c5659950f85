"""A small Kubernetes API client for the local cluster's own processes.

Used by the node runtime (async: watch pods, patch status, post events) and by ``sfc-k8s local``
and ``sfc-k8s demo`` (sync: a few reads). It speaks plain HTTP(S) + JSON to whatever the
kubeconfig points at, so it works against the local API server and a real one alike, and it
depends on nothing of Kopf's.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

JsonObj = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class KubeError(Exception):
    """Base of every error of this client."""


class KubeconfigError(KubeError):
    """The kubeconfig is missing or unusable."""


class ApiError(KubeError):
    """The API server answered with a non-2xx status (a Kubernetes ``Status`` when it can)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"HTTP {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFoundError(ApiError):
    """404: the object (or the resource type) does not exist."""


class ConflictError(ApiError):
    """409: already exists, or a precondition/resourceVersion did not match."""


class GoneError(ApiError):
    """410: the watch's resourceVersion is too old; list again."""


def api_error(status: int, body: bytes) -> ApiError:
    """Build the right ``ApiError`` subclass from a response status and body."""
    reason, message = "", body.decode(errors="replace")[:500]
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        reason = str(doc.get("reason", ""))
        message = str(doc.get("message", message))
    by_status: dict[int, type[ApiError]] = {404: NotFoundError, 409: ConflictError, 410: GoneError}
    cls = by_status.get(status, ApiError)
    return cls(status, reason, message)


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate, read from a kubeconfig."""

    server: str
    token: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.server.startswith("https:"):
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def _materialise(entry: Mapping[str, Any], key: str, base: Path) -> str | None:
    """A file path for ``key`` (``key`` as a path, or ``key-data`` base64 written to a file)."""
    if entry.get(key):
        path = Path(str(entry[key]))
        return str(path if path.is_absolute() else base / path)
    data = entry.get(f"{key}-data")
    if not data:
        return None
    fd, name = tempfile.mkstemp(prefix="sfc-k8s-kubeconfig-")
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64decode(str(data)))
    return name


def load_kubeconfig(path: str | os.PathLike[str]) -> Connection:
    """The current context's cluster and user of the kubeconfig at ``path``."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise KubeconfigError(f"cannot read kubeconfig {str(path)!r}: {err}") from err
    try:
        contexts = {c["name"]: c["context"] for c in doc.get("contexts") or []}
        clusters = {c["name"]: c["cluster"] for c in doc.get("clusters") or []}
        users = {u["name"]: u.get("user") or {} for u in doc.get("users") or []}
        current = doc.get("current-context") or next(iter(contexts))
        context = contexts[current]
        cluster = clusters[context["cluster"]]
        user = users.get(context.get("user", ""), {})
    except (KeyError, TypeError, StopIteration, AttributeError) as err:
        raise KubeconfigError(
            f"kubeconfig {str(path)!r} has no usable current context/cluster: {err!r}"
        ) from err
    return Connection(
        server=str(cluster["server"]).rstrip("/"),
        token=user.get("token"),
        ca_file=_materialise(cluster, "certificate-authority", path.parent),
        cert_file=_materialise(user, "client-certificate", path.parent),
        key_file=_materialise(user, "client-key", path.parent),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
    )


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


def _query(params: Mapping[str, Any]) -> str:
    clean = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
    return "?" + urllib.parse.urlencode(clean) if clean else ""


class AsyncKube:
    """Async client: one aiohttp session, JSON in and out, errors as ``ApiError``."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncKube:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            ctx = self.conn.ssl_context()
            connector = aiohttp.TCPConnector(ssl=ctx if ctx is not None else False, limit=64)
            self._session = aiohttp.ClientSession(connector=connector, headers=self.conn.headers())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> JsonObj:
        url = self.conn.server + path + _query(params or {})
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        try:
            async with self._http().request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                raw = await resp.read()
                if resp.status >= 300:
                    raise api_error(resp.status, raw)
        except (aiohttp.ClientError, TimeoutError) as err:
            raise KubeError(f"{method} {url} failed: {err!r}") from err
        result: JsonObj = json.loads(raw) if raw else {}
        return result

    async def get(self, path: str, **params: Any) -> JsonObj:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: JsonObj) -> JsonObj:
        return await self.request("POST", path, body=body)

    async def patch(self, path: str, body: Any, *, content_type: str = MERGE_PATCH) -> JsonObj:
        return await self.request("PATCH", path, body=body, content_type=content_type)

    async def delete(
        self, path: str, *, grace_period_seconds: int | None = None, uid: str | None = None
    ) -> JsonObj:
        options: JsonObj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        params = {}
        if grace_period_seconds is not None:
            params["gracePeriodSeconds"] = grace_period_seconds
        return await self.request("DELETE", path, params=params, body=options)

    async def watch(
        self, path: str, *, resource_version: str, timeout_seconds: int = 300, **params: Any
    ) -> AsyncIterator[tuple[str, JsonObj]]:
        """Yield ``(type, object)`` watch events until the server ends the stream."""
        query = {
            **params,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_seconds,
        }
        url = self.conn.server + path + _query(query)
        try:
            async with self._http().get(
                url,
                headers={"Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30),
            ) as resp:
                if resp.status >= 300:
                    raise api_error(resp.status, await resp.read())
                while True:
                    line = await resp.content.readline()
                    if not line:
                        return
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise api_error(int(status.get("code", 500)), json.dumps(status).encode())
                    yield str(event["type"]), event["object"]
        except (TimeoutError, aiohttp.ClientError) as err:
            raise KubeError(f"watch {url} failed: {err!r}") from err


class SyncKube:
    """Blocking client for the CLI and the demo (stdlib only, a handful of calls)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._ctx = conn.ssl_context()

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
        url = self.conn.server + path + _query(params or {})
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        req.add_header("Content-Type", content_type)
        for key, value in self.conn.headers().items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ctx) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raise api_error(err.code, err.read()) from err
        except (urllib.error.URLError, OSError) as err:
            raise KubeError(f"{method} {url} failed: {err}") from err
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
