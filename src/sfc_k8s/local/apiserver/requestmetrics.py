"""Request counts of the local API server, served at ``/metrics`` as kube-apiserver names them.

``apiserver_request_total{verb, group, resource, subresource, code}`` counts every request by
its Kubernetes verb (``get``, ``list``, ``watch``, ``create``, ``patch``...; parsed by
``rbac.request_attributes``, the same parse RBAC uses) and answer code, and
``apiserver_watch_events_total{group, resource}`` the events written to watch streams (the
fan-out). ``bench/control_plane.py`` reads them to show what a reconcile costs the server, and
the controller's scale test (``tests/integration/operator/test_controller_scale.py``) asserts
that the requests per chain do not grow with the chains present. Created by ``app.Scaffold``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from sfc_k8s.local.apiserver import rbac

METRICS_PATH = "/metrics"
RequestKey = tuple[str, str, str, str, int]  # (verb, group, resource, subresource, code)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequestCounts:
    """Counters of requests and watch events since the server started."""

    def __init__(self) -> None:
        self.requests: Counter[RequestKey] = Counter()
        self.watch_events: Counter[tuple[str, str]] = Counter()

    def count(self, method: str, path: str, query: Mapping[str, str], code: int) -> None:
        attrs = rbac.request_attributes(method, path, query)
        if attrs.is_resource_request:
            key = (attrs.verb, attrs.api_group, attrs.resource, attrs.subresource, code)
            self.requests[key] += 1

    def watch_event(self, group: str, resource: str) -> None:
        self.watch_events[(group, resource)] += 1

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count each request once it is answered (outermost: errors count with their code)."""
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        finally:
            self.count(request.method, request.path, request.query, code)

    async def serve(self, request: web.Request) -> web.Response:
        del request
        return web.Response(text=render(self), content_type="text/plain")


def render(counts: RequestCounts) -> str:
    """The counters in the Prometheus text format."""
    lines = [
        "# HELP apiserver_request_total Requests by verb, resource and response code.",
        "# TYPE apiserver_request_total counter",
    ]
    for (verb, group, resource, sub, code), value in sorted(counts.requests.items()):
        lines.append(
            f'apiserver_request_total{{verb="{verb}",group="{group}",resource="{resource}",'
            f'subresource="{sub}",code="{code}"}} {value}'
        )
    lines += [
        "# HELP apiserver_watch_events_total Events written to watch streams, by resource.",
        "# TYPE apiserver_watch_events_total counter",
    ]
    for (group, resource), value in sorted(counts.watch_events.items()):
        lines.append(
            f'apiserver_watch_events_total{{group="{group}",resource="{resource}"}} {value}'
        )
    return "\n".join(lines) + "\n"


def parse(text: str) -> dict[str, Counter[tuple[str, ...]]]:
    """``render``'s text back to counters: metric name -> label values (in label order) ->
    value; what the benchmark and the tests read."""
    found: dict[str, Counter[tuple[str, ...]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or "{" not in line:
            continue
        name, rest = line.split("{", 1)
        labels, value = rest.rsplit("} ", 1)
        values = tuple(part.split("=", 1)[1].strip('"') for part in labels.split(","))
        found.setdefault(name, Counter())[values] += int(float(value))
    return found


__all__ = ["METRICS_PATH", "RequestCounts", "parse", "render"]
