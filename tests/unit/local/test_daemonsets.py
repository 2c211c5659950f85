"""The local DaemonSet controller's pure decisions (``sfc_k8s.local.apiserver.daemonsets``).

Covers: one pod per eligible node (nodeSelector, required node affinity, taints), the default
tolerations (a not-ready, unreachable or cordoned node keeps and gets its pod; a ``NoExecute``
taint the pod does not tolerate removes it, a ``NoSchedule`` one only stops new pods); no
replacement while a node's previous pod terminates; extra pods on a node and failed pods
deleted; rolling update within ``maxUnavailable`` (an integer or a percentage), unready old
pods first, ``OnDelete`` never; the status counters; admission defaults and errors.
"""

from __future__ import annotations

from typing import Any

import pytest

from sfc_k8s.local.apiserver.daemonsets import (
    REVISION_LABEL,
    admit_daemonset,
    eligibility,
    max_unavailable,
    new_pod,
    plan,
    status_of,
)

NOT_READY = {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}
NOT_READY_NS = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}
DEDICATED_NX = {"key": "dedicated", "value": "db", "effect": "NoExecute"}
DEDICATED_NS = {"key": "dedicated", "value": "db", "effect": "NoSchedule"}


def node(name: str, *, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def daemonset(
    *, strategy: dict[str, Any] | None = None, gen: int = 1, **pod_spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "agent",
            "namespace": "sys",
            "uid": "ds-uid",
            "generation": gen,
        },
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "a", "command": ["true"]}], **pod_spec},
            },
            "updateStrategy": strategy or {"type": "RollingUpdate"},
        },
    }


def pod(
    name: str, on: str, *, revision: str = "r1", ready: bool = True, **extra: Any
) -> dict[str, Any]:
    md = {"name": name, "namespace": "sys", "labels": {REVISION_LABEL: revision}}
    md.update(extra)
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return {"metadata": md, "spec": {"nodeName": on}, "status": status}


NODES = [node("n1"), node("n2"), node("n3")]


def names(pods: list[dict[str, Any]]) -> list[str]:
    return sorted(p["metadata"]["name"] for p in pods)


def test_a_pod_for_every_node_then_nothing_to_do() -> None:
    assert plan(daemonset(), "r1", NODES, []).create == ["n1", "n2", "n3"]
    done = plan(daemonset(), "r1", NODES, [pod("a", "n1"), pod("b", "n2"), pod("c", "n3")])
    assert done.create == [] and done.delete == []


def test_node_selector_and_affinity_choose_the_nodes() -> None:
    nodes = [node("n1", labels={"role": "nf"}), node("n2")]
    assert plan(daemonset(nodeSelector={"role": "nf"}), "r1", nodes, []).create == ["n1"]
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "role", "operator": "DoesNotExist"}]}
                ]
            }
        }
    }
    assert plan(daemonset(affinity=affinity), "r1", nodes, []).create == ["n2"]
    # A node whose labels stop matching loses its pod.
    assert names(plan(daemonset(nodeSelector={"role": "nf"}), "r1", nodes, [
        pod("a", "n1"), pod("b", "n2"),
    ]).delete) == ["b"]  # fmt: skip


@pytest.mark.parametrize(
    "taints",
    [
        [NOT_READY, NOT_READY_NS],
        [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}],
        [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}],
    ],
)
def test_default_tolerations_keep_the_pod_on_a_troubled_node(taints: list[dict[str, Any]]) -> None:
    troubled = node("n1", taints=taints)
    fit = eligibility(daemonset()["spec"]["template"]["spec"], troubled)
    assert fit.should_continue
    result = plan(daemonset(), "r1", [troubled], [pod("a", "n1")])
    assert result.delete == []


def test_a_cordoned_or_unreachable_node_gets_its_pod() -> None:
    cordoned = node(
        "n1",
        unschedulable=True,
        taints=[{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}],
    )
    unreachable = node("n2", taints=[{"key": "node.kubernetes.io/unreachable",
                                      "effect": "NoExecute"}])  # fmt: skip
    assert plan(daemonset(), "r1", [cordoned, unreachable], []).create == ["n1", "n2"]


def test_untolerated_taints() -> None:
    # NoSchedule: no new pod, the running one stays; NoExecute: the running one goes too.
    assert plan(daemonset(), "r1", [node("n1", taints=[DEDICATED_NS])], []).create == []
    kept = plan(daemonset(), "r1", [node("n1", taints=[DEDICATED_NS])], [pod("a", "n1")])
    assert kept.delete == []
    evicted = plan(daemonset(), "r1", [node("n1", taints=[DEDICATED_NX])], [pod("a", "n1")])
    assert names(evicted.delete) == ["a"]
    # The not-ready NoSchedule taint alone is not tolerated by default: no new pod there.
    assert plan(daemonset(), "r1", [node("n1", taints=[NOT_READY_NS])], []).create == []
    # `operator: Exists` with no key tolerates everything (the agent's DaemonSet).
    everything = daemonset(tolerations=[{"operator": "Exists"}])
    assert plan(everything, "r1", [node("n1", taints=[DEDICATED_NX, NOT_READY_NS])], []).create == [
        "n1"
    ]


def test_no_replacement_while_the_previous_pod_terminates() -> None:
    leaving = pod("a", "n1", deletionTimestamp="2026-01-01T00:00:00Z")
    assert plan(daemonset(), "r1", [node("n1")], [leaving]).create == []
    assert plan(daemonset(), "r1", [node("n1")], []).create == ["n1"]


def test_extra_failed_and_orphaned_pods_go() -> None:
    pods = [
        pod("old", "n1", creationTimestamp="2026-01-01T00:00:00Z"),
        pod("new", "n1", creationTimestamp="2026-01-01T00:00:05Z"),
        {**pod("failed", "n2"), "status": {"phase": "Failed"}},
        pod("gone-node", "n9"),
    ]
    result = plan(daemonset(), "r1", [node("n1"), node("n2")], pods)
    assert names(result.delete) == ["failed", "gone-node", "new"]
    assert result.create == []  # n2's pod is created once its failed one is gone


def test_rolling_update_stays_within_max_unavailable() -> None:
    old = [pod(f"p{i}", f"n{i}", revision="r0") for i in (1, 2, 3)]
    result = plan(daemonset(), "r1", NODES, old)
    assert names(result.delete) == ["p1"]  # maxUnavailable 1 by default
    # p1 is being replaced (n1 has no ready pod): nothing more until it is ready.
    replacing = [pod("p1new", "n1", ready=False), *old[1:]]
    assert plan(daemonset(), "r1", NODES, replacing).delete == []
    two = daemonset(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}})
    assert names(plan(two, "r1", NODES, old).delete) == ["p1", "p2"]
    # An old pod that is not ready anyway goes at once, beyond the budget.
    broken = [pod("p1", "n1", revision="r0", ready=False), *old[1:]]
    assert names(plan(daemonset(), "r1", NODES, broken).delete) == ["p1"]
    on_delete = daemonset(strategy={"type": "OnDelete"})
    assert plan(on_delete, "r1", NODES, old).delete == []


@pytest.mark.parametrize(
    ("value", "desired", "expected"), [(1, 3, 1), (0, 3, 1), ("50%", 3, 2), ("10%", 30, 3)]
)
def test_max_unavailable(value: Any, desired: int, expected: int) -> None:
    ds = daemonset(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": value}})
    assert max_unavailable(ds, desired) == expected


def test_status_counts() -> None:
    nodes = [*NODES, node("n4", taints=[DEDICATED_NS])]
    pods = [
        pod("a", "n1"),
        pod("b", "n2", revision="r0"),
        pod("c", "n3", ready=False),
        pod("d", "n4"),  # runs where it would no longer be started
    ]
    status = status_of(daemonset(gen=4), "r1", nodes, pods)
    assert status == {
        "desiredNumberScheduled": 3,
        "currentNumberScheduled": 3,
        "numberMisscheduled": 1,
        "numberReady": 2,
        "updatedNumberScheduled": 2,
        "numberAvailable": 2,
        "numberUnavailable": 1,
        "observedGeneration": 4,
    }


def test_new_pod_is_bound_owned_labelled_and_tolerant() -> None:
    body = new_pod(daemonset(hostNetwork=True), "r1", "n2")
    assert body["spec"]["nodeName"] == "n2"
    assert body["metadata"]["labels"] == {
        "app": "agent",
        REVISION_LABEL: "r1",
        "pod-template-generation": "1",
    }
    (ref,) = body["metadata"]["ownerReferences"]
    assert ref["kind"] == "DaemonSet" and ref["uid"] == "ds-uid" and ref["controller"] is True
    keys = {t["key"] for t in body["spec"]["tolerations"]}
    assert "node.kubernetes.io/not-ready" in keys
    assert "node.kubernetes.io/network-unavailable" in keys  # host network only


def test_admission_defaults_and_errors() -> None:
    ds = daemonset()
    del ds["spec"]["updateStrategy"]
    assert admit_daemonset(ds, None) == []
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    bad = daemonset(strategy={"type": "Recreate"})
    bad["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    fields = sorted(c.field for c in admit_daemonset(bad, None))
    assert fields == ["spec.template.metadata.labels", "spec.updateStrategy.type"]
    changed = daemonset()
    changed["spec"]["selector"]["matchLabels"]["tier"] = "x"
    changed["spec"]["template"]["metadata"]["labels"]["tier"] = "x"
    (cause,) = admit_daemonset(changed, daemonset())
    assert cause.field == "spec.selector" and "immutable" in cause.message
