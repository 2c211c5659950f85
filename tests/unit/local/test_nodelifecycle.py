"""The node lifecycle controller's pure decisions (``sfc_k8s.local.apiserver.nodelifecycle``).

Covers: a Ready node is lost once both its Ready heartbeat and its Lease are older than the
grace period (the later one counts; a node that never sent one is left alone; a node already
Unknown is not lost again); lifecycle taints follow the Ready condition (Unknown ->
unreachable, False -> not-ready, both effects; True -> none; other taints kept; an existing
taint keeps its ``timeAdded``); eviction delays from tolerations (none -> the default,
``tolerationSeconds`` -> that, the smallest of several, tolerated for ever -> never, a
``NoSchedule``-only toleration does not count) and when a pod is due; a lost node's pods are
marked not Ready.
"""

from __future__ import annotations

import datetime
from typing import Any

from sfc_k8s.api.timestamps import format_rfc3339
from sfc_k8s.local.apiserver.nodelifecycle import (
    NOT_READY,
    UNREACHABLE,
    desired_taints,
    due_for_eviction,
    eviction_delay,
    is_lost,
    not_ready_status,
)

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
TAINT = {"key": UNREACHABLE, "effect": "NoExecute"}


def ago(seconds: float) -> str:
    return format_rfc3339(NOW - datetime.timedelta(seconds=seconds))


def node(ready: str = "True", beat: str | None = None, taints: Any = None) -> dict[str, Any]:
    condition: dict[str, Any] = {"type": "Ready", "status": ready}
    if beat is not None:
        condition["lastHeartbeatTime"] = beat
    spec = {"taints": taints} if taints is not None else {}
    return {"metadata": {"name": "node-1"}, "spec": spec, "status": {"conditions": [condition]}}


def lease(renewed: str) -> dict[str, Any]:
    return {"spec": {"renewTime": renewed}}


def test_lost_when_every_heartbeat_is_older_than_the_grace() -> None:
    assert not is_lost(node(beat=ago(30)), None, NOW, 40)
    assert is_lost(node(beat=ago(50)), None, NOW, 40)
    assert not is_lost(node(beat=ago(50)), lease(ago(5)), NOW, 40), "the Lease is later"
    assert is_lost(node(beat=ago(50)), lease("2026-01-01T11:59:10.500000Z"), NOW, 40)
    assert not is_lost(node(), None, NOW, 40), "never sent a heartbeat"
    assert not is_lost(node("Unknown", beat=ago(500)), None, NOW, 40), "already lost"


def test_taints_follow_the_ready_condition() -> None:
    assert desired_taints(node("True"), NOW) == []
    unknown = desired_taints(node("Unknown"), NOW)
    assert unknown == [
        {"key": UNREACHABLE, "effect": "NoSchedule"},
        {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": format_rfc3339(NOW)},
    ]
    assert {t["key"] for t in desired_taints(node("False"), NOW)} == {NOT_READY}
    # Back to Ready: the lifecycle taints go, a user's taint stays.
    mine = {"key": "dedicated", "value": "nf", "effect": "NoSchedule"}
    assert desired_taints(node("True", taints=[*unknown, mine]), NOW) == [mine]
    # Still Unknown later: the NoExecute taint keeps the time it was added.
    later = NOW + datetime.timedelta(seconds=60)
    assert desired_taints(node("Unknown", taints=unknown), later) == unknown


def pod(*tolerations: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"tolerations": list(tolerations)}}


def test_eviction_delay_from_tolerations() -> None:
    assert eviction_delay(pod(), TAINT, 300) == 300
    timed = {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}
    assert eviction_delay(pod({**timed, "tolerationSeconds": 5}), TAINT, 300) == 5
    shortest = pod(
        {**timed, "tolerationSeconds": 9}, {"operator": "Exists", "tolerationSeconds": 2}
    )
    assert eviction_delay(shortest, TAINT, 300) == 2
    assert eviction_delay(pod(timed), TAINT, 300) is None, "tolerated for ever"
    no_schedule = {"key": UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}
    assert eviction_delay(pod(no_schedule), TAINT, 300) == 300


def test_due_for_eviction_once_the_delay_ran_out() -> None:
    tainted = node("Unknown", taints=[{**TAINT, "timeAdded": ago(10)}])
    assert due_for_eviction(pod(), tainted, NOW, 30) is None
    assert due_for_eviction(pod(), tainted, NOW, 10) == {**TAINT, "timeAdded": ago(10)}
    other = node("True", taints=[{"key": "dedicated", "effect": "NoExecute", "timeAdded": ago(99)}])
    assert due_for_eviction(pod(), other, NOW, 0) is None, "not a lifecycle taint"


def test_pods_of_a_lost_node_are_marked_not_ready() -> None:
    running = {
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True"},
            ],
        }
    }
    status = not_ready_status(running, NOW)
    assert status is not None and status["phase"] == "Running"
    assert status["conditions"] == [
        {"type": "PodScheduled", "status": "True"},
        {
            "type": "Ready",
            "status": "False",
            "reason": "NodeNotReady",
            "lastTransitionTime": format_rfc3339(NOW),
        },
    ]
    assert running["status"]["conditions"][1]["status"] == "True", "the input is not changed"
    assert not_ready_status({"status": status}, NOW) is None, "already not Ready: no write"
