"""Which network interfaces a pod has, read from the Pod body alone (pure, no I/O).

After CNI ADD of every network of a pod, Multus writes the ``k8s.v1.cni.cncf.io/network-status``
annotation on it (so does the local cluster's node runtime, which plays Multus): one entry per
attached network, each naming the pod-side ``interface``. The node agent reads it when the host
end of an endpoint's interface does not exist, to tell an interface still being created from one
the pod will never have (a chain naming ``eth3`` on pods attached on ``eth1`` and ``eth2`` only).
Where no annotation is written, a pod that has been Ready for a while has all its interfaces:
the runtime runs CNI ADD for every network before it starts any container.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from typing import Any

from sfc_k8s.api.conditions import object_condition
from sfc_k8s.api.pods import pod_info
from sfc_k8s.api.timestamps import parse_rfc3339

NETWORK_STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"


def attached_interfaces(pod: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Pod-side names of the interfaces the pod's network-status annotation lists, in its order.

    The cluster network's entry (``default: true``, ``eth0``) is left out: it is never a
    data-plane interface. None when the pod has no such annotation, or not a readable one (CNI
    not done yet, or no Multus on the cluster): then nothing is known.
    """
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(NETWORK_STATUS_ANNOTATION)
    if not isinstance(raw, str):
        return None
    try:
        entries = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entries, list):
        return None
    return tuple(
        str(entry["interface"])
        for entry in entries
        if isinstance(entry, Mapping) and entry.get("interface") and not entry.get("default")
    )


def ready_since(pod: Mapping[str, Any]) -> datetime.datetime | None:
    """When the pod last turned Ready (its Ready condition's ``lastTransitionTime``), if it is
    Ready now and says when; timezone-aware."""
    if not pod_info(pod).ready:
        return None
    ready = object_condition(pod, "Ready") or {}
    return parse_rfc3339(ready.get("lastTransitionTime"))
