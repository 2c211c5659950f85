"""The node lifecycle controller's decisions: when a node is lost, its taints, its evictions.

Pure functions over plain API objects, called by ``controllers.py`` and unit-tested in
``tests/unit/local/test_nodelifecycle.py``. They follow kube-controller-manager's node
lifecycle controller with taint-based eviction:

- a node's last heartbeat is the later of its ``Ready`` condition's ``lastHeartbeatTime`` and
  its Lease's ``renewTime`` (``kube-node-lease``); a Ready node silent for longer than the
  node-monitor grace period turns ``Ready=Unknown`` (``NodeStatusUnknown``);
- a node whose ``Ready`` is ``Unknown`` carries the ``node.kubernetes.io/unreachable`` taint,
  one whose ``Ready`` is ``False`` the ``node.kubernetes.io/not-ready`` taint, each with the
  ``NoSchedule`` and ``NoExecute`` effects; a Ready node carries neither;
- the pods of a node that is not Ready are marked not Ready (``Ready=False``), as the
  controller's MarkPodsNotReady does, so endpoints and controllers stop counting them at once;
- a pod on a node with such a ``NoExecute`` taint is evicted once the taint is older than the
  ``tolerationSeconds`` of the pod's toleration for it (tolerated with no ``tolerationSeconds``:
  never), or, with no toleration, than the default (what the DefaultTolerationSeconds admission
  plugin writes into every pod of a real cluster: 300 s there).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from sfc_k8s.api.conditions import object_condition
from sfc_k8s.api.timestamps import format_rfc3339, parse_rfc3339
from sfc_k8s.local.apiserver.scheduling import tolerates

Obj = Mapping[str, Any]

UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
LIFECYCLE_TAINTS = (UNREACHABLE, NOT_READY)
EFFECTS = ("NoSchedule", "NoExecute")
DEFAULT_GRACE_SECONDS = 40.0  # kube-controller-manager --node-monitor-grace-period
DEFAULT_EVICTION_SECONDS = 300.0  # kube-apiserver --default-unreachable-toleration-seconds


def last_heartbeat(node: Obj, lease: Obj | None) -> datetime.datetime | None:
    """The later of the Ready condition's heartbeat and the node Lease's renewal."""
    ready = object_condition(node, "Ready") or {}
    times = [parse_rfc3339(ready.get("lastHeartbeatTime"))]
    if lease is not None:
        times.append(parse_rfc3339((lease.get("spec") or {}).get("renewTime")))
    known = [t for t in times if t is not None]
    return max(known) if known else None


def is_lost(node: Obj, lease: Obj | None, now: datetime.datetime, grace_seconds: float) -> bool:
    """A Ready node whose heartbeats stopped longer than the grace period ago. Nodes that
    never posted a heartbeat are left alone (nobody promised one)."""
    ready = object_condition(node, "Ready")
    if ready is None or ready.get("status") != "True":
        return False
    beat = last_heartbeat(node, lease)
    return beat is not None and (now - beat).total_seconds() > grace_seconds


def desired_taints(node: Obj, now: datetime.datetime) -> list[dict[str, Any]]:
    """The node's taints with the lifecycle ones set from its Ready condition; a taint that
    stays keeps its ``timeAdded`` (evictions count from it)."""
    current = [dict(t) for t in (node.get("spec") or {}).get("taints") or []]
    status = (object_condition(node, "Ready") or {}).get("status")
    key = {"Unknown": UNREACHABLE, "False": NOT_READY}.get(str(status))
    kept = [t for t in current if t.get("key") not in LIFECYCLE_TAINTS or t.get("key") == key]
    if key is None:
        return kept
    for effect in EFFECTS:
        if not any(t.get("key") == key and t.get("effect") == effect for t in kept):
            taint: dict[str, Any] = {"key": key, "effect": effect}
            if effect == "NoExecute":
                taint["timeAdded"] = format_rfc3339(now)
            kept.append(taint)
    return kept


def eviction_delay(pod: Obj, taint: Obj, default_seconds: float) -> float | None:
    """Seconds after the ``NoExecute`` taint was added at which the pod is evicted; None for a
    pod that tolerates it for ever."""
    tolerations = [
        t
        for t in (pod.get("spec") or {}).get("tolerations") or []
        if t.get("effect") in (None, "", "NoExecute")
    ]
    matching = [t for t in tolerations if tolerates([t], taint)]
    if not matching:
        return default_seconds
    limits = [t.get("tolerationSeconds") for t in matching]
    if any(limit is None for limit in limits):
        return None
    return float(max(0, min(int(limit) for limit in limits)))


def due_for_eviction(
    pod: Obj,
    node: Obj,
    now: datetime.datetime,
    default_seconds: float,
) -> Obj | None:
    """The lifecycle ``NoExecute`` taint whose delay for this pod has run out, if any."""
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("key") not in LIFECYCLE_TAINTS or taint.get("effect") != "NoExecute":
            continue
        added = parse_rfc3339(taint.get("timeAdded")) or now
        delay = eviction_delay(pod, taint, default_seconds)
        if delay is not None and (now - added).total_seconds() >= delay:
            return dict(taint)
    return None


def not_ready_status(pod: Obj, now: datetime.datetime) -> dict[str, Any] | None:
    """The pod's status with ``Ready=False`` (its node was lost), or None if it is not Ready."""
    status = dict(pod.get("status") or {})
    conditions = [dict(c) for c in status.get("conditions") or []]
    changed = False
    for condition in conditions:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            condition.update(
                status="False", reason="NodeNotReady", lastTransitionTime=format_rfc3339(now)
            )
            changed = True
    if not changed:
        return None
    status["conditions"] = conditions
    return status
