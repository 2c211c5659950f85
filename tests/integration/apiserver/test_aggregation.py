"""The aggregation layer of the local API server, with the real kubectl: what an APIService
whose Service cannot be reached answers.

Covers: an APIService is stored and listed (``kubectl get apiservices``); its group appears in
``/apis`` and ``/apis/GROUP``; a request under it is a 503 naming what is missing: the Service,
then a port the Service lacks, then the Endpoints; a registered group never shadows the
server's own resources (``apps/v1`` still served); a reachable server gets the request
without the client's ``Authorization`` or forged ``X-Remote-*`` headers. The real provider is
covered by ``tests/integration/operator/test_metrics_provider.py``.
"""

from __future__ import annotations

import json
import urllib.request
from http.server import BaseHTTPRequestHandler

import yaml

from tests.fixtures.apiserver import LocalAPIServer
from tests.integration.apiserver.test_hpa import CustomMetricsAPI

APISERVICE = {
    "apiVersion": "apiregistration.k8s.io/v1",
    "kind": "APIService",
    "metadata": {"name": "v1.metrics.example.com"},
    "spec": {
        "group": "metrics.example.com",
        "version": "v1",
        "service": {"namespace": "default", "name": "provider", "port": 443},
        "insecureSkipTLSVerify": True,
        "groupPriorityMinimum": 100,
        "versionPriority": 100,
    },
}


def _service(port: int) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "provider", "namespace": "default"},
            "spec": {"ports": [{"name": "https", "port": port, "targetPort": "https"}]},
        }
    )


def _error(apiserver: LocalAPIServer) -> str:
    result = apiserver.kubectl("get", "--raw", "/apis/metrics.example.com/v1/things")
    assert result.returncode != 0
    return result.stderr


def test_unreachable_service_is_a_clear_503(apiserver: LocalAPIServer) -> None:
    apiserver.kubectl("apply", "-f", "-", input=json.dumps(APISERVICE), check=True)
    listed = apiserver.kubectl("get", "apiservices", "-o", "name", check=True).stdout
    assert "apiservice.apiregistration.k8s.io/v1.metrics.example.com" in listed
    groups = json.loads(apiserver.kubectl("get", "--raw", "/apis", check=True).stdout)
    assert "metrics.example.com" in {g["name"] for g in groups["groups"]}
    group = json.loads(
        apiserver.kubectl("get", "--raw", "/apis/metrics.example.com", check=True).stdout
    )
    assert group["preferredVersion"] == {"groupVersion": "metrics.example.com/v1", "version": "v1"}

    assert "service default/provider not found" in _error(apiserver)
    apiserver.kubectl("apply", "-f", "-", input=_service(8443), check=True)
    assert "service default/provider has no port 443" in _error(apiserver)
    apiserver.kubectl("apply", "-f", "-", input=_service(443), check=True)
    assert "no endpoints available for service default/provider (port https)" in _error(apiserver)
    assert apiserver.kubectl("get", "--raw", "/apis/apps/v1", check=True).stdout


def test_client_credentials_are_not_forwarded(apiserver: LocalAPIServer) -> None:
    """The aggregated server gets the request, never the client's token or forged identity."""
    backend = CustomMetricsAPI()
    seen: list[dict[str, str]] = []
    answer = backend.answer

    def recording(handler: BaseHTTPRequestHandler) -> None:
        seen.append({k.lower(): v for k, v in handler.headers.items()})
        answer(handler)

    backend.answer = recording  # type: ignore[method-assign]
    try:
        backend.api_url = apiserver.url
        apiserver.kubectl("apply", "-f", "-", input=backend.registration(), check=True)
        path = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/services/web/hits"
        request = urllib.request.Request(apiserver.url + path)
        request.add_header("Authorization", "Bearer secret-token")
        request.add_header("X-Remote-User", "admin")
        request.add_header("Accept", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["kind"] == "MetricValueList"
    finally:
        backend.close()
    (headers,) = seen
    assert headers["accept"] == "application/json"
    assert "authorization" not in headers
    assert "x-remote-user" not in headers
