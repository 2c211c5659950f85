"""The pure parts of the demo's autoscaling act and of ``local up``'s custom metrics API.

Covers: the UDP ramp's rate (0 before and after, linear up and down, flat while held); the
target and peak the demo picks from the base load (1.5 times the base rounded up to 500, at
least 1000; a peak asking for 4 replicas); the verdict on flows of draining replicas (holds
only if some replica drained carrying flows, every such flow echoed more while draining and
some ended there; fails on a stalled or broken one, when none ended on its draining replica,
or when no drained replica carried a flow); the provider's registration from
``deploy/components/metrics-provider`` (no Deployment, the Service without selector and
Endpoints at the forwarder's loopback port under the Service's target port name, the
APIServices and RBAC as shipped); quantities as the metrics API writes them.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from sfc_k8s.local.custom_metrics import component_manifest, registration
from sfc_k8s.local.demo_autoscale import DrainWatch, drained_flows, plan_ramp, quantity
from sfc_k8s.local.traffic import EchoFlow, Ramp


def test_the_ramp_rises_holds_and_falls() -> None:
    ramp = Ramp(peak=3000, up=6, hold=10, down=3)
    assert ramp.seconds == 19
    assert [ramp.rate(t) for t in (-1, 0, 3, 6, 12, 16, 17.5, 19, 25)] == [
        0, 0, 1500, 3000, 3000, 3000, 1500, 0, 0,
    ]  # fmt: skip


def test_the_target_keeps_the_base_on_one_replica_and_the_peak_wants_four() -> None:
    plan = plan_ramp(701)
    assert plan.target == 1500 and plan.peak == pytest.approx(3.2 * 1500 - 701)
    assert plan.desired_at_peak == 4
    assert plan_ramp(0).target == 1000
    assert plan_ramp(3100).target == 5000


class _Flow(EchoFlow):
    """An EchoFlow's counters without a socket or a thread (the verdict reads only those)."""

    def __init__(self, port: int, bytes_ok: int, error: str | None = None) -> None:
        self.local_port, self.bytes_ok, self.error = port, bytes_ok, error


def test_drained_flows_must_keep_flowing_while_their_replica_drains() -> None:
    flows = [_Flow(1001, 9000), _Flow(1002, 5000)]
    watch = DrainWatch(
        first={1001: 4000, 1002: 3000},
        last={1001: 8000, 1002: 5000},
        replica_of={1001: "veth-a", 1002: "veth-b"},
        draining={"veth-a", "veth-b", "veth-c"},
        ended={1002},
    )
    ok, detail = drained_flows(watch, flows)
    assert ok and "3 replica(s) drained, 2 of them carrying 2 long-lived flows" in detail
    assert "1 of them ended there, byte-exact" in detail
    none_ended = DrainWatch(watch.first, watch.last, watch.replica_of, watch.draining)
    assert not drained_flows(none_ended, flows)[0]
    stalled = DrainWatch({1001: 4000}, {1001: 4000}, {1001: "veth-a"}, {"veth-a"})
    assert not drained_flows(stalled, flows)[0]
    broken = [_Flow(1001, 9000, "ConnectionError: reset")]
    assert not drained_flows(watch, broken)[0]
    assert not drained_flows(DrainWatch(draining={"veth-a"}), flows)[0]  # none carried a flow


def test_registration_replaces_the_deployment_by_the_forwarders_endpoints() -> None:
    shipped = component_manifest()
    with socket.socket() as s:  # any port: the function only writes it down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    docs = registration(shipped, port)
    kinds = [d["kind"] for d in docs]
    assert "Deployment" in [d["kind"] for d in shipped] and "Deployment" not in kinds
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert "selector" not in service["spec"] and service["spec"]["ports"][0]["port"] == 443
    (endpoints,) = [d for d in docs if d["kind"] == "Endpoints"]
    assert endpoints["metadata"]["name"] == service["metadata"]["name"]
    assert endpoints["subsets"] == [
        {"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": port}]}
    ]
    unchanged = [d for d in shipped if d["kind"] not in ("Deployment", "Service")]
    assert [d for d in docs if d["kind"] not in ("Service", "Endpoints")] == unchanged
    services: list[dict[str, Any]] = [d for d in docs if d["kind"] == "APIService"]
    assert {a["metadata"]["name"] for a in services} == {
        "v1beta2.custom.metrics.k8s.io", "v1beta1.custom.metrics.k8s.io",
    }  # fmt: skip
    shipped_service = next(d for d in shipped if d["kind"] == "Service")
    assert "selector" in shipped_service["spec"]  # the shipped documents were not changed


def test_quantities_as_the_metrics_api_writes_them() -> None:
    assert quantity("400406m") == pytest.approx(400.406)
    assert quantity("12k") == 12000 and quantity("3") == 3
