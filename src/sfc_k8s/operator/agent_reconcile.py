"""Pure logic of the node agent: what a CrossConnection asks of this node's data plane.

The agent's Kopf handlers (``sfc_k8s.operator.agent``) stay thin: they parse the CrossConnection
with ``sfc_k8s.api.parse_cross_connection`` (the one parser of that resource), read the
programmed endpoints, call the functions below, then apply the returned operations to the data
plane. Nothing here does I/O, so the whole decision logic is unit-tested
without root (``tests/unit/operator/test_agent_reconcile.py``).

- ``link_name``: the data-plane link that carries one CrossConnection on a node (a valid bpffs
  folder name, deterministic, distinct per namespace and name).
- ``local_endpoints``: the endpoints of a spec that live on one node, keyed by host interface;
  ``desired_endpoints``: those plus the other nodes' endpoints this node's data plane must
  hold (remote ones by node address and id; a lost node's left out).
- ``plan``: desired endpoints vs programmed endpoints -> an ordered list of operations.
- ``expire_drains``: the xc's ``drainTimeoutSeconds``: draining endpoints whose time is up
  are no longer desired (they get removed, sessions purged).
- ``stale_links``: pinned links that no CrossConnection explains any more.
- ``annotation_prefix``: where each node's agent keeps its Kopf state (``sfc-k8s uninstall``
  reads it too, so it lives here, away from the data plane; the agent's finalizer is
  ``sfc_k8s.api.nodes.agent_finalizer``, beside the controller's test for those of nodes that
  are gone).
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
from sfc_k8s.api.nodes import NodeView

# Link names become bpffs folder names: bpffs refuses names with a dot, and '/' separates paths.
# Kubernetes namespaces are DNS labels (no '_', no '.') and object names are DNS subdomains
# (no '_'), so "<namespace>_<name with '.' -> '_'>" is injective: the first '_' ends the
# namespace and the rest maps back uniquely. Long names are cut and suffixed with a hash.
LINK_NAME_MAX = 128
_HASH_LEN = 12
_LINK_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?_[a-z0-9_-]+")
_DNS_SUBDOMAIN_MAX = 253


def annotation_prefix(node: str) -> str:
    """Where this node's agent keeps its Kopf state on shared objects (a DNS subdomain)."""
    prefix = f"{node}.agent.sfc-k8s.io"
    if len(prefix) <= _DNS_SUBDOMAIN_MAX:
        return prefix
    return f"{hashlib.sha256(node.encode()).hexdigest()[:16]}.agent.sfc-k8s.io"


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
class LinkEndpoint:
    """One endpoint of a CrossConnection as this node's data plane holds it: a local one by
    host interface, a remote one (on another node) by that node's underlay address and id."""

    side: Side
    ifname: str  # local: host-side interface; "" for a remote endpoint
    mode: EndpointState
    id: int = 0  # stable id within the link (0: none assigned, local endpoints only)
    node: str = ""  # remote: its node's underlay IPv4 address; "" for a local endpoint
    # Programmed local endpoints only: the interface it forwards to is gone, or was created
    # again under the same name (a pod's new sandbox): the entry leads nowhere, re-add it.
    defunct: bool = False

    @property
    def remote(self) -> bool:
        return bool(self.node)

    @property
    def key(self) -> str:
        """How plans match desired and programmed endpoints: the interface, or id@address."""
        return self.ifname or f"#{self.id}@{self.node}"


def local_endpoints(spec: CrossConnectionSpec, node: str) -> dict[str, LinkEndpoint]:
    """The endpoints of ``spec`` whose ``node`` is ``node``, by host interface (the parser has
    already refused a spec that names one interface twice)."""
    return {
        ep.host_interface: LinkEndpoint(side, ep.host_interface, ep.state, ep.id)
        for side in Side
        for ep in spec.side(side).on_node(node)
    }


def desired_endpoints(
    spec: CrossConnectionSpec, node: str, nodes: Mapping[str, NodeView] | None
) -> dict[str, LinkEndpoint]:
    """Every endpoint ``node``'s data plane should hold for ``spec``, by ``LinkEndpoint.key``.

    Nothing when ``node`` holds no endpoint of the link. Otherwise its local endpoints and,
    when ``nodes`` is given (the agent runs a tunnel) and the controller assigned ids, the
    endpoints of other nodes that are usable (Ready, with an address; ``NodeView.usable``):
    an endpoint of a lost or unknown node is left out, so it leaves the Maglev tables and the
    flows pinned to it pick again.
    """
    local = local_endpoints(spec, node)
    if not local or nodes is None or not spec.cluster_id:
        return local
    remote: dict[str, LinkEndpoint] = {}
    for side, ep in spec.endpoints:
        view = nodes.get(ep.node)
        if ep.node == node or not ep.id or view is None or not view.usable:
            continue
        found = LinkEndpoint(side, "", ep.state, ep.id, view.address)
        remote[found.key] = found
    return {**local, **remote}


# Operations, applied in the order ``plan`` returns them.
@dataclass(frozen=True)
class CreateLink:
    """Create the link with its first active endpoints (one Maglev table build per side)."""

    link: str
    side_a: tuple[LinkEndpoint, ...] = ()
    side_b: tuple[LinkEndpoint, ...] = ()
    cluster_id: int = 0  # 0: the data plane picks one (single-node links)


@dataclass(frozen=True)
class DeleteLink:
    link: str


@dataclass(frozen=True)
class AddEndpoint:
    link: str
    side: Side
    ifname: str
    id: int = 0
    node: str = ""


@dataclass(frozen=True)
class DrainEndpoint:
    link: str
    side: Side
    ifname: str
    id: int = 0
    node: str = ""


@dataclass(frozen=True)
class ActivateEndpoint:
    link: str
    side: Side
    ifname: str
    id: int = 0
    node: str = ""


@dataclass(frozen=True)
class RemoveEndpoint:
    link: str
    side: Side
    ifname: str
    id: int = 0
    node: str = ""


Operation = (
    CreateLink | DeleteLink | AddEndpoint | ActivateEndpoint | DrainEndpoint | RemoveEndpoint
)
EndpointOperation = AddEndpoint | ActivateEndpoint | DrainEndpoint | RemoveEndpoint


def _op(kind: type[EndpointOperation], link: str, ep: LinkEndpoint) -> EndpointOperation:
    return kind(link, ep.side, ep.ifname, ep.id, ep.node)


def op_endpoint(op: EndpointOperation) -> LinkEndpoint:
    """The endpoint an operation names, in the state it leaves it."""
    mode = EndpointState.DRAINING if isinstance(op, DrainEndpoint) else EndpointState.ACTIVE
    return LinkEndpoint(op.side, op.ifname, mode, op.id, op.node)


def _moved(have: LinkEndpoint, want: LinkEndpoint) -> bool:
    """The programmed endpoint cannot become the desired one in place: other side or id, or
    its interface is not the one programmed any more."""
    return have.defunct or have.side != want.side or bool(want.id and have.id != want.id)


def plan(
    link: str,
    desired: Mapping[str, LinkEndpoint],
    programmed: Iterable[LinkEndpoint] | None,
    *,
    cluster_id: int = 0,
    programmed_cluster_id: int = 0,
) -> list[Operation]:
    """Operations that turn the ``programmed`` endpoints of ``link`` into ``desired``.

    ``programmed`` is None when the link does not exist. Rules:

    - an endpoint desired ``draining`` that is not programmed is not added (it must get no new
      flows and has no sessions to keep);
    - a draining endpoint desired active again is re-activated in place (sessions kept); one
      that changes side or id, or whose programmed interface is ``defunct``, is removed then
      added again (its sessions go: they led to the other side, id or interface);
    - new endpoints are added before old ones are drained or removed, so the far side of a busy
      link keeps an active endpoint during a rolling replacement;
    - when no local endpoint is left to keep, the link itself is deleted (sessions purged, pins
      removed), and a link is only created when there is something to add, with all its first
      endpoints in the one ``CreateLink`` (the data plane then builds each side's table once),
      under ``cluster_id``; a link programmed under another cluster id
      (``programmed_cluster_id``, 0: unknown) is deleted and created again.

    Desired and programmed endpoints are matched by ``LinkEndpoint.key``. Operations come out
    in a deterministic order (by side, then interface name, id and node).
    """
    current = {ep.key: ep for ep in programmed} if programmed is not None else {}
    readd: list[LinkEndpoint] = []  # programmed on the other side or with another id
    add: list[LinkEndpoint] = []
    activate: list[LinkEndpoint] = []
    drain: list[LinkEndpoint] = []
    remove: list[LinkEndpoint] = []
    keep = 0  # local endpoints kept: a link with only remote ones is of no use here
    for key, want in desired.items():
        have = current.get(key)
        if want.mode is EndpointState.DRAINING:
            if have is None:
                continue
            if _moved(have, want):  # a draining endpoint cannot move: drop its sessions
                remove.append(have)
                continue
            keep += not want.remote
            if have.mode is EndpointState.ACTIVE:
                drain.append(want)
            continue
        keep += not want.remote
        if have is None:
            add.append(want)
        elif _moved(have, want):
            readd.append(have)
            add.append(want)
        elif have.mode is not EndpointState.ACTIVE:
            activate.append(want)
    remove += [have for key, have in current.items() if key not in desired]

    if keep == 0:
        return [DeleteLink(link)] if programmed is not None else []
    if programmed is not None and cluster_id and programmed_cluster_id not in (0, cluster_id):
        # made before the controller assigned ids: the other nodes key it by the new id
        return [DeleteLink(link), *plan(link, desired, None, cluster_id=cluster_id)]
    if programmed is None:  # nothing to remove, re-add, activate or drain on a new link
        first = sorted(add)
        return [
            CreateLink(
                link,
                tuple(ep for ep in first if ep.side is Side.A),
                tuple(ep for ep in first if ep.side is Side.B),
                cluster_id,
            )
        ]
    ops: list[Operation] = [_op(RemoveEndpoint, link, ep) for ep in sorted(readd)]
    ops += [_op(AddEndpoint, link, ep) for ep in sorted(add)]
    ops += [_op(ActivateEndpoint, link, ep) for ep in sorted(activate)]
    ops += [_op(DrainEndpoint, link, ep) for ep in sorted(drain)]
    ops += [_op(RemoveEndpoint, link, ep) for ep in sorted(remove)]
    return ops


def after_operation(
    state: Mapping[str, LinkEndpoint] | None,
    op: Operation,
    *,
    skipped: Collection[str] = (),
) -> dict[str, LinkEndpoint] | None:
    """The link's endpoints (None: no link) once ``op`` succeeded; ``skipped`` lists interfaces
    a ``CreateLink`` left out because they did not exist. Lets the agent know the result of its
    operations without reading the data plane back (a status read walks the session table)."""
    if isinstance(op, CreateLink):
        return {ep.key: ep for ep in (*op.side_a, *op.side_b) if ep.key not in skipped}
    if isinstance(op, DeleteLink):
        return None
    result = dict(state or {})
    done = op_endpoint(op)
    if isinstance(op, RemoveEndpoint):
        result.pop(done.key, None)
    else:
        result[done.key] = done
    return result


def expire_drains(
    desired: Mapping[str, LinkEndpoint],
    drained_at: Mapping[str, float],
    now: float,
    timeout: float | None,
) -> tuple[dict[str, LinkEndpoint], float | None]:
    """Drop the desired draining endpoints that have drained for ``timeout`` seconds or more.

    ``drained_at`` maps the endpoints (by key) already draining in the data plane to when their
    drain began (same clock as ``now``); an endpoint about to be drained has no entry and starts
    its clock when it is drained. Returns the remaining desired endpoints and the number of
    seconds until the next drain expires (None if none is pending).
    """
    if timeout is None:
        return dict(desired), None
    kept: dict[str, LinkEndpoint] = {}
    pending: list[float] = []
    for key, ep in desired.items():
        if ep.mode is EndpointState.DRAINING:
            began = drained_at.get(key, now)
            left = began + timeout - now
            if left <= 0 and (key in drained_at or timeout == 0):
                continue
            pending.append(max(left, 0.0))
        kept[key] = ep
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

    Nothing of a link without endpoints on ``node``; else its local endpoints (interface, state,
    id), the other nodes' endpoints (node, id, state) and the cluster id, so that agents only
    work for links they carry, and the stored "last handled" state stays small. An invalid spec
    projects to its raw local entries so that a fix is still seen as a change.
    """
    try:
        xc = parse_cross_connection({"spec": spec})
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
    if not xc.nodes & {node}:
        return {"spec": {side.value: [] for side in Side}}
    projected: dict[str, Any] = {
        side.value: sorted(
            [ep.host_interface if ep.node == node else f"@{ep.node}", ep.state.value, ep.id]
            for ep in xc.side(side).endpoints
        )
        for side in Side
    }
    projected["clusterId"] = xc.cluster_id
    return {"spec": projected}


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
