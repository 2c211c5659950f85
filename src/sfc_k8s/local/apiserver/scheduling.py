"""The local scheduler's decisions: which node a pending pod goes to, or why none fits.

Pure functions over plain API objects, called by the scheduler loop in ``controllers.py`` and
unit-tested in ``tests/unit/local/test_scheduling.py``. They follow kube-scheduler's default
profile, reduced to what the local cluster's nodes can differ in:

- filters: the node is Ready and not ``spec.unschedulable``; the pod's ``nodeSelector`` and
  ``affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`` (terms ORed, their
  ``matchExpressions``/``matchFields`` ANDed; ``In``, ``NotIn``, ``Exists``, ``DoesNotExist``,
  ``Gt``, ``Lt``) match; every ``NoSchedule``/``NoExecute`` taint is tolerated;
- score, best first: fewest pods of the same owner on the node (the default spreading of a
  workload's replicas over hostnames), then the highest sum of matching
  ``preferredDuringSchedulingIgnoredDuringExecution`` weights, then the fewest pods, then the
  node name (so a decision is reproducible);
- no node: a ``PodScheduled=False`` message in kube-scheduler's words,
  ``0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, ...``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sfc_k8s.api.conditions import is_ready

Obj = Mapping[str, Any]

NODE_NOT_READY = "node(s) were not ready"
UNSCHEDULABLE = "node(s) were unschedulable"
AFFINITY = "node(s) didn't match Pod's node affinity/selector"
NO_NODES = "no nodes available to schedule pods"


@dataclass
class NodeLoad:
    """The pods bound to one node that still run (not Succeeded or Failed)."""

    pods: int = 0
    by_owner: Counter[str] = field(default_factory=Counter)

    def add(self, owner: str | None) -> None:
        self.pods += 1
        if owner is not None:
            self.by_owner[owner] += 1


@dataclass(frozen=True)
class Decision:
    """A node for the pod, or None and the message of ``PodScheduled=False``."""

    node: str | None
    message: str = ""


def _labels(node: Obj) -> Mapping[str, str]:
    return (node.get("metadata") or {}).get("labels") or {}


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def owner_uid(pod: Obj) -> str | None:
    """The uid of the pod's controller (its Deployment here), the unit of spreading."""
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _as_int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def _compare(operator: str, value: str, values: list[str]) -> bool:
    """``Gt``/``Lt``: the label, read as an integer, against the one value given."""
    if len(values) != 1:
        return False
    have, bound = _as_int(value), _as_int(values[0])
    if have is None or bound is None:
        return False
    return have > bound if operator == "Gt" else have < bound


def requirement_matches(requirement: Obj, values_of: Mapping[str, str]) -> bool:
    """One ``matchExpressions``/``matchFields`` requirement against labels (or fields)."""
    key = str(requirement.get("key", ""))
    operator = str(requirement.get("operator", ""))
    values = [str(v) for v in requirement.get("values") or []]
    present = key in values_of
    value = values_of.get(key, "")
    if operator in ("Gt", "Lt"):
        return present and _compare(operator, value, values)
    outcome = {
        "In": present and value in values,
        "NotIn": not present or value not in values,
        "Exists": present,
        "DoesNotExist": not present,
    }
    return outcome.get(operator, False)  # an unknown operator matches nothing


def term_matches(term: Obj, node: Obj) -> bool:
    """A node selector term: all its requirements hold; an empty term matches no node."""
    expressions = term.get("matchExpressions") or []
    fields_ = term.get("matchFields") or []
    if not expressions and not fields_:
        return False
    labels = _labels(node)
    node_fields = {"metadata.name": _name(node)}
    return all(requirement_matches(r, labels) for r in expressions) and all(
        requirement_matches(r, node_fields) for r in fields_
    )


def _node_affinity(pod: Obj) -> Obj:
    return ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}


def selector_and_affinity_match(pod: Obj, node: Obj) -> bool:
    """``nodeSelector`` (every label equal) and the required node affinity (a term matches)."""
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    labels = _labels(node)
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    required = _node_affinity(pod).get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return True
    return any(term_matches(t, node) for t in required.get("nodeSelectorTerms") or [])


def preferred_score(pod: Obj, node: Obj) -> int:
    """The sum of the weights of the preferred node affinity terms the node matches."""
    preferred = _node_affinity(pod).get("preferredDuringSchedulingIgnoredDuringExecution") or []
    return sum(
        int(p.get("weight", 0)) for p in preferred if term_matches(p.get("preference") or {}, node)
    )


def tolerates(tolerations: Iterable[Obj], taint: Obj) -> bool:
    """Whether one of ``tolerations`` tolerates ``taint`` (key, operator, value, effect)."""
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def untolerated_taint(pod: Obj, node: Obj) -> Obj | None:
    """The first ``NoSchedule``/``NoExecute`` taint of the node the pod does not tolerate."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return dict(taint)
    return None


def unfit_reason(pod: Obj, node: Obj) -> str | None:
    """Why the pod cannot go to the node, in kube-scheduler's words; None if it can."""
    if (node.get("spec") or {}).get("unschedulable"):
        return UNSCHEDULABLE
    if not selector_and_affinity_match(pod, node):
        return AFFINITY
    taint = untolerated_taint(pod, node)
    if taint is not None:
        return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
    if not is_ready(node):
        return NODE_NOT_READY
    return None


def unschedulable_message(reasons: Counter[str], total: int) -> str:
    if total == 0:
        return NO_NODES
    parts = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
    return f"0/{total} nodes are available: {parts}."


def choose_node(pod: Obj, nodes: Sequence[Obj], loads: Mapping[str, NodeLoad]) -> Decision:
    """Where kube-scheduler's default profile would put ``pod`` (see the module docstring)."""
    reasons: Counter[str] = Counter()
    feasible = []
    for node in nodes:
        reason = unfit_reason(pod, node)
        if reason is None:
            feasible.append(node)
        else:
            reasons[reason] += 1
    if not feasible:
        return Decision(None, unschedulable_message(reasons, len(nodes)))
    owner = owner_uid(pod)
    empty = NodeLoad()

    def rank(node: Obj) -> tuple[int, int, int, str]:
        load = loads.get(_name(node), empty)
        same_owner = load.by_owner[owner] if owner is not None else 0
        return (same_owner, -preferred_score(pod, node), load.pods, _name(node))

    return Decision(_name(min(feasible, key=rank)))
