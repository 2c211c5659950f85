"""The local scheduler's pure decisions (``sfc_k8s.local.apiserver.scheduling``).

Covers: a Deployment's replicas spread over the nodes (fewest pods of the same owner first,
then fewest pods, then the name); NotReady, unschedulable and tainted nodes are never chosen
(a toleration lifts the taint); ``nodeSelector``; required node affinity with ``In``,
``NotIn``, ``Exists``, ``DoesNotExist``, ``Gt``/``Lt`` and ``matchFields`` on the name, terms
ORed and requirements ANDed, an empty term matching nothing; preferred affinity as a
tie-break; the ``PodScheduled=False`` message in kube-scheduler's words, counting each reason.
"""

from __future__ import annotations

from typing import Any

import pytest

from sfc_k8s.local.apiserver.scheduling import (
    NO_NODES,
    NodeLoad,
    choose_node,
    requirement_matches,
    tolerates,
    unfit_reason,
)

UNREACHABLE = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}


def node(
    name: str,
    *,
    ready: str = "True",
    labels: dict[str, str] | None = None,
    unschedulable: bool = False,
    taints: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"unschedulable": True} if unschedulable else {}
    if taints:
        spec["taints"] = taints
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": spec,
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


def pod(owner: str | None = "deploy-uid", **spec: Any) -> dict[str, Any]:
    refs = [{"uid": owner, "controller": True}] if owner else []
    return {"metadata": {"name": "p", "ownerReferences": refs}, "spec": spec}


def required(*terms: dict[str, Any]) -> dict[str, Any]:
    terms_ = list(terms)
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms_}
        }
    }


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": list(values)}


def place_replicas(count: int, nodes: list[dict[str, Any]]) -> list[str]:
    loads: dict[str, NodeLoad] = {}
    placed = []
    for _ in range(count):
        decision = choose_node(pod(), nodes, loads)
        assert decision.node is not None
        loads.setdefault(decision.node, NodeLoad()).add("deploy-uid")
        placed.append(decision.node)
    return placed


def test_replicas_spread_evenly_over_ready_nodes() -> None:
    nodes = [node("node-1"), node("node-2"), node("node-3")]
    placed = place_replicas(7, nodes)
    assert [placed.count(n) for n in ("node-1", "node-2", "node-3")] == [3, 2, 2]


def test_spreading_counts_the_owner_before_the_total() -> None:
    nodes = [node("node-1"), node("node-2")]
    busy = NodeLoad()
    for _ in range(5):
        busy.add("other-owner")
    mine = NodeLoad()
    mine.add("deploy-uid")
    # node-1 runs five pods of someone else, node-2 one of ours: ours goes to node-1.
    assert choose_node(pod(), nodes, {"node-1": busy, "node-2": mine}).node == "node-1"
    # A pod with no owner goes where there are fewer pods.
    assert choose_node(pod(owner=None), nodes, {"node-1": busy, "node-2": mine}).node == "node-2"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (node("node-1", ready="Unknown"), "node(s) were not ready"),
        (node("node-1", ready="False"), "node(s) were not ready"),
        (node("node-1", unschedulable=True), "node(s) were unschedulable"),
        (
            node("node-1", taints=[UNREACHABLE]),
            "node(s) had untolerated taint {node.kubernetes.io/unreachable: }",
        ),
    ],
)
def test_never_onto_a_not_ready_unschedulable_or_tainted_node(
    bad: dict[str, Any], reason: str
) -> None:
    assert unfit_reason(pod(), bad) == reason
    assert place_replicas(3, [bad, node("node-2")]) == ["node-2"] * 3
    decision = choose_node(pod(), [bad], {})
    assert decision.node is None
    assert decision.message == f"0/1 nodes are available: 1 {reason}."


def test_a_toleration_lifts_a_taint() -> None:
    tainted = node("node-1", taints=[{"key": "dedicated", "value": "nf", "effect": "NoSchedule"}])
    assert unfit_reason(pod(), tainted) is not None
    ok = {"key": "dedicated", "operator": "Equal", "value": "nf", "effect": "NoSchedule"}
    assert unfit_reason(pod(tolerations=[ok]), tainted) is None
    assert unfit_reason(pod(tolerations=[{"operator": "Exists"}]), tainted) is None
    wrong_value = {**ok, "value": "other"}
    wrong_effect = {**ok, "effect": "NoExecute"}
    assert not tolerates([wrong_value, wrong_effect], tainted["spec"]["taints"][0])


def test_node_selector() -> None:
    nodes = [node("node-1", labels={"zone": "a"}), node("node-2", labels={"zone": "b"})]
    assert place_replicas(1, nodes) == ["node-1"]
    assert choose_node(pod(nodeSelector={"zone": "b"}), nodes, {}).node == "node-2"
    decision = choose_node(pod(nodeSelector={"zone": "c"}), nodes, {})
    assert decision.node is None
    assert decision.message == (
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    )


@pytest.mark.parametrize(
    ("requirement", "matches"),
    [
        (expr("zone", "In", "a", "b"), True),
        (expr("zone", "In", "b"), False),
        (expr("zone", "NotIn", "b"), True),
        (expr("zone", "NotIn", "a"), False),
        (expr("missing", "NotIn", "a"), True),
        (expr("zone", "Exists"), True),
        (expr("missing", "Exists"), False),
        (expr("missing", "DoesNotExist"), True),
        (expr("zone", "DoesNotExist"), False),
        (expr("cores", "Gt", "4"), True),
        (expr("cores", "Gt", "8"), False),
        (expr("cores", "Lt", "9"), True),
        (expr("zone", "Gt", "1"), False),  # not a number
        (expr("zone", "Near", "a"), False),  # unknown operator
    ],
)
def test_requirement_operators(requirement: dict[str, Any], matches: bool) -> None:
    assert requirement_matches(requirement, {"zone": "a", "cores": "8"}) is matches


def test_required_node_affinity_terms() -> None:
    nodes = [
        node("node-1", labels={"zone": "a", "nic": "fast"}),
        node("node-2", labels={"zone": "b", "nic": "fast"}),
        node("node-3", labels={"zone": "b"}),
    ]
    both = {"matchExpressions": [expr("zone", "In", "b"), expr("nic", "Exists")]}
    assert choose_node(pod(affinity=required(both)), nodes, {}).node == "node-2"
    either = [
        {"matchExpressions": [expr("zone", "In", "a")]},
        {"matchFields": [expr("metadata.name", "In", "node-3")]},
    ]
    placed = {
        choose_node(pod(affinity=required(*either)), nodes, {"node-1": _load(1)}).node,
        choose_node(pod(affinity=required(*either)), nodes, {"node-3": _load(1)}).node,
    }
    assert placed == {"node-1", "node-3"}
    not_fast = {"matchExpressions": [expr("nic", "DoesNotExist")]}
    assert choose_node(pod(affinity=required(not_fast)), nodes, {}).node == "node-3"
    nowhere = choose_node(pod(affinity=required({})), nodes, {})  # an empty term
    assert nowhere.node is None and "3 node(s) didn't match" in nowhere.message


def _load(count: int) -> NodeLoad:
    load = NodeLoad()
    for _ in range(count):
        load.add("deploy-uid")
    return load


def test_preferred_affinity_breaks_ties_only() -> None:
    nodes = [node("node-1"), node("node-2", labels={"nic": "fast"})]
    preferred = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "preference": {"matchExpressions": [expr("nic", "In", "fast")]}}
            ]
        }
    }
    assert choose_node(pod(affinity=preferred), nodes, {}).node == "node-2"
    # Spreading comes first: with one of ours on node-2 already, node-1 gets the next.
    assert choose_node(pod(affinity=preferred), nodes, {"node-2": _load(1)}).node == "node-1"


def test_message_counts_each_reason() -> None:
    nodes = [
        node("node-1", ready="Unknown", labels={"zone": "a"}),
        node("node-2", labels={"zone": "b"}),
        node("node-3", unschedulable=True),
        node("node-4", ready="Unknown", labels={"zone": "a"}),
    ]
    decision = choose_node(pod(nodeSelector={"zone": "a"}), nodes, {})
    assert decision.message == (
        "0/4 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "2 node(s) were not ready, 1 node(s) were unschedulable."
    )
    assert choose_node(pod(), [], {}).message == NO_NODES
