"""Pure logic of the node agent: what a CrossConnection asks of this node's data plane.

The agent's Kopf handlers (``sfc_k8s.operator.agent``) stay thin: they parse the CrossConnection
with ``sfc_k8s.api.parse_cross_connection`` (the one parser of that resource), read the
programmed endpoints, call the functions below, then apply the returned operations to the data
plane. Nothing here does I/O, so the whole decision logic is unit-tested
without root (``tests/unit/operator/test_agent_reconcile.py``).

- ``link_name``: the data-plane link that carries one CrossConnection on a node (a valid bpffs
  folder name, deterministic, distinct per namespace and name).
- ``local_endpoints``: the endpoints of a spec that live on one node, keyed by host interface.
- ``plan``: desired endpoints vs programmed endpoints -> an ordered list of operations.
- ``expire_drains``: the xc's ``drainTimeoutSeconds``: draining endpoints whose time is up
  are no longer desired (they get removed, sessions purged).
- ``stale_links``: pinned links that no CrossConnection explains any more.
- ``annotation_prefix``, ``agent_finalizer``: where each node's agent keeps its Kopf state and
  which finalizer it puts on the CrossConnections it programs (``sfc-k8s uninstall`` reads them
  too, so they live here, away from the data plane).
- ``absent_interface``: whether the missing host interface of an endpoint will never come (the
  pod has no such interface) or may still be created; ``retry_delay``: the back-off while
  waiting for one.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sfc_k8s.api import (
    CrossConnectionInvalid,
    CrossConnectionSpec,
    EndpointSpec,
    EndpointState,
    Side,
    attached_interfaces,
    parse_cross_connection,
    pod_info,
    ready_since,
)

# Link names become bpffs folder names: bpffs refuses names with a dot, and '/' separates paths.
# Kubernetes namespaces are DNS labels (no '_', no '.') and object names are DNS subdomains
# (no '_'), so "<namespace>_<name with '.' -> '_'>" is injective: the first '_' ends the
# namespace and the rest maps back uniquely. Long names are cut and suffixed with a hash.
LINK_NAME_MAX = 128
_HASH_LEN = 12
_LINK_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?_[a-z0-9_-]+")
_DNS_SUBDOMAIN_MAX = 253
_QUALIFIED_NAME_MAX = 63
AGENT_FINALIZER_PREFIX = "sfc-k8s.io/agent-"


def annotation_prefix(node: str) -> str:
    """Where this node's agent keeps its Kopf state on shared objects (a DNS subdomain)."""
    prefix = f"{node}.agent.sfc-k8s.io"
    if len(prefix) <= _DNS_SUBDOMAIN_MAX:
        return prefix
    return f"{hashlib.sha256(node.encode()).hexdigest()[:16]}.agent.sfc-k8s.io"


def agent_finalizer(node: str) -> str:
    """The finalizer this node's agent puts on the xcs it programs."""
    name = f"agent-{node}"
    if len(name) > _QUALIFIED_NAME_MAX or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name):
        node = hashlib.sha256(node.encode()).hexdigest()[:16]
    return f"{AGENT_FINALIZER_PREFIX}{node}"


def link_name(namespace: str, name: str) -> str:
    """Data-plane link name of CrossConnection ``namespace/name`` (valid bpffs folder name)."""
    rest = name.replace(".", "_")
    if len(namespace) + 1 + len(rest) <= LINK_NAME_MAX:
        return f"{namespace}_{rest}"
    # The namespace (a DNS label: at most 63) stays whole so namespaced agents recognise it.
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:_HASH_LEN]
    keep = LINK_NAME_MAX - len(namespace) - 1 - _HASH_LEN - 1
    return f"{namespace}_{rest[:keep]}_{digest}"


def is_agent_link(name: str, *, namespace: str | None = None) -> bool:
    """Whether ``name`` is shaped like a link the agent creates (for ``namespace``, if given).

    Links made by hand with ``sfc-k8s dp`` under the same bpffs root and named otherwise are
    never garbage-collected by the agent.
    """
    if not _LINK_NAME_RE.fullmatch(name):
        return False
    return namespace is None or name.startswith(f"{namespace}_")


@dataclass(frozen=True, order=True)
class LocalEndpoint:
    """One endpoint of a CrossConnection on this node, as the data plane sees it."""

    side: Side
    ifname: str  # host-side interface
    mode: EndpointState


def local_endpoints(spec: CrossConnectionSpec, node: str) -> dict[str, LocalEndpoint]:
    """The endpoints of ``spec`` whose ``node`` is ``node``, by host interface (the parser has
    already refused a spec that names one interface twice)."""
    return {
        ep.host_interface: LocalEndpoint(side, ep.host_interface, ep.state)
        for side in Side
        for ep in spec.side(side).on_node(node)
    }


# Operations, applied in the order ``plan`` returns them.
@dataclass(frozen=True)
class CreateLink:
    """Create the link with its first active endpoints (one Maglev table build per side)."""

    link: str
    side_a: tuple[str, ...] = ()
    side_b: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeleteLink:
    link: str


@dataclass(frozen=True)
class AddEndpoint:
    link: str
    side: Side
    ifname: str


@dataclass(frozen=True)
class DrainEndpoint:
    link: str
    side: Side
    ifname: str


@dataclass(frozen=True)
class ActivateEndpoint:
    link: str
    side: Side
    ifname: str


@dataclass(frozen=True)
class RemoveEndpoint:
    link: str
    side: Side
    ifname: str


Operation = (
    CreateLink | DeleteLink | AddEndpoint | ActivateEndpoint | DrainEndpoint | RemoveEndpoint
)


def plan(
    link: str,
    desired: Mapping[str, LocalEndpoint],
    programmed: Iterable[LocalEndpoint] | None,
) -> list[Operation]:
    """Operations that turn the ``programmed`` endpoints of ``link`` into ``desired``.

    ``programmed`` is None when the link does not exist. Rules:

    - an endpoint desired ``draining`` that is not programmed is not added (it must get no new
      flows and has no sessions to keep);
    - a draining endpoint desired active again is re-activated in place (sessions kept); one
      that changes side is removed then added again (its sessions go);
    - new endpoints are added before old ones are drained or removed, so the far side of a busy
      link keeps an active endpoint during a rolling replacement;
    - when nothing is left to keep, the link itself is deleted (sessions purged, pins removed),
      and a link is only created when there is something to add, with all its first endpoints
      in the one ``CreateLink`` (the data plane then builds each side's table once).

    Operations come out in a deterministic order (by side, then interface name).
    """
    current = {ep.ifname: ep for ep in programmed} if programmed is not None else {}
    readd: list[LocalEndpoint] = []  # programmed on the other side: removed first
    add: list[LocalEndpoint] = []
    activate: list[LocalEndpoint] = []
    drain: list[LocalEndpoint] = []
    remove: list[LocalEndpoint] = []
    keep = 0
    for ifname, want in desired.items():
        have = current.get(ifname)
        if want.mode is EndpointState.DRAINING:
            if have is None:
                continue
            if have.side != want.side:  # a draining endpoint cannot move: drop its sessions
                remove.append(have)
                continue
            keep += 1
            if have.mode is EndpointState.ACTIVE:
                drain.append(want)
            continue
        keep += 1
        if have is None:
            add.append(want)
        elif have.side != want.side:
            readd.append(have)
            add.append(want)
        elif have.mode is not EndpointState.ACTIVE:
            activate.append(want)
    remove += [have for ifname, have in current.items() if ifname not in desired]

    if keep == 0:
        return [DeleteLink(link)] if programmed is not None else []
    if programmed is None:  # nothing to remove, re-add, activate or drain on a new link
        first = sorted(add)
        return [
            CreateLink(
                link,
                tuple(ep.ifname for ep in first if ep.side is Side.A),
                tuple(ep.ifname for ep in first if ep.side is Side.B),
            )
        ]
    ops: list[Operation] = [RemoveEndpoint(link, ep.side, ep.ifname) for ep in sorted(readd)]
    ops += [AddEndpoint(link, ep.side, ep.ifname) for ep in sorted(add)]
    ops += [ActivateEndpoint(link, ep.side, ep.ifname) for ep in sorted(activate)]
    ops += [DrainEndpoint(link, ep.side, ep.ifname) for ep in sorted(drain)]
    ops += [RemoveEndpoint(link, ep.side, ep.ifname) for ep in sorted(remove)]
    return ops


def after_operation(
    state: Mapping[str, LocalEndpoint] | None,
    op: Operation,
    *,
    skipped: Collection[str] = (),
) -> dict[str, LocalEndpoint] | None:
    """The link's endpoints (None: no link) once ``op`` succeeded; ``skipped`` lists interfaces
    a ``CreateLink`` left out because they did not exist. Lets the agent know the result of its
    operations without reading the data plane back (a status read walks the session table)."""
    if isinstance(op, CreateLink):
        sides = ((Side.A, op.side_a), (Side.B, op.side_b))
        return {
            ifname: LocalEndpoint(side, ifname, EndpointState.ACTIVE)
            for side, names in sides
            for ifname in names
            if ifname not in skipped
        }
    if isinstance(op, DeleteLink):
        return None
    result = dict(state or {})
    if isinstance(op, RemoveEndpoint):
        result.pop(op.ifname, None)
    else:
        drained = isinstance(op, DrainEndpoint)
        mode = EndpointState.DRAINING if drained else EndpointState.ACTIVE
        result[op.ifname] = LocalEndpoint(op.side, op.ifname, mode)
    return result


def expire_drains(
    desired: Mapping[str, LocalEndpoint],
    drained_at: Mapping[str, float],
    now: float,
    timeout: float | None,
) -> tuple[dict[str, LocalEndpoint], float | None]:
    """Drop the desired draining endpoints that have drained for ``timeout`` seconds or more.

    ``drained_at`` maps the host interfaces already draining in the data plane to when their
    drain began (same clock as ``now``); an endpoint about to be drained has no entry and starts
    its clock when it is drained. Returns the remaining desired endpoints and the number of
    seconds until the next drain expires (None if none is pending).
    """
    if timeout is None:
        return dict(desired), None
    kept: dict[str, LocalEndpoint] = {}
    pending: list[float] = []
    for ifname, ep in desired.items():
        if ep.mode is EndpointState.DRAINING:
            began = drained_at.get(ifname, now)
            left = began + timeout - now
            if left <= 0 and (ifname in drained_at or timeout == 0):
                continue
            pending.append(max(left, 0.0))
        kept[ifname] = ep
    return kept, (min(pending) if pending else None)


def stale_links(
    pinned: Iterable[str], wanted: Collection[str], *, namespaces: Collection[str] | None = None
) -> list[str]:
    """Pinned links shaped like agent links (of ``namespaces``, if the agent is namespaced) that
    no CrossConnection in ``wanted`` explains: left behind by objects deleted while the agent
    was down."""
    return sorted(
        name
        for name in pinned
        if name not in wanted
        and (
            is_agent_link(name)
            if namespaces is None
            else any(is_agent_link(name, namespace=ns) for ns in namespaces)
        )
    )


def desired_projection(spec: Mapping[str, Any], node: str) -> dict[str, Any]:
    """The part of a raw spec that matters to ``node``: what the agent's change detection tracks.

    Agents on other nodes ignore changes that do not touch their endpoints, and the stored
    "last handled" state stays small however many endpoints other nodes have. An invalid spec
    projects to its raw local entries so that a fix is still seen as a change.
    """
    try:
        eps = local_endpoints(parse_cross_connection({"spec": spec}), node)
    except CrossConnectionInvalid:
        return {
            "spec": {
                side.value: [
                    dict(ep)
                    for ep in ((spec.get(side) or {}).get("endpoints") or [])
                    if isinstance(ep, Mapping) and ep.get("node") == node
                ]
                for side in Side
            }
        }
    return {
        "spec": {
            side.value: sorted([ep.ifname, ep.mode.value] for ep in eps.values() if ep.side is side)
            for side in Side
        }
    }


def absent_interface(
    endpoint: EndpointSpec,
    namespace: str,
    pod: Mapping[str, Any] | None,
    *,
    now: datetime.datetime,
    grace: float,
) -> str | None:
    """Why the host interface of ``endpoint`` (missing on this node) will never appear, naming
    the pod and its interface; None while it may still be created (keep waiting).

    ``pod`` is the endpoint's Pod body (None: gone or unreadable). "Never" is only said of the
    very pod the endpoint names (same UID, not terminating) once its CNI set-up is over: its
    network-status annotation lists its interfaces, or, without one, it has been Ready for
    ``grace`` seconds (the runtime attaches every network before it starts a container).
    """
    if pod is None:
        return None  # deleted or replaced: the controller will update the endpoints
    info = pod_info(pod)
    if info.uid != endpoint.pod_uid or info.terminating:
        return None
    who = f"{namespace}/{endpoint.pod}"
    attached = attached_interfaces(pod)
    if attached is not None:
        return _not_attached(endpoint, who, attached)
    since = ready_since(pod)
    if since is None or (now - since).total_seconds() < grace:
        return None
    # The message must not change from one retry to the next: each change is a status write.
    return (
        f"{who}: no interface {endpoint.interface} on this node, and the pod has been Ready"
        f" for over {grace:.0f} s (it has no network-status annotation listing its interfaces)"
    )


def _not_attached(endpoint: EndpointSpec, who: str, attached: tuple[str, ...]) -> str:
    """The endpoint's interface against the interfaces CNI gave the pod (its set-up is over)."""
    if endpoint.interface not in attached:
        has = ", ".join(attached) if attached else "no interface but the cluster network's"
        return f"{who}: no interface {endpoint.interface} (the pod has {has})"
    return (
        f"{who}: interface {endpoint.interface} was attached, but its host end"
        f" {endpoint.host_interface} is not on this node (is {endpoint.interface}'s network"
        " an sfc-cni one?)"
    )


def retry_delay(retries: int, *, first: float, cap: float) -> float:
    """Seconds before retry number ``retries + 1`` while an interface is awaited: ``first``,
    doubling, at most ``cap``."""
    return min(cap, first * 2.0 ** min(retries, 30))
