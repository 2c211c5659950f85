"""The aggregation layer: ``APIService`` objects and the proxy to the servers they register.

As kube-apiserver's aggregator does, a request under ``/apis/GROUP/VERSION`` for which an
``apiregistration.k8s.io/v1`` ``APIService`` named ``VERSION.GROUP`` points to a Service is
forwarded to that Service, path, query and body unchanged (the client's credentials and any
``X-Remote-*`` header left out), and its answer returned as it is;
``/apis`` lists the aggregated groups and ``/apis/GROUP`` describes one from its APIServices.
This is how the built-in metrics provider (``sfc-k8s metrics-provider``) serves
``custom.metrics.k8s.io`` to the local HPA controller and to ``kubectl get --raw``.

The Service is reached as ``--enable-aggregator-routing`` does it: through an address of its
``Endpoints`` (same name), at the endpoint port that the Service's ``spec.service.port`` maps
to (by ``targetPort`` name or number). Always over TLS, verified against ``caBundle`` unless
``insecureSkipTLSVerify``. Without a usable endpoint the answer is a 503 ``ServiceUnavailable``
naming what is missing. ``Available`` is not maintained in the APIService's status.

Hooked in by ``app.Scaffold.make_app`` (``install``: one middleware, after the one that turns
errors into ``Status`` objects); ``resources.BUILTINS`` serves the ``apiservices`` resource.
"""

from __future__ import annotations

import base64
import functools
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

from sfc_k8s.kube import connector
from sfc_k8s.local.apiserver.errors import StatusError
from sfc_k8s.local.apiserver.store import Store

GROUP = "apiregistration.k8s.io"
APISERVICES = (GROUP, "apiservices")
SERVICES = ("", "services")
ENDPOINTS = ("", "endpoints")
PROXY_TIMEOUT = 30.0
# Hop-by-hop and framing headers: never forwarded either way.
_SKIPPED = {"host", "connection", "content-length", "transfer-encoding", "keep-alive"}
# The client's credentials stay here, as with kube-apiserver (which tells the aggregated server
# who asked in X-Remote-* headers of its own; a client's X-Remote-* would be a forgery).
_CREDENTIALS = {"authorization", "proxy-authorization", "cookie"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Backend:
    """Where one aggregated group version is served."""

    url: str  # https://ADDRESS:PORT
    server_name: str  # NAME.NAMESPACE.svc: what its certificate is checked against
    ca_bundle: bytes | None
    insecure: bool


def _service_of(apiservice: Mapping[str, Any]) -> Mapping[str, Any] | None:
    spec = apiservice.get("spec") or {}
    service = spec.get("service")
    return service if isinstance(service, Mapping) and service.get("name") else None


def _target_port(service: Mapping[str, Any], port: int, name: str) -> int | str:
    for entry in (service.get("spec") or {}).get("ports") or []:
        if int(entry.get("port") or 0) == port:
            target = entry.get("targetPort", port)
            return target if isinstance(target, str) else int(target)
    raise StatusError(503, "ServiceUnavailable", f"service {name} has no port {port}")


def _endpoint(endpoints: Mapping[str, Any], target: int | str, name: str) -> tuple[str, int]:
    for subset in endpoints.get("subsets") or []:
        addresses = [a.get("ip") for a in subset.get("addresses") or [] if a.get("ip")]
        for port in subset.get("ports") or []:
            number = int(port.get("port") or 0)
            named = isinstance(target, str) and port.get("name") == target
            if addresses and (named or number == target):
                return str(addresses[0]), number
    raise StatusError(
        503, "ServiceUnavailable", f"no endpoints available for service {name} (port {target})"
    )


class Aggregator:
    """Finds the backend of a path from the stored APIServices and forwards to it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._session: aiohttp.ClientSession | None = None

    def apiservices(self) -> list[Mapping[str, Any]]:
        """The APIServices that point to a Service (local ones are served here already)."""
        return [a for a in self.store.objects(APISERVICES) if _service_of(a) is not None]

    def registered(self, group: str, version: str | None = None) -> list[Mapping[str, Any]]:
        return [
            a
            for a in self.apiservices()
            if (a.get("spec") or {}).get("group") == group
            and (version is None or (a.get("spec") or {}).get("version") == version)
        ]

    def backend(self, apiservice: Mapping[str, Any]) -> Backend:
        """The address of the APIService's Service, through its Endpoints."""
        ref = _service_of(apiservice) or {}
        namespace, name = str(ref.get("namespace") or "default"), str(ref["name"])
        label = f"{namespace}/{name}"
        service = self.store.find(SERVICES, namespace, name)
        if service is None:
            raise StatusError(503, "ServiceUnavailable", f"service {label} not found")
        target = _target_port(service, int(ref.get("port") or 443), label)
        endpoints = self.store.find(ENDPOINTS, namespace, name) or {}
        address, port = _endpoint(endpoints, target, label)
        spec = apiservice.get("spec") or {}
        bundle = spec.get("caBundle")
        host = f"[{address}]" if ":" in address else address
        return Backend(
            url=f"https://{host}:{port}",
            server_name=f"{name}.{namespace}.svc",
            ca_bundle=base64.b64decode(bundle) if bundle else None,
            insecure=bool(spec.get("insecureSkipTLSVerify")),
        )

    async def proxy(self, request: web.Request, apiservice: Mapping[str, Any]) -> web.Response:
        backend = self.backend(apiservice)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=connector(), timeout=aiohttp.ClientTimeout(total=PROXY_TIMEOUT)
            )
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in _SKIPPED | _CREDENTIALS and not k.lower().startswith("x-remote-")
        }
        body = await request.read() if request.can_read_body else None
        try:
            async with self._session.request(
                request.method,
                backend.url + request.path_qs,
                headers=headers,
                data=body,
                ssl=_client_context(backend),
                server_hostname=None if backend.insecure else backend.server_name,
            ) as answer:
                payload = await answer.read()
                kept = {k: v for k, v in answer.headers.items() if k.lower() not in _SKIPPED}
                return web.Response(body=payload, status=answer.status, headers=kept)
        except (TimeoutError, aiohttp.ClientError) as err:
            name = (apiservice.get("metadata") or {}).get("name")
            raise StatusError(
                503, "ServiceUnavailable", f"error trying to reach service {name}: {err}"
            ) from err

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def group_entries(self) -> list[dict[str, Any]]:
        """``/apis`` entries of the aggregated groups, versions by descending priority."""
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for apiservice in self.apiservices():
            groups.setdefault(str((apiservice.get("spec") or {}).get("group")), []).append(
                apiservice
            )
        return [group_entry(name, services) for name, services in sorted(groups.items())]


def group_entry(group: str, services: list[Mapping[str, Any]]) -> dict[str, Any]:
    def priority(a: Mapping[str, Any]) -> tuple[int, str]:
        spec = a.get("spec") or {}
        return (-int(spec.get("versionPriority") or 0), str(spec.get("version")))

    versions = [
        {"groupVersion": f"{group}/{v}", "version": v}
        for v in dict.fromkeys(
            str((a.get("spec") or {}).get("version")) for a in sorted(services, key=priority)
        )
    ]
    return {"name": group, "versions": versions, "preferredVersion": versions[0]}


@functools.cache
def _client_context(backend: Backend) -> ssl.SSLContext:
    """One context per backend (making one loads the system's CA store: milliseconds), so the
    session also reuses its connections."""
    if backend.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    cadata = backend.ca_bundle.decode() if backend.ca_bundle else None
    return ssl.create_default_context(cadata=cadata)


def _split(path: str) -> tuple[str, str | None]:
    """(group, version or None) of a path under ``/apis/``; ("", None) otherwise."""
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2 or parts[0] != "apis":
        return "", None
    return parts[1], parts[2] if len(parts) > 2 else None


def install(app: web.Application, store: Store) -> None:
    """Route the aggregated groups of ``store``'s APIServices through ``app``."""
    aggregator = Aggregator(store)
    app.middlewares.append(_middleware(aggregator))

    async def close(_: web.Application) -> None:
        await aggregator.close()

    app.on_cleanup.append(close)


def _middleware(aggregator: Aggregator) -> Middleware:
    """Requests under an aggregated group go to its server; ``/apis`` lists its groups."""

    @web.middleware
    async def aggregate(request: web.Request, handler: Handler) -> web.StreamResponse:
        group, version = _split(request.path)
        if not group:
            response = await handler(request)
            if request.path.rstrip("/") == "/apis" and isinstance(response, web.Response):
                return _with_groups(response, aggregator.group_entries())
            return response
        services = aggregator.registered(group, version)
        if not services:
            return await handler(request)
        if version is None:
            entry = group_entry(group, list(services))
            return web.json_response({"kind": "APIGroup", "apiVersion": "v1", **entry})
        return await aggregator.proxy(request, services[0])

    return aggregate


def _with_groups(response: web.Response, entries: list[dict[str, Any]]) -> web.Response:
    if not entries or response.status != 200 or not isinstance(response.body, bytes):
        return response
    document = json.loads(response.body)
    known = {g.get("name") for g in document.get("groups") or []}
    document["groups"] = [
        *(document.get("groups") or []),
        *(e for e in entries if e["name"] not in known),
    ]
    return web.json_response(document)
