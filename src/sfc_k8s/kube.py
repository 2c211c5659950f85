"""The one Kubernetes client plumbing of sfc-k8s: kubeconfig, TLS, an HTTP session, errors.

Used by the operator (``sfc_k8s.operator.kube`` turns a kubeconfig into Kopf's login and gives
the controller and the agent a client for the requests Kopf does not make) and by the local
cluster (``sfc_k8s.local.kube``: the node runtime's async client, the CLI's blocking one). It
depends on nothing of Kopf's, so both sides can build on it.

``Connection`` names its fields as ``kopf.ConnectionInfo`` does, so ``KubeClient`` accepts
either (``ConnectionLike``). Every failure is a ``KubeError``; an ``ApiError`` carries the HTTP
status (0: no answer at all) and the Kubernetes ``Status`` reason, so callers branch on
``status``/``reason`` or on the subclass, never on message text.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import yaml

JsonObj = dict[str, Any]
PathLike = str | bytes | os.PathLike[str] | os.PathLike[bytes]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class KubeError(Exception):
    """Base of every error of the client plumbing."""


class KubeconfigError(KubeError):
    """A kubeconfig could not be read or has no usable current context."""


class ApiError(KubeError):
    """A request failed: ``status`` is the HTTP status (0: no answer), ``reason`` the Status's."""

    def __init__(self, method: str, path: str, status: int, reason: str, message: str) -> None:
        super().__init__(f"{method} {path} failed: HTTP {status} {reason}: {message}")
        self.method, self.path, self.status, self.reason = method, path, status, reason
        self.message = message

    @property
    def retryable(self) -> bool:
        """Server-side or transport trouble, worth retrying; 4xx other than 409/429 are not."""
        return self.status == 0 or self.status >= 500 or self.status in (409, 429)


class NotFoundError(ApiError):
    """404: the object (or the resource type) does not exist."""


class ConflictError(ApiError):
    """409: already exists, or a precondition/resourceVersion did not match."""


class GoneError(ApiError):
    """410: the watch's resourceVersion is too old; list again."""


_BY_STATUS: dict[int, type[ApiError]] = {404: NotFoundError, 409: ConflictError, 410: GoneError}


def api_error(method: str, path: str, status: int, body: bytes, *, reason: str = "") -> ApiError:
    """The ``ApiError`` (subclass by status) for an error response and its body."""
    message = body.decode(errors="replace")
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        reason = str(doc.get("reason") or reason)
        message = str(doc.get("message") or message)
    return _BY_STATUS.get(status, ApiError)(method, path, status, reason, message[:500])


class ConnectionLike(Protocol):
    """What a client needs of a connection: ``Connection`` or ``kopf.ConnectionInfo``."""

    @property
    def server(self) -> str: ...
    @property
    def ca_path(self) -> PathLike | None: ...
    @property
    def ca_data(self) -> str | bytes | None: ...
    @property
    def insecure(self) -> bool | None: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def scheme(self) -> str | None: ...
    @property
    def token(self) -> str | None: ...
    @property
    def certificate_path(self) -> PathLike | None: ...
    @property
    def certificate_data(self) -> str | bytes | None: ...
    @property
    def private_key_path(self) -> PathLike | None: ...
    @property
    def private_key_data(self) -> str | bytes | None: ...


@dataclass(frozen=True, kw_only=True)
class Connection:
    """Where the API server is and how to authenticate (fields as ``kopf.ConnectionInfo``'s)."""

    server: str
    ca_path: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    username: str | None = None
    password: str | None = None
    scheme: str | None = None
    token: str | None = None
    certificate_path: str | None = None
    certificate_data: bytes | None = None
    private_key_path: str | None = None
    private_key_data: bytes | None = None
    default_namespace: str | None = None


def _current_context(path: Path, config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    contexts = {
        item.get("name"): item.get("context") or {} for item in config.get("contexts") or []
    }
    name = config.get("current-context") or next(iter(contexts), None)
    if name not in contexts:
        raise KubeconfigError(
            f"kubeconfig {str(path)!r}: current-context {name!r} is not among its contexts"
        )
    return str(name), contexts[name]


def load_kubeconfig(path: str | os.PathLike[str]) -> Connection:
    """The current context of kubeconfig ``path`` (its first if none is named; paths beside it)."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise KubeconfigError(f"failed to read kubeconfig {str(path)!r}: {err}") from err
    if not isinstance(config, dict):
        raise KubeconfigError(f"kubeconfig {str(path)!r} is not a mapping")
    name, context = _current_context(path, config)
    clusters = {c.get("name"): c.get("cluster") or {} for c in config.get("clusters") or []}
    users = {u.get("name"): u.get("user") or {} for u in config.get("users") or []}
    cluster = clusters.get(context.get("cluster"))
    if not cluster or not cluster.get("server"):
        raise KubeconfigError(
            f"kubeconfig {str(path)!r}: context {name!r} names no cluster with a server"
        )
    user = users.get(context.get("user")) or {}

    def local(key: str, source: Mapping[str, Any]) -> str | None:
        value = source.get(key)
        return str(path.parent / value) if value else None

    def data(key: str, source: Mapping[str, Any]) -> bytes | None:
        value = source.get(key)
        return base64.b64decode(value) if value else None

    token = user.get("token")
    if not token and user.get("tokenFile"):
        try:
            token = (path.parent / user["tokenFile"]).read_text().strip()
        except OSError as err:
            raise KubeconfigError(f"kubeconfig {str(path)!r}: tokenFile: {err}") from err
    return Connection(
        server=str(cluster["server"]).rstrip("/"),
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
def _as_file(blob: str | bytes | None, path: PathLike | None) -> Iterator[str | None]:
    """A file holding ``blob`` for as long as the block runs (else ``path`` as given)."""
    if blob is None:
        yield os.fsdecode(path) if path else None
        return
    with tempfile.NamedTemporaryFile("wb", suffix=".pem") as handle:
        handle.write(blob.encode() if isinstance(blob, str) else blob)
        handle.flush()
        yield handle.name


def ssl_context(conn: ConnectionLike) -> ssl.SSLContext | None:
    """TLS settings for ``conn``; None for a plain-HTTP server."""
    if not conn.server.startswith("https:"):
        return None
    ca_data = conn.ca_data.decode() if isinstance(conn.ca_data, bytes) else conn.ca_data
    context = ssl.create_default_context(
        cafile=os.fsdecode(conn.ca_path) if conn.ca_path else None, cadata=ca_data
    )
    if conn.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with (
        _as_file(conn.certificate_data, conn.certificate_path) as cert,
        _as_file(conn.private_key_data, conn.private_key_path) as key,
    ):
        if cert:
            context.load_cert_chain(cert, key)
    return context


def auth_headers(conn: ConnectionLike) -> dict[str, str]:
    """The ``Authorization`` header for ``conn`` (a token, else basic credentials, else none)."""
    if conn.token:
        return {"Authorization": f"{conn.scheme or 'Bearer'} {conn.token}"}
    if conn.username and conn.password:
        pair = base64.b64encode(f"{conn.username}:{conn.password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    return {}


def query_string(params: Mapping[str, Any]) -> str:
    """``?k=v&...`` with booleans as Kubernetes spells them (``true``/``false``); "" if none."""
    clean = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
    return "?" + urllib.parse.urlencode(clean) if clean else ""


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
        base += f"/namespaces/{urllib.parse.quote(namespace, safe='')}"
    path = f"{base}/{plural}"
    if name:
        path += f"/{urllib.parse.quote(name, safe='')}"
        if subresource:
            path += f"/{subresource}"
    return path


def connector(**options: Any) -> aiohttp.TCPConnector:
    """A TCP connector whose TLS connections never outlive it. Before Python 3.12.8 asyncio
    keeps a TLS connection closed in the middle of a request (a cancelled request) open until
    its peer answers the TLS shutdown, which some never do: aiohttp aborts those when asked
    to (``enable_cleanup_closed``, which it ignores, with a warning, where it is not needed)."""
    cleanup = bool(getattr(aiohttp.connector, "NEEDS_CLEANUP_CLOSED", False))
    return aiohttp.TCPConnector(enable_cleanup_closed=cleanup, **options)


class KubeClient:
    """One aiohttp session to the API server, JSON in and out; open and close in one loop."""

    def __init__(
        self,
        conn: ConnectionLike,
        *,
        timeout: float = 30.0,
        user_agent: str = "sfc-k8s",
        pool: int = 32,
    ) -> None:
        self.conn = conn
        self._timeout = timeout
        self._user_agent = user_agent
        self._pool = pool
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def __aenter__(self) -> KubeClient:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the session (a client opens itself on its first request, too)."""
        if self._session is not None:
            return
        self._closed = False
        headers = {
            "Accept": "application/json",
            "User-Agent": self._user_agent,
            **auth_headers(self.conn),
        }
        context = ssl_context(self.conn)
        self._session = aiohttp.ClientSession(
            headers=headers,
            connector=connector(ssl=context if context is not None else True, limit=self._pool),
            # No total timeout: a request waiting for a free pooled connection is not failing.
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self._timeout, sock_read=self._timeout
            ),
        )

    async def close(self) -> None:
        """Close the session; the client refuses requests from now on (NotConnected)."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _http(self, method: str, path: str) -> aiohttp.ClientSession:
        """The session, opened on first use (in the running loop); none once closed."""
        if self._session is None and not self._closed:
            await self.open()
        if self._session is None:
            raise ApiError(method, path, 0, "NotConnected", "the client is closed")
        return self._session

    def _url(self, path: str, params: Mapping[str, Any] | None) -> str:
        return self.conn.server.rstrip("/") + "/" + path.lstrip("/") + query_string(params or {})

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, Any] | None = None,
    ) -> JsonObj:
        session = await self._http(method, path)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if body is not None else None
        try:
            async with session.request(
                method, self._url(path, params), data=data, headers=headers
            ) as response:
                raw = await response.read()
                if response.status >= 300:
                    raise api_error(
                        method, path, response.status, raw, reason=response.reason or ""
                    )
        except (TimeoutError, aiohttp.ClientError) as err:
            raise ApiError(method, path, 0, type(err).__name__, str(err)) from err
        try:
            result = json.loads(raw) if raw else {}
        except ValueError as err:
            raise ApiError(method, path, response.status, "InvalidJSON", str(err)) from err
        return result if isinstance(result, dict) else {}

    async def get(self, path: str, **params: Any) -> JsonObj:
        return await self.request("GET", path, params=params)

    async def list(self, path: str, *, page_size: int = 500) -> list[JsonObj]:
        """Every item of collection ``path``, following ``continue`` tokens."""
        items: list[JsonObj] = []
        params = {"limit": str(page_size)}
        while True:
            page = await self.request("GET", path, params=params)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params = {"limit": str(page_size), "continue": token}

    async def create(self, collection: str, body: Mapping[str, Any]) -> JsonObj:
        return await self.request("POST", collection, body=body)

    async def patch(self, path: str, body: Any, *, content_type: str = MERGE_PATCH) -> JsonObj:
        return await self.request("PATCH", path, body=body, content_type=content_type)

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> JsonObj:
        return await self.patch(path, patch)

    async def delete(
        self,
        path: str,
        *,
        grace_period_seconds: int | None = None,
        uid: str | None = None,
        propagation_policy: str = "Background",
    ) -> JsonObj:
        """Delete ``path`` with ``DeleteOptions`` built from the keywords given."""
        options: JsonObj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        params: JsonObj = {}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = params["gracePeriodSeconds"] = grace_period_seconds
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        options["propagationPolicy"] = propagation_policy
        return await self.request("DELETE", path, params=params, body=options)

    async def watch(
        self, path: str, *, resource_version: str, timeout_seconds: int = 300, **params: Any
    ) -> AsyncIterator[tuple[str, JsonObj]]:
        """Yield ``(type, object)`` watch events until the server ends the stream."""
        session = await self._http("GET", path)
        query = {
            **params,
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": timeout_seconds,
        }
        try:
            async with session.get(
                self._url(path, query),
                timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30),
            ) as response:
                if response.status >= 300:
                    raise api_error("GET", path, response.status, await response.read())
                while line := await response.content.readline():
                    if line.strip():
                        yield _watch_event(path, json.loads(line))
        except (TimeoutError, aiohttp.ClientError) as err:
            raise ApiError("GET", path, 0, type(err).__name__, str(err)) from err


def _watch_event(path: str, event: JsonObj) -> tuple[str, JsonObj]:
    if event.get("type") == "ERROR":
        status = event.get("object") or {}
        raise api_error("GET", path, int(status.get("code", 500)), json.dumps(status).encode())
    return str(event["type"]), event["object"]
