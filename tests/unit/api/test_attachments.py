"""Which interfaces a pod has, from its Pod body (sfc_k8s.api.attachments).

Covers: the network-status annotation as the local node runtime writes it (built here with the
runtime's own ``network_status``) gives the data-plane interfaces in order, the cluster network's
``default`` entry left out; no annotation, unreadable JSON or a non-list says "unknown" (None),
never "no interface"; an empty list (only the cluster network) is known and empty; Ready since
the Ready condition's ``lastTransitionTime`` (``Z`` or offset), None when not Ready, unknown or
unparsable.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from sfc_k8s.api import NETWORK_STATUS_ANNOTATION, attached_interfaces, ready_since
from sfc_k8s.local.node.cni import Attachment, network_status


def _attachment(ifname: str, *, default: bool = False) -> Attachment:
    result = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": ifname, "sandbox": "/run/netns/p", "mac": "02:00:00:00:00:01"}],
        "ips": [{"address": "10.0.0.2/24", "interface": 0}],
    }
    return Attachment(
        network=f"ns/{ifname}", ifname=ifname, config={}, result=result, default=default
    )


def pod_with(annotation: str | None, **status: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "fw", "namespace": "ns", "uid": "u1"}
    if annotation is not None:
        meta["annotations"] = {NETWORK_STATUS_ANNOTATION: annotation}
    return {"metadata": meta, "spec": {"nodeName": "n1"}, "status": status}


def test_the_annotation_the_runtime_writes_lists_the_data_plane_interfaces() -> None:
    written = json.dumps(
        [
            network_status(a)
            for a in (_attachment("eth0", default=True), *map(_attachment, ("eth2", "eth1")))
        ]
    )
    assert attached_interfaces(pod_with(written)) == ("eth2", "eth1")
    only_cluster = json.dumps([network_status(_attachment("eth0", default=True))])
    assert attached_interfaces(pod_with(only_cluster)) == ()


@pytest.mark.parametrize("annotation", [None, "not json", '{"interface": "eth1"}', "42"])
def test_no_readable_annotation_means_unknown(annotation: str | None) -> None:
    assert attached_interfaces(pod_with(annotation)) is None


def test_ready_since_reads_the_ready_condition() -> None:
    def ready(status: str, stamp: object) -> dict[str, Any]:
        condition = {"type": "Ready", "status": status, "lastTransitionTime": stamp}
        return pod_with(None, phase="Running", conditions=[condition])

    utc = datetime.UTC
    assert ready_since(ready("True", "2026-12-03T10:00:00Z")) == datetime.datetime(
        2026, 12, 3, 10, tzinfo=utc
    )
    assert ready_since(ready("True", "2026-12-03T11:00:00+01:00")) == datetime.datetime(
        2026, 12, 3, 10, tzinfo=utc
    )
    assert ready_since(ready("False", "2026-12-03T10:00:00Z")) is None
    assert ready_since(ready("True", None)) is None
    assert ready_since(ready("True", "yesterday")) is None
    assert ready_since(pod_with(None)) is None
