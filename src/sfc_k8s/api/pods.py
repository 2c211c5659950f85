"""Reduction of Pod bodies to the few facts the controller needs, and pod -> function matching.

The controller keeps a ``PodInfo`` per pod in a Kopf index (so a chain reconcile never lists pods
from the API) and asks ``functions_of`` which functions of a chain select a pod.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sfc_k8s.api.conditions import is_ready
from sfc_k8s.api.models import ChainSpec, FunctionSpec, PodInfo

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


def pod_info(body: Mapping[str, Any]) -> PodInfo:
    """Summarise a Pod body: identity, labels, node, readiness and whether it is terminating."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    ready = status.get("phase") not in TERMINAL_PHASES and is_ready(body)
    labels = meta.get("labels") or {}
    return PodInfo(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        labels={str(k): str(v) for k, v in labels.items()},
        node=spec.get("nodeName") or None,
        ready=ready,
        terminating=meta.get("deletionTimestamp") is not None,
        owner=_controller_owner(meta.get("ownerReferences")),
    )


def _controller_owner(refs: object) -> tuple[str, str]:
    """(kind, name) of the reference marked ``controller`` (the workload's pods' ReplicaSet,
    StatefulSet...), or ("", "")."""
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, Mapping) and ref.get("controller"):
            return str(ref.get("kind") or ""), str(ref.get("name") or "")
    return "", ""


def functions_of(chain: ChainSpec, pod: PodInfo) -> list[FunctionSpec]:
    """The functions of ``chain`` whose selector matches ``pod`` (same namespace only)."""
    if pod.namespace != chain.namespace:
        return []
    return [fn for fn in chain.functions if fn.selector.matches(pod.labels)]


SelectionKey = tuple[str, str] | None  # a label pair a selected pod carries; None: any pod


def selection_keys(chain: ChainSpec) -> frozenset[SelectionKey]:
    """Keys to index ``chain`` under, to find the chains that may select a pod without going
    through all of them: each function's first matchLabels pair (a pod it selects carries
    it), None for a function with none (it may select any pod of the namespace)."""
    return frozenset(
        fn.selector.match_labels[0] if fn.selector.match_labels else None for fn in chain.functions
    )


def pod_selection_keys(labels: Mapping[str, str]) -> list[SelectionKey]:
    """The keys (``selection_keys``) under which the chains that may select a pod with
    ``labels`` are indexed; ``functions_of`` then decides."""
    return [*labels.items(), None]


def selector_overlaps(chain: ChainSpec, pods: Iterable[PodInfo]) -> dict[str, tuple[str, ...]]:
    """Pods selected by more than one function of ``chain``: pod name -> function names.

    Such a pod would be an endpoint on two sides at once; the controller leaves it out of every
    link and reports the overlap so the user can make the selectors disjoint.
    """
    overlaps: dict[str, tuple[str, ...]] = {}
    for pod in pods:
        names = tuple(fn.name for fn in functions_of(chain, pod))
        if len(names) > 1:
            overlaps[pod.name] = names
    return dict(sorted(overlaps.items()))


def interface_claims(chain: ChainSpec, pods: Iterable[PodInfo]) -> dict[tuple[str, str], str]:
    """(pod name, pod interface) -> link name, for every pod interface ``chain`` links."""
    pods = list(pods)
    ambiguous = set(selector_overlaps(chain, pods))
    claims: dict[tuple[str, str], str] = {}
    for pod in pods:
        if pod.name in ambiguous:
            continue
        names = {fn.name for fn in functions_of(chain, pod)}
        for link in chain.links:
            for end in (link.a, link.b):
                if end.function in names:
                    claims[(pod.name, end.interface)] = link.name
    return claims


def interface_conflicts(
    chain: ChainSpec, pods: Iterable[PodInfo], others: Iterable[ChainSpec]
) -> dict[str, tuple[str, str]]:
    """Pods of ``chain`` with an interface an older chain of the namespace links already.

    Returns pod name -> (older chain, interface). One host interface can serve one link only, so
    the older chain keeps it and the younger one leaves the pod out (and reports it): creating a
    chain never disturbs the traffic of an existing one.
    """
    pods = [p for p in pods if p.namespace == chain.namespace]
    mine = interface_claims(chain, pods)
    if not mine:
        return {}
    conflicts: dict[str, tuple[str, str]] = {}
    for other in sorted(others, key=lambda c: c.seniority):
        if other.namespace != chain.namespace or other.seniority >= chain.seniority:
            continue
        for pod, interface in interface_claims(other, pods):
            if (pod, interface) in mine and pod not in conflicts:
                conflicts[pod] = (other.name, interface)
    return dict(sorted(conflicts.items()))
