"""The local API server's request counts (``local.apiserver.requestmetrics``).

Covers: a request is counted under its Kubernetes verb, group, resource, subresource and code
(list, watch, get, create, patch of a subresource, deletecollection; non-resource requests
are not counted); the Prometheus text renders and parses back to the same counts.
"""

from __future__ import annotations

from sfc_k8s.local.apiserver.requestmetrics import RequestCounts, parse, render


def test_requests_are_counted_by_verb_resource_and_code() -> None:
    counts = RequestCounts()
    counts.count("GET", "/api/v1/namespaces/a/pods", {}, 200)
    counts.count("GET", "/api/v1/pods", {"watch": "true"}, 200)
    counts.count("GET", "/api/v1/namespaces/a/pods/p", {}, 404)
    counts.count("POST", "/apis/sfc-k8s.io/v1alpha1/namespaces/a/crossconnections", {}, 201)
    path = "/apis/sfc-k8s.io/v1alpha1/namespaces/a/servicefunctionchains/c/status"
    counts.count("PATCH", path, {}, 200)
    counts.count("PATCH", path, {}, 200)
    counts.count("DELETE", "/api/v1/namespaces/a/pods", {}, 200)
    counts.count("GET", "/version", {}, 200)
    assert counts.requests == {
        ("list", "", "pods", "", 200): 1,
        ("watch", "", "pods", "", 200): 1,
        ("get", "", "pods", "", 404): 1,
        ("create", "sfc-k8s.io", "crossconnections", "", 201): 1,
        ("patch", "sfc-k8s.io", "servicefunctionchains", "status", 200): 2,
        ("deletecollection", "", "pods", "", 200): 1,
    }


def test_the_text_parses_back_to_the_counts() -> None:
    counts = RequestCounts()
    counts.count("GET", "/api/v1/namespaces/a/pods", {}, 200)
    counts.watch_event("sfc-k8s.io", "crossconnections")
    counts.watch_event("sfc-k8s.io", "crossconnections")
    parsed = parse(render(counts))
    assert parsed["apiserver_request_total"] == {("list", "", "pods", "", "200"): 1}
    assert parsed["apiserver_watch_events_total"] == {("sfc-k8s.io", "crossconnections"): 2}
