"""Pure logic of the node agent: what a CrossConnection asks of this node's data plane.

The agent's Kopf handlers (``sfc_k8s.operator.agent``) stay thin: they read the CrossConnection
spec and the programmed ``LinkStatus``, call the functions below, then apply the returned
operations to the data plane. Nothing here does I/O, so the whole decision logic is unit-tested
without root (``tests/unit/operator/test_agent_reconcile.py``).

- ``link_name``: the data-plane link that carries one CrossConnection on a node (a valid bpffs
  folder name, deterministic, distinct per namespace and name).
- ``local_endpoints``: the endpoints of a spec that live on one node, keyed by host interface.
- ``plan``: desired endpoints vs programmed endpoints -> an ordered list of operations.
- ``expire_drains``: the chain's ``drainTimeoutSeconds``: draining endpoints whose time is up
  are no longer desired (they get removed, sessions purged).
- ``stale_links``: pinned links that no CrossConnection explains any more.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sfc_k8s.api.naming import host_ifname

SideName = Literal["a", "b"]
EndpointMode = Literal["active", "draining"]
SIDES: tuple[SideName, SideName] = ("a", "b")
MODES: tuple[EndpointMode, EndpointMode] = ("active", "draining")

# Link names become bpffs folder names: bpffs refuses names with a dot, and '/' separates paths.
# Kubernetes namespaces are DNS labels (no '_', no '.') and object names are DNS subdomains
# (no '_'), so "<namespace>_<name with '.' -> '_'>" is injective: the first '_' ends the
# namespace and the rest maps back uniquely. Long names are cut and suffixed with a hash.
LINK_NAME_MAX = 128
_HASH_LEN = 12
_LINK_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?_[a-z0-9_-]+")


class InvalidCrossConnectionError(ValueError):
    """The spec cannot be programmed as written (a controller bug or a hand-made object)."""


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

    side: SideName
    ifname: str  # host-side interface
    mode: EndpointMode


def local_endpoints(spec: Mapping[str, Any], node: str) -> dict[str, LocalEndpoint]:
    """The endpoints of CrossConnection ``spec`` whose ``node`` is ``node``, by host interface.

    ``hostInterface`` is optional in the spec: when absent it is derived from the pod UID and
    the pod interface exactly as the CNI plugin names the host end. Raises
    ``InvalidCrossConnectionError`` for a spec that names one interface twice or an unknown state.
    """
    found: dict[str, LocalEndpoint] = {}
    for side in SIDES:
        side_spec = spec.get(side) or {}
        for index, endpoint in enumerate(side_spec.get("endpoints") or []):
            if endpoint.get("node") != node:
                continue
            where = f"spec.{side}.endpoints[{index}]"
            ifname = endpoint.get("hostInterface") or _derived_ifname(endpoint, where)
            mode = endpoint.get("state", "active")
            if mode not in MODES:
                raise InvalidCrossConnectionError(
                    f"{where}: state {mode!r} is not one of {', '.join(MODES)}"
                )
            if ifname in found:
                raise InvalidCrossConnectionError(
                    f"{where}: host interface {ifname!r} is already used by another endpoint"
                    " of this cross-connection; each pod interface belongs to one link side"
                )
            found[ifname] = LocalEndpoint(side, ifname, mode)
    return found


def _derived_ifname(endpoint: Mapping[str, Any], where: str) -> str:
    pod_uid, pod_ifname = endpoint.get("podUID"), endpoint.get("interface")
    if not pod_uid or not pod_ifname:
        raise InvalidCrossConnectionError(
            f"{where}: needs hostInterface, or podUID and interface to derive it"
        )
    return host_ifname(str(pod_uid), str(pod_ifname))


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
    side: SideName
    ifname: str


@dataclass(frozen=True)
class DrainEndpoint:
    link: str
    side: SideName
    ifname: str


@dataclass(frozen=True)
class ActivateEndpoint:
    link: str
    side: SideName
    ifname: str


@dataclass(frozen=True)
class RemoveEndpoint:
    link: str
    side: SideName
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
        if want.mode == "draining":
            if have is None:
                continue
            if have.side != want.side:  # a draining endpoint cannot move: drop its sessions
                remove.append(have)
                continue
            keep += 1
            if have.mode == "active":
                drain.append(want)
            continue
        keep += 1
        if have is None:
            add.append(want)
        elif have.side != want.side:
            readd.append(have)
            add.append(want)
        elif have.mode != "active":
            activate.append(want)
    remove += [have for ifname, have in current.items() if ifname not in desired]

    if keep == 0:
        return [DeleteLink(link)] if programmed is not None else []
    if programmed is None:  # nothing to remove, re-add, activate or drain on a new link
        first = sorted(add)
        return [
            CreateLink(
                link,
                tuple(ep.ifname for ep in first if ep.side == "a"),
                tuple(ep.ifname for ep in first if ep.side == "b"),
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
        sides: tuple[tuple[SideName, tuple[str, ...]], ...] = (("a", op.side_a), ("b", op.side_b))
        return {
            ifname: LocalEndpoint(side, ifname, "active")
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
        mode: EndpointMode = "draining" if isinstance(op, DrainEndpoint) else "active"
        result[op.ifname] = LocalEndpoint(op.side, op.ifname, mode)
    return result


def drain_timeout(spec: Mapping[str, Any]) -> float | None:
    """``spec.dataplane.drainTimeoutSeconds`` (None: drain until the controller removes it)."""
    value = (spec.get("dataplane") or {}).get("drainTimeoutSeconds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidCrossConnectionError(
            f"spec.dataplane.drainTimeoutSeconds: {value!r} is not a number of seconds >= 0"
        )
    return float(value)


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
        if ep.mode == "draining":
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
    """The part of a spec that matters to ``node``: what the agent's change detection tracks.

    Agents on other nodes ignore changes that do not touch their endpoints, and the stored
    "last handled" state stays small however many endpoints other nodes have. An invalid spec
    projects to its raw local entries so that a fix is still seen as a change.
    """
    try:
        eps = local_endpoints(spec, node)
    except InvalidCrossConnectionError:
        return {
            "spec": {
                side: [
                    dict(ep)
                    for ep in ((spec.get(side) or {}).get("endpoints") or [])
                    if ep.get("node") == node
                ]
                for side in SIDES
            }
        }
    return {
        "spec": {
            side: sorted([ep.ifname, ep.mode] for ep in eps.values() if ep.side == side)
            for side in SIDES
        }
    }
