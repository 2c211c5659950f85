"""Chain status and conditions, computed from the chain, its pods and what the agents reported.

The controller writes exactly what ``compute_chain_status`` / ``invalid_chain_status`` return and
only when it differs from the stored status, so a no-op reconcile makes no API call.
``set_condition`` keeps ``lastTransitionTime`` while a condition's status does not change, and
``condition_changes`` tells which transitions deserve a Kubernetes event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sfc_k8s.api.crossconnection import LinkProgramming, compute_links
from sfc_k8s.api.errors import ChainInvalid
from sfc_k8s.api.models import (
    ChainSpec,
    ConditionStatus,
    ConditionType,
    CrossConnectionSpec,
    LabelSelector,
    PodInfo,
    Reason,
    SelectorOperator,
)
from sfc_k8s.api.pods import functions_of, selector_overlaps
from sfc_k8s.api.timestamps import now_rfc3339
from sfc_k8s.api.types import (
    ChainStatusBody,
    ConditionBody,
    FunctionStatusBody,
    LinkStatusBody,
)

CONDITION_ORDER = (ConditionType.READY, ConditionType.DEGRADED)
MAX_LISTED = 5  # names listed in a condition message before "and N more"

Problem = tuple[Reason, str]  # a Degraded reason and its message


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    more = len(names) - MAX_LISTED
    return f"{shown} and {more} more" if more > 0 else shown


def condition(
    type_: ConditionType,
    status: ConditionStatus,
    reason: Reason,
    message: str,
    *,
    observed_generation: int,
) -> ConditionBody:
    """A condition body without ``lastTransitionTime`` (``set_condition`` fills it in)."""
    return {
        "type": str(type_),
        "status": str(status),
        "reason": str(reason),
        "message": message,
        "observedGeneration": observed_generation,
    }


def set_condition(
    conditions: Sequence[ConditionBody], new: ConditionBody, *, now: str
) -> list[ConditionBody]:
    """Replace the condition of ``new``'s type, keeping lastTransitionTime if status is unchanged.

    Conditions come back in a stable order (Ready, Degraded, then others by type) so that equal
    states compare equal.
    """
    previous = next((c for c in conditions if c.get("type") == new.get("type")), None)
    merged: ConditionBody = {**new}
    if previous is not None and previous.get("status") == new.get("status"):
        merged["lastTransitionTime"] = previous.get("lastTransitionTime") or now
    else:
        merged["lastTransitionTime"] = now
    others = [c for c in conditions if c.get("type") != new.get("type")]
    return sort_conditions([*others, merged])


def sort_conditions(conditions: Iterable[ConditionBody]) -> list[ConditionBody]:
    order = {str(t): i for i, t in enumerate(CONDITION_ORDER)}
    return sorted(conditions, key=lambda c: (order.get(c.get("type", ""), 99), c.get("type", "")))


def get_condition(
    conditions: Sequence[ConditionBody], type_: ConditionType
) -> ConditionBody | None:
    return next((c for c in conditions if c.get("type") == str(type_)), None)


def condition_changes(
    old: Sequence[ConditionBody], new: Sequence[ConditionBody]
) -> list[ConditionBody]:
    """Conditions of ``new`` whose status or reason differs from ``old``: worth an event."""
    changes = []
    for cond in new:
        before = next((c for c in old if c.get("type") == cond.get("type")), None)
        if before is None or (before.get("status"), before.get("reason")) != (
            cond.get("status"),
            cond.get("reason"),
        ):
            changes.append(cond)
    return changes


def _apply(
    previous: Sequence[ConditionBody], new: Iterable[ConditionBody], now: str
) -> list[ConditionBody]:
    conditions = list(previous)
    for cond in new:
        conditions = set_condition(conditions, cond, now=now)
    return conditions


def invalid_chain_status(
    error: ChainInvalid,
    *,
    generation: int,
    previous: ChainStatusBody | None = None,
    now: str | None = None,
) -> ChainStatusBody:
    """Status of a chain whose spec is invalid: both conditions say what to fix.

    The per-function and per-link figures of the last valid spec are kept (the controller leaves
    that spec's CrossConnections in place, so traffic is not cut by a bad edit).
    """
    now = now or now_rfc3339()
    previous = previous or {}
    message = "spec is invalid, fix: " + "; ".join(error.problems)
    status: ChainStatusBody = {**previous}
    status["observedGeneration"] = generation
    status["conditions"] = _apply(
        previous.get("conditions") or (),
        [
            condition(
                ConditionType.READY,
                ConditionStatus.FALSE,
                Reason.INVALID_SPEC,
                message,
                observed_generation=generation,
            ),
            condition(
                ConditionType.DEGRADED,
                ConditionStatus.TRUE,
                Reason.INVALID_SPEC,
                message,
                observed_generation=generation,
            ),
        ],
        now,
    )
    return status


def compute_chain_status(
    chain: ChainSpec,
    pods: Iterable[PodInfo],
    *,
    links: Sequence[CrossConnectionSpec] | None = None,
    programming: Mapping[str, LinkProgramming] | None = None,
    conflicts: Sequence[str] = (),
    refusals: Sequence[str] = (),
    interface_conflicts: Mapping[str, tuple[str, str]] | None = None,
    previous: ChainStatusBody | None = None,
    now: str | None = None,
) -> ChainStatusBody:
    """The status of a valid chain.

    ``pods``: every pod of the namespace that one of the chain's selectors matches (others are
    ignored), so a function none of them matches has a selector that matches no pod at all.
    ``links``: the CrossConnection specs as computed by ``compute_links`` (recomputed if omitted).
    ``programming``: per link name, what the agents reported (``link_programming``); a link
    missing from the mapping counts as not programmed yet. ``None`` skips that check (for callers
    running without node agents). ``conflicts``: problems found while applying (for instance a
    CrossConnection name owned by another chain), reported as Degraded. ``refusals``: writes the
    API server refused for good (a 403 of RBAC, a 422), Degraded too. ``interface_conflicts``:
    pods left out because an older chain links the same interface (``interface_conflicts()``).

    Ready is True when every function has a Ready replica and every link is programmed by the
    agents of the nodes holding its endpoints; ``readyLinks`` counts the links with active
    endpoints on both sides that the agents report programmed. Degraded is True when something
    needs a person: a selector matching no pod, overlapping selectors, a name conflict, an agent
    that failed to program a link.
    """
    now = now or now_rfc3339()
    pods = [p for p in pods if p.namespace == chain.namespace]
    claimed = dict(interface_conflicts or {})
    links = list(links) if links is not None else compute_links(chain, pods, exclude=claimed)
    overlaps = selector_overlaps(chain, pods)
    functions = _function_figures(chain, pods, left_out=set(overlaps) | set(claimed))
    figures = _link_figures(chain, links, programming)
    problems = [
        *_overlap_problems(overlaps),
        *_claim_problems(claimed),
        *([(Reason.NAME_CONFLICT, "; ".join(conflicts))] if conflicts else []),
        *([(Reason.WRITE_REFUSED, "; ".join(refusals))] if refusals else []),
        *_unmatched_selectors(chain, pods),
        *_programming_problems(figures.failed),
        *_mtu_problems(figures.oversized),
    ]
    not_ready = [name for name, f in functions.items() if not f.get("readyReplicas")]
    ready, degraded = _conditions(
        chain.generation,
        problems,
        not_ready=not_ready,
        waiting=figures.waiting,
        counts=(len(functions), len(links)),
    )
    previous = previous or {}
    return {
        "observedGeneration": chain.generation,
        "functions": functions,
        "links": figures.links,
        "readyFunctions": f"{len(functions) - len(not_ready)}/{len(functions)}",
        "readyLinks": f"{figures.ready}/{len(links)}",
        "conditions": _apply(previous.get("conditions") or (), [ready, degraded], now),
    }


@dataclass
class _LinkFigures:
    """Per-link status figures and what the agents reported, summed over the chain's links."""

    links: dict[str, LinkStatusBody] = field(default_factory=dict)
    ready: int = 0  # links with active endpoints on both sides, programmed
    waiting: set[str] = field(default_factory=set)  # nodes yet to report the current endpoints
    failed: list[str] = field(default_factory=list)  # "link on node: message"
    oversized: list[str] = field(default_factory=list)  # "link on node: message"


def _function_figures(
    chain: ChainSpec, pods: Sequence[PodInfo], *, left_out: Collection[str]
) -> dict[str, FunctionStatusBody]:
    """Replicas (selected, not terminating, not left out) and Ready replicas per function, in
    all and per node (a chain spanning nodes shows where its capacity is)."""
    functions: dict[str, FunctionStatusBody] = {}
    for fn in chain.functions:
        selected = [
            p
            for p in pods
            if p.name not in left_out and not p.terminating and fn in functions_of(chain, p)
        ]
        by_node = Counter(p.node for p in selected if p.ready and p.node)
        functions[fn.name] = {
            "replicas": len(selected),
            "readyReplicas": sum(1 for p in selected if p.ready),
            "readyReplicasByNode": dict(sorted(by_node.items())),
        }
    return functions


def _link_figures(
    chain: ChainSpec,
    links: Sequence[CrossConnectionSpec],
    programming: Mapping[str, LinkProgramming] | None,
) -> _LinkFigures:
    figures = _LinkFigures()
    for spec in links:
        figures.links[spec.link] = {
            "endpointsA": len(spec.a.active),
            "endpointsB": len(spec.b.active),
            "drainingA": len(spec.a.draining),
            "drainingB": len(spec.b.draining),
            "crossConnection": chain.xc_name(spec.link),
        }
        report = None
        if programming is not None:
            report = programming.get(spec.link) or LinkProgramming(
                waiting=tuple(sorted(spec.nodes))
            )
            figures.waiting.update(report.waiting)
            figures.failed += [f"{spec.link} on {node}: {msg}" for node, msg in report.failed]
            figures.oversized += [f"{spec.link} on {node}: {m}" for node, m in report.oversized]
        if spec.a.active and spec.b.active and (report is None or report.programmed):
            figures.ready += 1
    return figures


def selector_text(selector: LabelSelector) -> str:
    """A selector as ``kubectl get -l`` takes it: ``app=fw,track notin (canary),!debug``."""
    parts = [f"{key}={value}" for key, value in selector.match_labels]
    for req in selector.match_expressions:
        values = ",".join(req.values)
        parts.append(
            {
                SelectorOperator.IN: f"{req.key} in ({values})",
                SelectorOperator.NOT_IN: f"{req.key} notin ({values})",
                SelectorOperator.EXISTS: req.key,
                SelectorOperator.DOES_NOT_EXIST: f"!{req.key}",
            }[req.operator]
        )
    return ",".join(parts)


def _unmatched_selectors(chain: ChainSpec, pods: Sequence[PodInfo]) -> list[Problem]:
    """Functions whose selector matches no pod of the namespace: a mistyped label, most often
    (pods that exist but are not Ready are FunctionsNotReady instead)."""
    unmatched = [
        f"{fn.name} ({selector_text(fn.selector)})"
        for fn in chain.functions
        if not any(fn.selector.matches(p.labels) for p in pods)
    ]
    if not unmatched:
        return []
    return [
        (
            Reason.SELECTOR_MATCHES_NO_POD,
            f"the selector of {'function' if len(unmatched) == 1 else 'functions'} "
            f"{_listing(unmatched)} matches no pod in namespace {chain.namespace}, "
            "check the labels",
        )
    ]


def _overlap_problems(overlaps: Mapping[str, tuple[str, ...]]) -> list[Problem]:
    if not overlaps:
        return []
    pods_listed = [f"{pod} ({' and '.join(fns)})" for pod, fns in overlaps.items()]
    return [
        (
            Reason.SELECTOR_OVERLAP,
            "pods selected by several functions are left out of every link, make the "
            f"selectors disjoint: {_listing(pods_listed)}",
        )
    ]


def _claim_problems(claimed: Mapping[str, tuple[str, str]]) -> list[Problem]:
    if not claimed:
        return []
    pods_listed = [
        f"{pod} ({interface} is linked by chain {other})"
        for pod, (other, interface) in claimed.items()
    ]
    return [
        (
            Reason.INTERFACE_CONFLICT,
            "pods whose interfaces an older chain links already are left out, select "
            f"other pods or remove them from the other chain: {_listing(pods_listed)}",
        )
    ]


def _programming_problems(failed: Sequence[str]) -> list[Problem]:
    if not failed:
        return []
    return [(Reason.PROGRAMMING_FAILED, f"node agents failed to program: {_listing(failed)}")]


def _mtu_problems(oversized: Sequence[str]) -> list[Problem]:
    if not oversized:
        return []
    return [(Reason.TUNNEL_MTU_EXCEEDED, f"frames too large for the tunnel: {_listing(oversized)}")]


def _conditions(
    gen: int,
    problems: Sequence[Problem],
    *,
    not_ready: Sequence[str],
    waiting: Collection[str],
    counts: tuple[int, int],
) -> tuple[ConditionBody, ConditionBody]:
    """Ready and Degraded: the first problem's reason (all messages joined), else readiness."""
    if problems:
        reason = problems[0][0]
        message = "; ".join(m for _, m in problems)
        return (
            condition(
                ConditionType.READY, ConditionStatus.FALSE, reason, message, observed_generation=gen
            ),
            condition(
                ConditionType.DEGRADED,
                ConditionStatus.TRUE,
                reason,
                message,
                observed_generation=gen,
            ),
        )
    degraded = condition(
        ConditionType.DEGRADED,
        ConditionStatus.FALSE,
        Reason.AS_EXPECTED,
        "no problem found",
        observed_generation=gen,
    )
    if not_ready:
        reason, message = (
            Reason.FUNCTIONS_NOT_READY,
            f"waiting for a Ready replica of: {_listing(not_ready)}",
        )
    elif waiting:
        reason, message = (
            Reason.NOT_PROGRAMMED,
            f"waiting for the node agents on: {_listing(sorted(waiting))}",
        )
    else:
        functions, links = counts
        reason, message = (
            Reason.READY,
            f"{functions} functions have Ready replicas and {links} links are programmed",
        )
    status = ConditionStatus.TRUE if reason is Reason.READY else ConditionStatus.FALSE
    return condition(
        ConditionType.READY, status, reason, message, observed_generation=gen
    ), degraded


def status_merge_patch(status: Mapping[str, Any], *stored: Mapping[str, Any]) -> dict[str, Any]:
    """The body of a JSON merge patch of ``status`` over any of the ``stored`` versions: keys
    that ``status`` no longer has, at the top, in the ``functions`` and ``links`` maps and in
    their entries, are set to null (a merge patch keeps what it does not mention)."""
    body: dict[str, Any] = dict(status)
    for name in ("functions", "links"):
        gone = {key for old in stored for key in old.get(name) or {}}
        gone -= set(body.get(name) or {})
        entries = {**(body.get(name) or {}), **dict.fromkeys(sorted(gone))}
        for key, entry in entries.items():
            # a field an entry lost (a function's autoscaling block removed) goes too
            lost = {f for old in stored for f in (old.get(name) or {}).get(key) or {}}
            lost -= set(entry or {})
            if entry is not None and lost:
                entries[key] = {**entry, **dict.fromkeys(sorted(lost))}
        if entries:
            body[name] = entries
    for old in stored:
        for key in old:
            body.setdefault(key, None)
    return body
