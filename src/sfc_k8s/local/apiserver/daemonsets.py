"""The local DaemonSet controller: one pod per eligible node, rolling updates, status.

What kube-controller-manager's DaemonSet controller does, reduced to the local cluster. The
decisions are pure functions over plain API objects (``eligibility``, ``plan``, ``status_of``,
unit-tested in ``tests/unit/local/test_daemonsets.py``); ``DaemonSetController.sync`` applies
them to the store. ``controllers.Controllers`` calls ``sync`` on every pass; ``store.py`` calls
``admit_daemonset`` on every write of a DaemonSet (defaults and validation).

- Eligible node: the template's ``nodeSelector`` and required node affinity match, and every
  ``NoSchedule``/``NoExecute`` taint is tolerated by the template's tolerations plus the ones
  Kubernetes adds to every DaemonSet pod (``default_tolerations``). A pod stays on a node that
  is no longer eligible unless a ``NoExecute`` taint it does not tolerate (or a selector that
  no longer matches) says otherwise, as in Kubernetes.
- The controller binds its pods itself (``spec.nodeName``, as the DaemonSet controller did
  before it used the scheduler): so cordoned and not-ready nodes, whose taints DaemonSet pods
  tolerate, get theirs too, without teaching the local scheduler about them.
- A node's replacement pod is created once its previous pod is gone, not while it terminates:
  the agent's pods use the node's network and a host port, which kube-scheduler's NodePorts
  filter would keep apart in the same way.
- Rolling update (``maxUnavailable``, an integer or a percentage of the desired nodes, rounded
  up; ``maxSurge`` is not emulated): old pods that are not ready go first, then ready ones as
  long as no more than ``maxUnavailable`` nodes lack a ready pod. ``OnDelete`` replaces a pod
  only when the user deletes it. A pod is available as soon as it is Ready
  (``minReadySeconds`` is not emulated).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sfc_k8s.api.conditions import is_ready
from sfc_k8s.local.apiserver.errors import Cause, StatusError
from sfc_k8s.local.apiserver.scheduling import selector_and_affinity_match, tolerates
from sfc_k8s.local.apiserver.selectors import match_label_selector_object

if TYPE_CHECKING:
    from sfc_k8s.local.apiserver.store import Store

Obj = dict[str, Any]

PODS = ("", "pods")
NODES = ("", "nodes")
DAEMONSETS = ("apps", "daemonsets")
REVISION_LABEL = "controller-revision-hash"
GENERATION_LABEL = "pod-template-generation"
FINISHED = ("Succeeded", "Failed")


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def default_tolerations(template_spec: Mapping[str, Any]) -> list[Obj]:
    """The tolerations Kubernetes adds to every DaemonSet pod (and, for a pod on the node's
    network, the one for a node whose network is not set up yet)."""
    tolerations: list[Obj] = [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
        {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
    ]
    if template_spec.get("hostNetwork"):
        tolerations.append(
            {
                "key": "node.kubernetes.io/network-unavailable",
                "operator": "Exists",
                "effect": "NoSchedule",
            }
        )
    return tolerations


def pod_spec_for(template_spec: Mapping[str, Any]) -> Obj:
    """The spec of a DaemonSet's pod: the template's, plus the default tolerations it lacks."""
    spec = copy.deepcopy(dict(template_spec))
    tolerations = list(spec.get("tolerations") or [])
    tolerations += [t for t in default_tolerations(spec) if t not in tolerations]
    spec["tolerations"] = tolerations
    return spec


@dataclass(frozen=True)
class Eligibility:
    """Whether a DaemonSet's pod should be started on a node, and kept there if it runs."""

    should_run: bool
    should_continue: bool


def eligibility(template_spec: Mapping[str, Any], node: Mapping[str, Any]) -> Eligibility:
    """The DaemonSet controller's node predicates for a template (see the module docstring)."""
    pod = {"spec": pod_spec_for(template_spec)}
    if not selector_and_affinity_match(pod, node):
        return Eligibility(False, False)
    tolerations = pod["spec"]["tolerations"]
    untolerated = {
        t.get("effect")
        for t in (node.get("spec") or {}).get("taints") or []
        if t.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, t)
    }
    return Eligibility(not untolerated, "NoExecute" not in untolerated)


def max_unavailable(daemonset: Mapping[str, Any], desired: int) -> int:
    """``spec.updateStrategy.rollingUpdate.maxUnavailable`` as a number of nodes (at least 1:
    with no surge, a rollout could not progress otherwise)."""
    rolling = ((daemonset.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate")
    value = (rolling or {}).get("maxUnavailable", 1)
    if isinstance(value, str) and value.endswith("%"):
        value = math.ceil(desired * int(value[:-1]) / 100)
    return max(1, int(value))


@dataclass
class Plan:
    """What one pass does for one DaemonSet: nodes to create a pod on, pods to delete."""

    create: list[str] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)


def _revision(pod: Mapping[str, Any]) -> str | None:
    return (_meta(pod).get("labels") or {}).get(REVISION_LABEL)


def _keep_order(pod: Mapping[str, Any], revision: str) -> tuple[bool, bool, str]:
    """Sort key of a node's pods, the one to keep first: current template, ready, oldest."""
    labels = _meta(pod).get("labels") or {}
    return (
        labels.get(REVISION_LABEL) != revision,
        not is_ready(pod),
        str(_meta(pod).get("creationTimestamp", "")),
    )


def _by_node(pods: Sequence[Obj]) -> tuple[dict[str, list[Obj]], set[str]]:
    """Live pods per node, and the nodes that still have a terminating pod."""
    live: dict[str, list[Obj]] = {}
    terminating: set[str] = set()
    for pod in pods:
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        if _meta(pod).get("deletionTimestamp"):
            terminating.add(node)
        else:
            live.setdefault(node, []).append(pod)
    return live, terminating


def plan(
    daemonset: Mapping[str, Any], revision: str, nodes: Sequence[Obj], pods: Sequence[Obj]
) -> Plan:
    """One pass of the DaemonSet controller over ``pods`` (the DaemonSet's) and ``nodes``."""
    spec = daemonset.get("spec") or {}
    template_spec = (spec.get("template") or {}).get("spec") or {}
    result = Plan()
    live, terminating = _by_node(pods)
    kept: dict[str, Obj] = {}
    desired = 0
    for node in nodes:
        name = str(_meta(node).get("name", ""))
        fit = eligibility(template_spec, node)
        desired += fit.should_run
        on_node = sorted(live.pop(name, []), key=lambda p: _keep_order(p, revision))
        failed = [p for p in on_node if (p.get("status") or {}).get("phase") in FINISHED]
        result.delete += failed
        on_node = [p for p in on_node if p not in failed]
        if on_node and (fit.should_run or fit.should_continue):
            kept[name] = on_node[0]
            result.delete += on_node[1:]
        else:
            result.delete += on_node
            if fit.should_run and not failed and name not in terminating:
                result.create.append(name)
    for orphans in live.values():  # pods on nodes that no longer exist (or none)
        result.delete += orphans
    if (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate":
        result.delete += _rollout(kept, revision, desired, max_unavailable(daemonset, desired))
    return result


def _rollout(kept: Mapping[str, Obj], revision: str, desired: int, budget: int) -> list[Obj]:
    """Old pods to delete now: every unready one, and ready ones within the budget."""
    ready_nodes = sum(1 for p in kept.values() if is_ready(p))
    unavailable = max(0, desired - ready_nodes)
    old = [
        p for p in kept.values() if (_meta(p).get("labels") or {}).get(REVISION_LABEL) != revision
    ]
    delete = [p for p in old if not is_ready(p)]
    room = budget - unavailable
    for pod in sorted((p for p in old if is_ready(p)), key=lambda p: str(p["spec"]["nodeName"])):
        if room <= 0:
            break
        delete.append(pod)
        room -= 1
    return delete


def status_of(
    daemonset: Mapping[str, Any], revision: str, nodes: Sequence[Obj], pods: Sequence[Obj]
) -> Obj:
    """The DaemonSet's ``status`` as the controller reports it."""
    template_spec = ((daemonset.get("spec") or {}).get("template") or {}).get("spec") or {}
    live, _ = _by_node(pods)
    counts = dict.fromkeys(
        (
            "desiredNumberScheduled",
            "currentNumberScheduled",
            "numberMisscheduled",
            "numberReady",
            "updatedNumberScheduled",
            "numberAvailable",
        ),
        0,
    )
    for node in nodes:
        on_node = live.get(str(_meta(node).get("name", "")), [])
        should_run = eligibility(template_spec, node).should_run
        if not should_run:
            counts["numberMisscheduled"] += bool(on_node)
            continue
        counts["desiredNumberScheduled"] += 1
        if not on_node:
            continue
        counts["currentNumberScheduled"] += 1
        ready = any(is_ready(p) for p in on_node)
        counts["numberReady"] += ready
        counts["numberAvailable"] += ready
        counts["updatedNumberScheduled"] += any(
            (_meta(p).get("labels") or {}).get(REVISION_LABEL) == revision for p in on_node
        )
    status: Obj = {**counts, "observedGeneration": _meta(daemonset).get("generation", 1)}
    unavailable = counts["desiredNumberScheduled"] - counts["numberAvailable"]
    if unavailable > 0:
        status["numberUnavailable"] = unavailable
    return status


def admit_daemonset(daemonset: Obj, old: Obj | None) -> list[Cause]:
    """Defaults (``updateStrategy`` RollingUpdate with maxUnavailable 1, as the API server
    sets them; kubectl's rollout status reads them) and the checks the API server makes."""
    spec = daemonset.setdefault("spec", {})
    strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {}).setdefault("maxUnavailable", 1)
        strategy["rollingUpdate"].setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    selector = spec.get("selector")
    causes = []
    if strategy["type"] not in ("RollingUpdate", "OnDelete"):
        causes.append(
            Cause(
                "spec.updateStrategy.type",
                "FieldValueNotSupported",
                f'Unsupported value: "{strategy["type"]}": supported values: '
                '"OnDelete", "RollingUpdate"',
            )
        )
    if not isinstance(selector, dict) or not selector:
        causes.append(Cause("spec.selector", "FieldValueRequired", "Required value"))
    elif not match_label_selector_object(selector, labels):
        causes.append(
            Cause(
                "spec.template.metadata.labels",
                "FieldValueInvalid",
                f"Invalid value: {labels!r}: `selector` does not match template `labels`",
            )
        )
    elif old is not None and selector != (old.get("spec") or {}).get("selector"):
        causes.append(
            Cause("spec.selector", "FieldValueInvalid", "Invalid value: field is immutable")
        )
    if not (template.get("spec") or {}).get("containers"):
        causes.append(
            Cause("spec.template.spec.containers", "FieldValueRequired", "Required value")
        )
    return causes


class DaemonSetController:
    """Applies ``plan`` and ``status_of`` to every DaemonSet of the store."""

    def __init__(self, store: Store, template_hash: Any) -> None:
        """``template_hash``: the function naming a template's revision (the Deployment
        controller's, so both controllers label their pods alike)."""
        self.store = store
        self.template_hash = template_hash

    def sync(self) -> None:
        store = self.store
        nodes = sorted(store.objects(NODES), key=lambda n: str(_meta(n).get("name", "")))
        for daemonset in store.objects(DAEMONSETS):
            if _meta(daemonset).get("deletionTimestamp"):
                continue
            # its pods from the store's owner index, not from a pass over every pod
            pods = store.controlled(PODS, str(_meta(daemonset).get("uid")))
            self._sync_one(daemonset, nodes, pods)

    def _sync_one(self, daemonset: Obj, nodes: list[Obj], pods: list[Obj]) -> None:
        template = (daemonset.get("spec") or {}).get("template") or {}
        revision = self.template_hash(template)
        actions = plan(daemonset, revision, nodes, pods)
        pods_type = self.store.registry.by_key(PODS)
        assert pods_type is not None
        for pod in actions.delete:
            md = _meta(pod)
            try:
                self.store.delete(
                    pods_type, md.get("namespace"), md["name"], {"propagationPolicy": "Background"}
                )
            except StatusError as err:
                if err.code != 404:
                    raise
        for node in actions.create:
            self.store.create(
                pods_type, _meta(daemonset).get("namespace"), new_pod(daemonset, revision, node)
            )
        status = status_of(daemonset, revision, nodes, pods)
        if daemonset.get("status") != status:
            ds_type = self.store.registry.by_key(DAEMONSETS)
            assert ds_type is not None
            self.store.update_internal(ds_type, {**daemonset, "status": status})


def new_pod(daemonset: Mapping[str, Any], revision: str, node: str) -> Obj:
    """The pod a DaemonSet runs on ``node``, bound to it."""
    md = _meta(daemonset)
    template = (daemonset.get("spec") or {}).get("template") or {}
    template_meta = template.get("metadata") or {}
    labels = {
        **(template_meta.get("labels") or {}),
        REVISION_LABEL: revision,
        GENERATION_LABEL: str(md.get("generation", 1)),
    }
    pod_meta: Obj = {
        "generateName": f"{md['name']}-",
        "namespace": md.get("namespace", "default"),
        "labels": labels,
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "name": md["name"],
                "uid": md["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if template_meta.get("annotations"):
        pod_meta["annotations"] = dict(template_meta["annotations"])
    spec = pod_spec_for(template.get("spec") or {})
    spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": spec}
