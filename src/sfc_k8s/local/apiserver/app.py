"""The stateless HTTP scaffold of the local API server (aiohttp).

Parses Kubernetes API URLs (`/api/v1/namespaces/NS/pods/NAME/status`...), serves discovery
(`/version`, `/api`, `/apis`, group versions) from the registry, negotiates JSON or `Table`
output, streams watches, and turns `StatusError`s into `Status` objects. Everything stateful is
delegated to the `Store`. Created by `server.APIServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from sfc_k8s.local.apiserver import aggregator, errors, openapi, protobuf, tables
from sfc_k8s.local.apiserver.errors import StatusError
from sfc_k8s.local.apiserver.requestmetrics import METRICS_PATH, RequestCounts
from sfc_k8s.local.apiserver.resources import VERBS, ResourceType
from sfc_k8s.local.apiserver.store import (
    PATCH_APPLY,
    Event,
    Obj,
    Store,
    Watcher,
    meta,
)

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

KUBERNETES_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-sfc-k8s-local",
    "gitCommit": "",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "python",
    "compiler": "cpython",
    "platform": "linux/amd64",
}
DEFAULT_WATCH_TIMEOUT = 1800.0
BOOKMARK_INTERVAL = 10.0
LOG_POLL_SECONDS = 0.2
_NAMESPACE_SUBRESOURCES = ("status", "finalize")


@dataclass(frozen=True)
class Target:
    """What a resource URL addresses."""

    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def _segments(path: str) -> str:
    """``path`` without empty segments (``a//b/`` -> ``a/b``)."""
    return "/".join(p for p in path.split("/") if p)


def _api_versions(request: web.Request) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}],
    }


def _write_flags(request: web.Request) -> dict[str, bool]:
    """``dry_run`` and ``strict`` of a write, from ``?dryRun=All`` and ``?fieldValidation=``."""
    query = request.query
    dry_run = "All" in query.getall("dryRun", [])
    return {"dry_run": dry_run, "strict": query.get("fieldValidation") == "Strict"}


def _wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return any("as=Table" in part for part in accept.split(","))


class Scaffold:
    """Routes requests to the store; one instance per server."""

    def __init__(
        self,
        store: Store,
        *,
        pod_log_dir: Path | None = None,
        middlewares: Sequence[Any] = (),  # aiohttp middlewares
        routes: Sequence[tuple[str, str, Handler]] = (),
    ) -> None:
        """`middlewares` run inside the one turning errors into `Status` objects (so they may
        raise `StatusError`); `routes` (method, path, handler) are matched before the resource
        URLs. The access check (`access.py`) comes in through both."""
        self.store = store
        self.pod_log_dir = pod_log_dir
        self._middlewares = tuple(middlewares)
        self._routes = tuple(routes)
        # Requests answered by a stream that lasts (watches, `logs -f`): what stopping ends.
        self.streams: dict[int, web.Request] = {}
        self.counts = RequestCounts()  # served at /metrics

    def abort_streams(self) -> int:
        """Drop the connection of every open stream (the server is stopping); a stream whose
        client does not read would otherwise hold its handler on a full socket buffer."""
        count = 0
        for request in list(self.streams.values()):
            transport = request.transport
            if transport is not None and not transport.is_closing():
                transport.abort()
                count += 1
        self.streams.clear()
        return count

    def make_app(self) -> web.Application:
        """Discovery routes by path, resource URLs by their API prefix, 404 for the rest; every
        handler's `StatusError` becomes a `Status` response (the middleware)."""
        app = web.Application(
            client_max_size=64 * 1024 * 1024,
            middlewares=[self.counts.middleware, self._statuses, *self._middlewares],
        )
        aggregator.install(app, self.store)
        router = app.router
        router.add_get(METRICS_PATH, self.counts.serve, allow_head=False)
        for method, path, handler in self._routes:
            router.add_route(method, path, handler)
        for path, handler in self._discovery_routes():
            # A trailing slash addresses the same document, as in Kubernetes.
            for variant in dict.fromkeys((path, path.rstrip("/") + "/")):
                router.add_get(variant, handler, allow_head=False)
        router.add_route("*", "/api/{version}/{rest:.+}", self._core_resource)
        router.add_route("*", "/apis/{group}/{version}/{rest:.+}", self._group_resource)
        router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    @web.middleware
    async def _statuses(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except StatusError as err:
            return _json(err.status(), err.code)
        except Exception as err:
            logger.exception("internal error serving %s %s", request.method, request.path)
            failure = StatusError(
                500,
                "InternalError",
                f"an error on the server ({err!r}) has prevented the request from succeeding",
            )
            return _json(failure.status(), 500)

    # ----- discovery ---------------------------------------------------------------------------

    def _discovery_routes(self) -> list[tuple[str, Handler]]:
        def document(build: Callable[[web.Request], Any]) -> Handler:
            async def serve(request: web.Request) -> web.StreamResponse:
                return _json(build(request))

            return serve

        registry = self.store.registry
        return [
            ("/version", document(lambda _: KUBERNETES_VERSION)),
            *((path, self._ok) for path in ("/healthz", "/readyz", "/livez")),
            ("/api", document(_api_versions)),
            ("/apis", document(lambda _: self._group_list())),
            ("/apis/{group}", document(lambda r: self._group(r.match_info["group"]))),
            ("/api/v1", document(lambda _: self._resource_list("", "v1"))),
            (
                "/apis/{group}/{version}",
                document(
                    lambda r: self._resource_list(r.match_info["group"], r.match_info["version"])
                ),
            ),
            ("/openapi/v2", self._swagger),
            ("/openapi/v3", document(lambda _: openapi.root(registry))),
            (
                "/openapi/v3/{rest:.+}",
                document(
                    lambda r: openapi.group_version(registry, _segments(r.match_info["rest"]))
                ),
            ),
        ]

    @staticmethod
    async def _ok(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def _swagger(self, request: web.Request) -> web.StreamResponse:
        if "protobuf" in request.headers.get("Accept", ""):
            return web.Response(
                body=openapi.SWAGGER_PROTOBUF, content_type=openapi.SWAGGER_PROTOBUF_TYPE
            )
        return _json(openapi.swagger(self.store.registry))

    @staticmethod
    async def _not_found(request: web.Request) -> web.StreamResponse:
        raise errors.resource_not_found(request.path)

    async def _core_resource(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        rest = [p for p in info["rest"].split("/") if p]
        return await self._serve(request, self._target("", info["version"], rest, request.path))

    async def _group_resource(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        rest = [p for p in info["rest"].split("/") if p]
        target = self._target(info["group"], info["version"], rest, request.path)
        return await self._serve(request, target)

    def _group_entry(self, group: str, versions: list[str]) -> dict[str, Any]:
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    def _group_list(self) -> dict[str, Any]:
        groups = [
            self._group_entry(g, vs) for g, vs in sorted(self.store.registry.groups().items()) if g
        ]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _group(self, group: str) -> dict[str, Any]:
        versions = self.store.registry.groups().get(group)
        if not versions or not group:
            raise errors.resource_not_found(f"/apis/{group}")
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group_entry(group, versions)}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        types = self.store.registry.in_group_version(group, version)
        if not types:
            raise errors.resource_not_found(f"/apis/{group}/{version}")
        resources: list[dict[str, Any]] = []
        for rtype in sorted(types, key=lambda t: t.plural):
            entry: dict[str, Any] = {
                "name": rtype.plural,
                "singularName": rtype.singular_name(),
                "namespaced": rtype.namespaced,
                "kind": rtype.kind,
                "verbs": list(VERBS),
            }
            if rtype.short_names:
                entry["shortNames"] = list(rtype.short_names)
            if rtype.categories:
                entry["categories"] = list(rtype.categories)
            resources.append(entry)
            for sub in sorted(rtype.subresources):
                sub_kind = "Scale" if sub == "scale" else rtype.kind
                verbs = {"binding": ["create"], "log": ["get"]}.get(sub, ["get", "patch", "update"])
                resources.append(
                    {
                        "name": f"{rtype.plural}/{sub}",
                        "singularName": "",
                        "namespaced": rtype.namespaced,
                        "kind": sub_kind,
                        "verbs": verbs,
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    # ----- resource URLs -----------------------------------------------------------------------

    def _target(self, group: str, version: str, rest: list[str], path: str) -> Target:
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in _NAMESPACE_SUBRESOURCES:
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise errors.resource_not_found(path)
        rtype = self.store.registry.get(group, version, rest[0])
        if rtype is None:
            raise errors.resource_not_found(path)
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if namespace is not None and not rtype.namespaced:
            raise errors.resource_not_found(path)
        if rtype.namespaced and namespace is None and name is not None:
            raise errors.resource_not_found(path)
        if sub and sub not in rtype.subresources:
            raise errors.resource_not_found(path)
        return Target(rtype, namespace, name, sub)

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if "protobuf" in ctype:
            try:
                return protobuf.decode(raw)
            except protobuf.ProtobufError as err:
                raise errors.StatusError(415, "UnsupportedMediaType", str(err)) from err
        try:
            return json.loads(raw)
        except ValueError:
            if "yaml" not in ctype:
                raise errors.bad_request("the request body is not valid JSON") from None
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise errors.bad_request(f"the request body is not valid YAML: {err}") from err

    async def _serve(self, request: web.Request, target: Target) -> web.StreamResponse:
        if target.name is None:
            return await self._serve_collection(request, target)
        if target.subresource == "scale":
            return await self._scale(request, target)
        if target.subresource in ("log", "binding"):
            return await self._serve_action(request, target)
        serve = {
            "GET": self._get,
            "PUT": self._put,
            "PATCH": self._patch,
            "DELETE": self._delete,
        }.get(request.method)
        if serve is None:
            raise errors.method_not_allowed(request.method, target.rtype.plural)
        return await serve(request, target)

    async def _serve_collection(self, request: web.Request, target: Target) -> web.StreamResponse:
        method, rtype, query = request.method, target.rtype, request.query
        if method == "GET":
            if query.get("watch") in ("true", "1"):
                return await self._watch(request, target)
            return self._list(request, target)
        if method == "POST":
            body = await self._body(request)
            obj = self.store.create(rtype, target.namespace, body, **_write_flags(request))
            return _json(obj, 201)
        if method == "DELETE":
            return self._delete_collection(request, target, await self._body(request))
        raise errors.method_not_allowed(method, rtype.plural)

    async def _serve_action(self, request: web.Request, target: Target) -> web.StreamResponse:
        """The `log` (GET) and `binding` (POST) subresources of pods."""
        wanted = "GET" if target.subresource == "log" else "POST"
        if request.method != wanted:
            raise errors.method_not_allowed(
                request.method, f"{target.rtype.plural}/{target.subresource}"
            )
        if target.subresource == "log":
            return await self._log(request, target)
        return self._bind(target, await self._body(request))

    async def _get(self, request: web.Request, target: Target) -> web.StreamResponse:
        if not target.subresource and request.query.get("watch") in ("true", "1"):
            return await self._watch(request, target)  # the old per-object watch URL
        obj = self.store.get(target.rtype, target.namespace, target.name or "")
        if _wants_table(request) and not target.subresource:
            return _json(
                tables.table(
                    target.rtype,
                    [obj],
                    resource_version=str(self.store.resource_version),
                    include_object=request.query.get("includeObject", "Metadata"),
                )
            )
        return _json(obj)

    async def _put(self, request: web.Request, target: Target) -> web.StreamResponse:
        body = await self._body(request)
        obj = self.store.replace(
            target.rtype,
            target.namespace,
            target.name or "",
            body,
            subresource=target.subresource,
            **_write_flags(request),
        )
        return _json(obj)

    async def _patch(self, request: web.Request, target: Target) -> web.StreamResponse:
        store, rtype, name = self.store, target.rtype, target.name or ""
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        body = await self._body(request)
        flags = _write_flags(request)
        namespace = target.namespace if rtype.namespaced else None
        if ctype == PATCH_APPLY and store.find(rtype.key, namespace, name) is None:
            # Server-side apply of an object that does not exist yet creates it.
            if isinstance(body, dict):
                body.setdefault("metadata", {})["name"] = name
            return _json(store.create(rtype, target.namespace, body, **flags), 201)
        obj = store.patch(
            rtype, target.namespace, name, ctype, body, subresource=target.subresource, **flags
        )
        return _json(obj)

    async def _delete(self, request: web.Request, target: Target) -> web.StreamResponse:
        if target.subresource:
            raise errors.method_not_allowed(
                request.method, f"{target.rtype.plural}/{target.subresource}"
            )
        options = self._delete_options(request.query, await self._body(request))
        dry_run = _write_flags(request)["dry_run"]
        return _json(
            self.store.delete(
                target.rtype, target.namespace, target.name or "", options, dry_run=dry_run
            )
        )

    @staticmethod
    def _delete_options(query: Mapping[str, str], body: Any) -> dict[str, Any]:
        options: dict[str, Any] = dict(body) if isinstance(body, dict) else {}
        if "gracePeriodSeconds" in query:
            try:
                options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
            except ValueError as err:
                raise errors.bad_request("gracePeriodSeconds must be an integer") from err
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        return options

    def _delete_collection(self, request: web.Request, target: Target, body: Any) -> web.Response:
        store, rtype = self.store, target.rtype
        items, _ = store.list_objects(
            rtype,
            target.namespace,
            label_selector=request.query.get("labelSelector", ""),
            field_selector=request.query.get("fieldSelector", ""),
        )
        options = self._delete_options(request.query, body)
        deleted = []
        for obj in items:
            with contextlib.suppress(StatusError):
                deleted.append(
                    store.delete(rtype, meta(obj).get("namespace"), meta(obj)["name"], options)
                )
        return _json(
            {
                "kind": rtype.list_kind,
                "apiVersion": rtype.api_version,
                "metadata": {"resourceVersion": str(store.resource_version)},
                "items": deleted,
            }
        )

    def _list(self, request: web.Request, target: Target) -> web.Response:
        rtype = target.rtype
        items, rv = self.store.list_objects(
            rtype,
            target.namespace,
            label_selector=request.query.get("labelSelector", ""),
            field_selector=request.query.get("fieldSelector", ""),
        )
        if _wants_table(request):
            return _json(
                tables.table(
                    rtype,
                    items,
                    resource_version=str(rv),
                    include_object=request.query.get("includeObject", "Metadata"),
                )
            )
        return _json(
            {
                "kind": rtype.list_kind,
                "apiVersion": rtype.api_version,
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            }
        )

    # ----- watch -------------------------------------------------------------------------------

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        rtype, query = target.rtype, request.query
        fields = query.get("fieldSelector", "")
        if target.name is not None:
            fields = ",".join(f for f in (fields, f"metadata.name={target.name}") if f)
        predicate = self.store.predicate(
            rtype, target.namespace, query.get("labelSelector", ""), fields
        )
        try:
            timeout = float(query.get("timeoutSeconds", DEFAULT_WATCH_TIMEOUT))
        except ValueError as err:
            raise errors.bad_request("timeoutSeconds must be a number") from err
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        as_table = _wants_table(request)
        include = query.get("includeObject", "Metadata")
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache"}
        )
        response.enable_chunked_encoding()
        try:
            initial, watcher = self.store.watch(rtype, predicate, query.get("resourceVersion"))
        except StatusError as err:
            if err.code != 410:
                raise
            await response.prepare(request)
            await self._write(response, {"type": "ERROR", "object": err.status()})
            return response
        first_row = [True]
        logger.debug(
            "watch %s from %s: %d initial events",
            request.path_qs,
            query.get("resourceVersion"),
            len(initial),
        )

        def render(event: Event) -> dict[str, Any]:
            self.counts.watch_event(rtype.group, rtype.plural)
            obj: Obj = self.store.present(rtype, event.obj)
            if as_table:
                obj = tables.table(
                    rtype,
                    [obj],
                    resource_version=str(event.rv),
                    include_object=include,
                    with_columns=first_row[0],
                )
                first_row[0] = False
            return {"type": event.type, "object": obj}

        self.streams[id(request)] = request
        try:
            await response.prepare(request)
            for event in initial:
                await self._write(response, render(event))
            if query.get("sendInitialEvents") == "true" and bookmarks:
                await self._write(response, self._bookmark(rtype, initial_end=True))
            closed = await self._follow(
                response, watcher, render, timeout=timeout, bookmarks=bookmarks, rtype=rtype
            )
            if bookmarks and not closed:
                await self._write(response, self._bookmark(rtype))
        except ConnectionResetError:
            return response
        finally:
            self.streams.pop(id(request), None)
            self.store.unwatch(watcher)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _follow(
        self,
        response: web.StreamResponse,
        watcher: Watcher,
        render: Callable[[Event], dict[str, Any]],
        *,
        timeout: float,
        bookmarks: bool,
        rtype: ResourceType,
    ) -> bool:
        """Write ``watcher``'s changes until ``timeout`` passes (False) or the store closes the
        watch (True), with a bookmark after each quiet ``BOOKMARK_INTERVAL`` if asked."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            while watcher.pending:
                change = watcher.pending.popleft()
                if change is None:
                    return True
                await self._write(response, render(change))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            watcher.ready.clear()
            if watcher.pending:
                continue
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that arrives as the waited-for event fires.
                async with asyncio.timeout(min(remaining, BOOKMARK_INTERVAL)):
                    await watcher.ready.wait()
            except TimeoutError:
                if bookmarks and not watcher.pending and loop.time() < deadline:
                    await self._write(response, self._bookmark(rtype))

    def _bookmark(self, rtype: ResourceType, *, initial_end: bool = False) -> dict[str, Any]:
        md: dict[str, Any] = {"resourceVersion": str(self.store.resource_version)}
        if initial_end:
            md["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {
            "type": "BOOKMARK",
            "object": {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": md},
        }

    @staticmethod
    async def _write(response: web.StreamResponse, event: dict[str, Any]) -> None:
        await response.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")

    # ----- subresources ------------------------------------------------------------------------

    def _scale_of(self, obj: Obj) -> dict[str, Any]:
        md = meta(obj)
        selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: md[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in md
            },
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
            },
        }

    async def _scale(self, request: web.Request, target: Target) -> web.Response:
        from sfc_k8s.local.apiserver.patches import (
            PatchError,
            json_patch,
            merge_patch,
            strategic_merge_patch,
        )
        from sfc_k8s.local.apiserver.store import PATCH_JSON, PATCH_MERGE, PATCH_STRATEGIC

        store, rtype, name = self.store, target.rtype, target.name or ""
        current = store.get(rtype, target.namespace, name)
        scale = self._scale_of(current)
        if request.method == "GET":
            return _json(scale)
        body = await self._body(request)
        if request.method == "PUT":
            wanted = body
        elif request.method == "PATCH":
            ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
            try:
                if ctype == PATCH_JSON:
                    wanted = json_patch(scale, body)
                elif ctype in (PATCH_MERGE, PATCH_APPLY):
                    wanted = merge_patch(scale, body)
                elif ctype == PATCH_STRATEGIC:
                    wanted = strategic_merge_patch(scale, body)
                else:
                    raise errors.unsupported_media_type(ctype)
            except PatchError as err:
                raise StatusError(422, "Invalid", f"the patch could not be applied: {err}") from err
        else:
            raise errors.method_not_allowed(request.method, f"{rtype.plural}/scale")
        replicas = ((wanted or {}).get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.invalid(
                "Scale",
                "autoscaling",
                name,
                [
                    errors.Cause(
                        "spec.replicas",
                        "FieldValueInvalid",
                        f"Invalid value: {replicas!r}: must be greater than or equal to 0",
                    )
                ],
            )
        wanted_rv = meta(wanted or {}).get("resourceVersion")
        patch: dict[str, Any] = {"spec": {"replicas": replicas}}
        if wanted_rv:
            patch["metadata"] = {"resourceVersion": wanted_rv}
        updated = store.patch(rtype, target.namespace, name, PATCH_MERGE, patch)
        return _json(self._scale_of(updated))

    def _bind(self, target: Target, body: Any) -> web.Response:
        node = ((body or {}).get("target") or {}).get("name") if isinstance(body, dict) else None
        if not node:
            raise errors.bad_request("a Binding needs target.name (the node)")
        store, rtype, name = self.store, target.rtype, target.name or ""
        pod = store.get(rtype, target.namespace, name)
        if (pod.get("spec") or {}).get("nodeName"):
            raise errors.conflict(
                rtype.plural,
                rtype.group,
                name,
                f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"',
            )
        new = json.loads(json.dumps(pod))
        new["spec"]["nodeName"] = node
        store.update_internal(rtype, new)
        return _json(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "code": 201,
            },
            201,
        )

    # ----- pod logs ----------------------------------------------------------------------------

    def _log_file(self, pod: Obj, name: str, container: str) -> Path:
        """The output file of ``container`` of ``pod`` (its only one if not named); 400 with
        kubectl's wording when there is none."""
        containers = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers", [])]
        if not container:
            if len(containers) != 1:
                raise errors.bad_request(
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(containers)}]"
                )
            container = containers[0]
        if container not in containers:
            raise errors.bad_request(f"container {container} is not valid for pod {name}")
        if self.pod_log_dir is None:
            raise errors.bad_request(
                "container logs are not available: this API server was started without a pod "
                "log directory (--pod-logs)"
            )
        path = self.pod_log_dir / str(meta(pod).get("uid", "")) / f"{container}.log"
        if not path.is_file():
            raise errors.bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating'
            )
        return path

    async def _log(self, request: web.Request, target: Target) -> web.StreamResponse:
        """`kubectl logs`: the container's output file under POD_LOG_DIR/<pod uid>/."""
        name = target.name or ""
        pod = self.store.get(target.rtype, target.namespace, name)
        path = self._log_file(pod, name, request.query.get("container", ""))
        uid = meta(pod).get("uid", "")
        data = path.read_bytes()
        tail = request.query.get("tailLines")
        if tail is not None and tail.lstrip("-").isdigit():
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(tail) :]) if int(tail) > 0 else b""
        limit = request.query.get("limitBytes")
        if limit is not None and limit.isdigit():
            data = data[: int(limit)]
        if request.query.get("follow") not in ("true", "1"):
            return web.Response(body=data, content_type="text/plain")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        self.streams[id(request)] = request
        try:
            await response.prepare(request)
            await response.write(data)
            offset = path.stat().st_size
            while True:
                await asyncio.sleep(LOG_POLL_SECONDS)
                current = self.store.find(target.rtype.key, target.namespace, name)
                size = path.stat().st_size if path.is_file() else offset
                if size > offset:
                    with path.open("rb") as handle:
                        handle.seek(offset)
                        chunk = handle.read(size - offset)
                    offset = size
                    await response.write(chunk)
                if current is None or meta(current).get("uid") != uid:
                    break
        except ConnectionResetError:
            return response
        finally:
            self.streams.pop(id(request), None)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response
