"""HorizontalPodAutoscalers on the local API server, with the real kubectl and the HPA controller.

Covers: `autoscaling/v2` HPAs served (`kubectl get hpa` columns REFERENCE, TARGETS with
`<unknown>` until measured, MINPODS, MAXPODS, REPLICAS; the API's default CPU metric; quantities
stored in canonical form); invalid specs refused at admission with Kubernetes' messages
(minReplicas > maxReplicas, minReplicas 0, an unknown metric type, a Pods metric without
averageValue, a bad policy); the controller without a custom metrics API (the local server does
not serve one yet) reporting `ScalingActive=False, FailedGetPodsMetric` and leaving the target
alone, yet bringing a target above maxReplicas down to it; the controller driven by a load
step: scale-up one pod per period as the `behavior` policy allows, live targets in
`kubectl get hpa`, `SuccessfulRescale` events in `kubectl describe hpa`, and scale-down only
after the stabilization window; an Object metric's AverageValue (the value shared over the
replicas, settling where it is on target).

The load tests need a load they control: they serve the custom metrics API's JSON
(`custom.metrics.k8s.io/v1beta2` `MetricValueList`) from an in-test HTTPS server registered as
the real provider is, by an `APIService` whose Service has hand-written Endpoints, so the HPA
controller reads it through the server's aggregation layer (the real provider, with real
traffic, is `tests/integration/operator/test_metrics_provider.py`). Nothing runs the pods
either (no node here): the tests mark the Deployment's pods Running and Ready through the API,
as a kubelet would.
"""

from __future__ import annotations

import itertools
import json
import re
import ssl
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sfc_k8s.local.apiserver import APIServer
from sfc_k8s.local.apiserver.quantity import format_milli
from sfc_k8s.operator.metrics_provider import self_signed
from tests.fixtures.apiserver import LocalAPIServer
from tests.fixtures.hpa import deployment, pods_hpa

DEPLOYMENT = deployment(container="bridge")
HPA = pods_hpa(max_replicas=5, target="100000", scale_up_period=2, scale_down_window=3)
CPU_HPA = """
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: cpu}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: fw}
  maxReplicas: 3
"""
SCALE_UP_PERIOD = 2.0
SCALE_DOWN_WINDOW = 3.0
SYNC_PERIOD = 0.2


def _eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _http(url: str, *, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/merge-patch+json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _pods(api_url: str, selector: str = "app=fw") -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"labelSelector": selector})
    items: list[dict[str, Any]] = _http(f"{api_url}/api/v1/namespaces/default/pods?{query}")[
        "items"
    ]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


class FakeKubelet:
    """Marks every pod Running and Ready (there is no node runtime in these tests)."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for pod in _pods(self.api_url):
                if _ready(pod):
                    continue
                name = pod["metadata"]["name"]
                status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
                url = f"{self.api_url}/api/v1/namespaces/default/pods/{name}/status"
                _http(url, method="PATCH", body={"status": status})

    def __enter__(self) -> FakeKubelet:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _send(handler: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
    data = json.dumps({"apiVersion": "custom.metrics.k8s.io/v1beta2", **body}).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.end_headers()
    handler.wfile.write(data)


class CustomMetricsAPI:
    """A custom metrics API in the test: `load` packets/s shared evenly by the ready pods, and
    `object_load` requests/s of a Service `web`."""

    def __init__(self) -> None:
        self.load = 0  # packets/s, whole units
        self.object_load = 0  # requests/s of services/web
        self.served: dict[int, float] = {}  # load -> when it was last read (monotonic)
        self.api_url = ""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.answer(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self._scratch = tempfile.TemporaryDirectory(prefix="sfc-k8s-test-metrics-")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self_signed(Path(self._scratch.name), ["localhost"]))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlparse(handler.path)
        match = re.fullmatch(
            r"/apis/custom\.metrics\.k8s\.io/v1beta2/namespaces/(\w+)/pods/\*/(\w+)", url.path
        )
        if match is None:
            self._answer_object(handler, url.path)
            return
        load = self.load
        self.served[load] = time.monotonic()  # the HPA's recommendation from it comes later
        selector = urllib.parse.parse_qs(url.query).get("labelSelector", [""])[0]
        ready = [p for p in _pods(self.api_url, selector) if _ready(p)]
        each = load * 1000 // max(len(ready), 1)
        items = [
            {
                "describedObject": {
                    "kind": "Pod",
                    "namespace": match.group(1),
                    "name": p["metadata"]["name"],
                    "apiVersion": "/v1",
                },
                "metric": {"name": match.group(2)},
                "timestamp": "2026-01-01T00:00:00Z",
                "windowSeconds": 1,
                "value": format_milli(each),
            }
            for p in ready
        ]
        _send(handler, 200, {"kind": "MetricValueList", "items": items})

    def _answer_object(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        """`object_load` as the value of any metric of `services/web`."""
        match = re.fullmatch(
            r"/apis/custom\.metrics\.k8s\.io/v1beta2/namespaces/(\w+)/services/web/(\w+)", path
        )
        if match is None:
            _send(handler, 404, {"kind": "Status", "code": 404, "reason": "NotFound"})
            return
        item = {
            "describedObject": {"kind": "Service", "namespace": match.group(1), "name": "web"},
            "metric": {"name": match.group(2)},
            "timestamp": "2026-01-01T00:00:00Z",
            "value": format_milli(self.object_load * 1000),
        }
        _send(handler, 200, {"kind": "MetricValueList", "items": [item]})

    def registration(self) -> str:
        """Service, Endpoints and APIService that send custom.metrics.k8s.io/v1beta2 here."""
        return f"""
apiVersion: v1
kind: Service
metadata: {{name: test-metrics, namespace: default}}
spec:
  ports: [{{name: https, port: 443, targetPort: {self.port}}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: test-metrics, namespace: default}}
subsets: [{{addresses: [{{ip: 127.0.0.1}}], ports: [{{name: https, port: {self.port}}}]}}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1beta2.custom.metrics.k8s.io}}
spec:
  group: custom.metrics.k8s.io
  version: v1beta2
  service: {{namespace: default, name: test-metrics, port: 443}}
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
"""

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._scratch.cleanup()


@pytest.fixture
def metrics_api() -> Iterator[CustomMetricsAPI]:
    api = CustomMetricsAPI()
    try:
        yield api
    finally:
        api.close()


def _cluster(state: Path) -> APIServer:
    """The HPA controller reads the custom metrics API from the server itself (its default)."""
    return APIServer(state_dir=state, hpa_sync_period=SYNC_PERIOD)


@pytest.fixture
def fast_hpa(tmp_path: Path, metrics_api: CustomMetricsAPI) -> Iterator[LocalAPIServer]:
    """A server whose HPA controller syncs every 0.2 s and reads `metrics_api` through the
    aggregation layer."""
    server = _cluster(tmp_path)
    server.start()
    try:
        metrics_api.api_url = server.url
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        cluster = LocalAPIServer(server=server, kubeconfig=kubeconfig, cache_dir=tmp_path / "cache")
        cluster.kubectl("apply", "-f", "-", input=metrics_api.registration(), check=True)
        yield cluster
    finally:
        server.stop()


def _replicas(cluster: LocalAPIServer) -> int:
    deploy = _http(f"{cluster.url}/apis/apps/v1/namespaces/default/deployments/fw")
    return int(deploy["spec"]["replicas"])


def _hpa_status(cluster: LocalAPIServer) -> dict[str, Any]:
    url = f"{cluster.url}/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/fw"
    status: dict[str, Any] = _http(url).get("status") or {}
    return status


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


# ----- the resource ------------------------------------------------------------------------------


def test_kubectl_get_hpa_prints_kubectls_columns(apiserver: LocalAPIServer) -> None:
    apiserver.kubectl("apply", "-f", "-", input=DEPLOYMENT, check=True)
    apiserver.kubectl("apply", "-f", "-", input=HPA, check=True)
    apiserver.kubectl("apply", "-f", "-", input=CPU_HPA, check=True)
    out = apiserver.kubectl("get", "hpa", check=True).stdout.splitlines()
    assert out[0].split() == [
        "NAME",
        "REFERENCE",
        "TARGETS",
        "MINPODS",
        "MAXPODS",
        "REPLICAS",
        "AGE",
    ]
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert rows["fw"][1:6] == ["Deployment/fw", "<unknown>/100k", "1", "5", "0"]
    assert rows["cpu"][1:4] == ["Deployment/fw", "cpu:", "<unknown>/80%"]  # the default metric
    stored = apiserver.kubectl(
        "get", "hpa", "fw", "-o", "jsonpath={.spec.metrics[0].pods.target.averageValue}"
    )
    assert stored.stdout == "100k"  # "100000" written back canonically, as a real server does


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("minReplicas: 1", "minReplicas: 7"),
            "spec.maxReplicas: Invalid value: 5: must be greater than or equal to `minReplicas`",
        ),
        (
            ("minReplicas: 1", "minReplicas: 0"),
            "spec.minReplicas: Invalid value: 0: must be greater than or equal to 1",
        ),
        (
            ("- type: Pods", "- type: Packets"),
            'spec.metrics[0].type: Unsupported value: "Packets": supported values: '
            '"ContainerResource", "External", "Object", "Pods", "Resource"',
        ),
        (
            ('averageValue: "100000"', 'value: "100000"'),
            "spec.metrics[0].pods.target.averageValue: Required value: must specify a positive "
            "target averageValue",
        ),
        (
            ("value: 1, periodSeconds: 2", "value: 1, periodSeconds: 0"),
            "spec.behavior.scaleUp.policies[0].periodSeconds: Invalid value: 0: must be greater "
            "than zero and less than or equal to 1800",
        ),
    ],
)
def test_invalid_hpas_are_refused_with_kubernetes_messages(
    apiserver: LocalAPIServer, edit: tuple[str, str], message: str
) -> None:
    result = apiserver.kubectl("apply", "-f", "-", input=HPA.replace(*edit))
    assert result.returncode != 0
    assert f'The HorizontalPodAutoscaler "fw" is invalid: {message}' in result.stderr
    assert "fw" not in apiserver.kubectl("get", "hpa").stdout


# ----- the controller ----------------------------------------------------------------------------


@pytest.fixture
def no_metrics(tmp_path: Path) -> Iterator[LocalAPIServer]:
    """A server whose HPA controller (0.2 s) reads the server's own custom metrics API, which
    is not served (404), as on a cluster without a metrics adapter."""
    server = _cluster(tmp_path)
    server.start()
    try:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        yield LocalAPIServer(server=server, kubeconfig=kubeconfig, cache_dir=tmp_path / "cache")
    finally:
        server.stop()


def test_without_a_custom_metrics_api_scaling_is_inactive(no_metrics: LocalAPIServer) -> None:
    cluster = no_metrics
    cluster.kubectl("apply", "-f", "-", input=DEPLOYMENT, check=True)
    cluster.kubectl("apply", "-f", "-", input=HPA, check=True)
    _eventually(lambda: bool(_condition(_hpa_status(cluster), "ScalingActive")))
    status = _hpa_status(cluster)
    active = _condition(status, "ScalingActive")
    assert (active["status"], active["reason"]) == ("False", "FailedGetPodsMetric")
    assert "unable to get metric packets_per_second" in active["message"]
    assert _condition(status, "AbleToScale")["reason"] == "SucceededGetScale"
    assert status["currentReplicas"] == 1 and _replicas(cluster) == 1
    assert "<unknown>/100k" in cluster.kubectl("get", "hpa", "fw", check=True).stdout


def test_a_target_above_max_is_brought_down_without_metrics(no_metrics: LocalAPIServer) -> None:
    cluster = no_metrics
    cluster.kubectl("apply", "-f", "-", input=DEPLOYMENT.replace("replicas: 1", "replicas: 4"))
    cluster.kubectl("apply", "-f", "-", input=HPA.replace("maxReplicas: 5", "maxReplicas: 2"))
    _eventually(lambda: _replicas(cluster) == 2)
    _eventually(lambda: _hpa_status(cluster).get("desiredReplicas") == 2)
    limited = _condition(_hpa_status(cluster), "ScalingLimited")
    assert (limited["status"], limited["reason"]) == ("True", "TooManyReplicas")
    assert _condition(_hpa_status(cluster), "AbleToScale")["reason"] == "SucceededRescale"


def _watch_replicas(
    cluster: LocalAPIServer, until: Callable[[int], bool]
) -> list[tuple[float, float, int]]:
    """(earliest, latest, replicas) at every change of the Deployment's replicas, until
    `until(replicas)`: the change happened after the start of the last read that still showed
    the old value and before the end of the read that showed the new one."""
    start = time.monotonic()
    changes = [(start, start, _replicas(cluster))]
    deadline = start + 30
    read_started = time.monotonic()
    while not until(changes[-1][2]):
        assert time.monotonic() < deadline, f"replicas never reached the goal: {changes}"
        time.sleep(0.05)
        previous_start, read_started = read_started, time.monotonic()
        now = _replicas(cluster)
        if now != changes[-1][2]:
            changes.append((previous_start, time.monotonic(), now))
    return changes


def _longest_possible_gaps(changes: list[tuple[float, float, int]]) -> list[float]:
    """The longest each gap between consecutive changes can have been: a gap shorter than
    that bound is certain, whatever the polling's own delays."""
    return [b[1] - a[0] for a, b in itertools.pairwise(changes)]


def test_a_load_step_scales_up_at_the_policy_rate_and_down_after_the_window(
    fast_hpa: LocalAPIServer, metrics_api: CustomMetricsAPI
) -> None:
    cluster = fast_hpa
    metrics_api.load = 50_000  # half the 100k target on one replica: stays at minReplicas
    with FakeKubelet(cluster.url):
        cluster.kubectl("apply", "-f", "-", input=DEPLOYMENT, check=True)
        cluster.kubectl("apply", "-f", "-", input=HPA, check=True)
        _eventually(
            lambda: _condition(_hpa_status(cluster), "ScalingActive").get("status") == "True"
        )
        assert _replicas(cluster) == 1

        metrics_api.load = 400_000  # a load step: 4 replicas at 100k each
        ups = _watch_replicas(cluster, lambda n: n >= 4)
        steps = [b[2] - a[2] for a, b in itertools.pairwise(ups)]
        assert steps == [1, 1, 1], f"the policy allows one pod per period: {ups}"
        gaps = _longest_possible_gaps(ups[1:])
        assert all(gap >= SCALE_UP_PERIOD for gap in gaps), ups
        _eventually(lambda: _hpa_status(cluster).get("currentMetrics") is not None)
        row = cluster.kubectl("get", "hpa", "fw", "--no-headers", check=True).stdout.split()
        assert re.fullmatch(r"\d+[km]?/100k", row[2]), row
        assert _hpa_status(cluster).get("lastScaleTime")
        described = cluster.kubectl("describe", "hpa", "fw", check=True).stdout
        assert "New size: 2; reason: pods metric packets_per_second above target" in described

        metrics_api.load = 50_000  # the load ends: 1 replica is enough, after the window
        downs = _watch_replicas(cluster, lambda n: n == 1)
        # The last high recommendation comes from the last read of the high load (stamped
        # after it) and the window runs from there; when the syncs ran is not the test's to
        # assume on a loaded machine.
        last_high = metrics_api.served[400_000]
        assert downs[-1][1] - last_high >= SCALE_DOWN_WINDOW, (downs, last_high)
        assert _replicas(cluster) == 1
        assert len(_pods(cluster.url)) == 1
        _eventually(
            lambda: (
                "New size: 1; reason: All metrics below target"
                in cluster.kubectl("describe", "hpa", "fw", check=True).stdout
            )
        )


OBJECT_HPA = """
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: fw}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: fw}
  maxReplicas: 6
  metrics:
    - type: Object
      object:
        metric: {name: requests_per_second}
        describedObject: {apiVersion: v1, kind: Service, name: web}
        target: {type: AverageValue, averageValue: "250"}
"""


def test_an_object_metric_shares_its_value_over_the_replicas(
    fast_hpa: LocalAPIServer, metrics_api: CustomMetricsAPI
) -> None:
    cluster = fast_hpa
    metrics_api.object_load = 1000  # 1000 requests/s at 250 per replica: 4 replicas
    with FakeKubelet(cluster.url):
        cluster.kubectl("apply", "-f", "-", input=DEPLOYMENT, check=True)
        cluster.kubectl("apply", "-f", "-", input=OBJECT_HPA, check=True)
        _eventually(lambda: _replicas(cluster) == 4)  # the default rate allows 1 -> 5 at once
        _eventually(lambda: _hpa_status(cluster).get("currentReplicas") == 4)
        time.sleep(5 * SYNC_PERIOD)  # 1000 / (4 x 250) is on target: 4 is where it stays
        assert _replicas(cluster) == 4
        row = cluster.kubectl("get", "hpa", "fw", "--no-headers", check=True).stdout.split()
        assert row[2:4] == ["250/250", "(avg)"], row
        active = _condition(_hpa_status(cluster), "ScalingActive")
        assert active["message"].endswith("from object metric requests_per_second"), active
