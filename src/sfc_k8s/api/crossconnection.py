"""Chain + pods -> CrossConnections (the endpoint sets of each link), and their parsing.

``compute_cross_connections`` is the heart of the controller: for every link of a chain it lists
the pods selected by the function on each side as endpoints (Ready -> active, terminating ->
draining, anything else left out), sorted by pod name so that an unchanged set produces an
identical body and no write. ``parse_cross_connection`` is what the node agent calls on each
CrossConnection it programs (ids included: ``sfc_k8s.api.identity`` assigns them), and
``link_programming`` reads back what the agents reported.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sfc_k8s.api.chain import Problems, parse_dataplane
from sfc_k8s.api.errors import CrossConnectionInvalid
from sfc_k8s.api.models import (
    API_VERSION,
    CHAIN_LABEL,
    CLUSTER_ID_MAX,
    ENDPOINT_ID_MAX,
    LINK_LABEL,
    XC_KIND,
    ChainSpec,
    CrossConnectionSide,
    CrossConnectionSpec,
    EndpointSpec,
    EndpointState,
    LinkEnd,
    PodInfo,
    Side,
)
from sfc_k8s.api.naming import host_ifname
from sfc_k8s.api.pods import functions_of, selector_overlaps
from sfc_k8s.api.types import CrossConnectionBody


def endpoint_state(pod: PodInfo) -> EndpointState | None:
    """Terminating pods drain, Ready pods are active, others (starting, unready) are no endpoint."""
    if pod.node is None or not pod.uid:
        return None
    if pod.terminating:
        return EndpointState.DRAINING
    if pod.ready:
        return EndpointState.ACTIVE
    return None


def _side(end: LinkEnd, pods: Iterable[PodInfo]) -> CrossConnectionSide:
    endpoints = []
    for pod in sorted(pods, key=lambda p: p.name):
        state = endpoint_state(pod)
        if state is None or pod.node is None:
            continue
        endpoints.append(
            EndpointSpec(
                pod=pod.name,
                pod_uid=pod.uid,
                node=pod.node,
                interface=end.interface,
                host_interface=host_ifname(pod.uid, end.interface),
                state=state,
            )
        )
    return CrossConnectionSide(end.function, end.interface, tuple(endpoints))


def compute_links(
    chain: ChainSpec, pods: Iterable[PodInfo], *, exclude: Collection[str] = ()
) -> list[CrossConnectionSpec]:
    """The desired CrossConnection spec of every link of ``chain``, in link order.

    Pods selected by two functions of the chain (see ``selector_overlaps``) and pods named in
    ``exclude`` (see ``interface_conflicts``) are left out.
    """
    pods = [p for p in pods if p.namespace == chain.namespace]
    ambiguous = set(selector_overlaps(chain, pods)) | set(exclude)
    by_function: dict[str, list[PodInfo]] = {fn.name: [] for fn in chain.functions}
    for pod in pods:
        if pod.name in ambiguous:
            continue
        for fn in functions_of(chain, pod):
            by_function[fn.name].append(pod)
    return [
        CrossConnectionSpec(
            chain=chain.name,
            link=link.name,
            a=_side(link.a, by_function.get(link.a.function, ())),
            b=_side(link.b, by_function.get(link.b.function, ())),
            dataplane=chain.dataplane,
        )
        for link in chain.links
    ]


def cross_connection_body(chain: ChainSpec, spec: CrossConnectionSpec) -> CrossConnectionBody:
    """The full object the controller writes for ``spec``: labels and owner reference included."""
    return {
        "apiVersion": API_VERSION,
        "kind": XC_KIND,
        "metadata": {
            "name": chain.xc_name(spec.link),
            "namespace": chain.namespace,
            "labels": {CHAIN_LABEL: chain.name, LINK_LABEL: spec.link},
            "ownerReferences": [chain.owner_reference()],
        },
        "spec": spec.to_body(),
    }


def compute_cross_connections(
    chain: ChainSpec, pods: Iterable[PodInfo], *, exclude: Collection[str] = ()
) -> list[CrossConnectionBody]:
    """One CrossConnection body per link of ``chain``, sorted by name."""
    specs = compute_links(chain, pods, exclude=exclude)
    bodies = [cross_connection_body(chain, spec) for spec in specs]
    return sorted(bodies, key=lambda b: b["metadata"]["name"])


_REQUIRED_ENDPOINT_KEYS = ("pod", "podUID", "node", "interface", "state")


def _parse_endpoint(item: object, at: str, problems: Problems) -> EndpointSpec | None:
    if not isinstance(item, Mapping):
        problems.add(at, "must be an object")
        return None
    missing = [
        key
        for key in _REQUIRED_ENDPOINT_KEYS
        if not isinstance(item.get(key), str) or not item.get(key)
    ]
    if missing:
        problems.add(at, f"missing {', '.join(missing)}")
        return None
    try:
        state = EndpointState(item["state"])
    except ValueError:
        problems.add(f"{at}.state", f"{item['state']!r} is neither active nor draining")
        return None
    host = item.get("hostInterface")
    if host is not None and (not isinstance(host, str) or not host):
        problems.add(f"{at}.hostInterface", f"{host!r} is not an interface name")
        return None
    ident = _parse_id(item.get("id"), f"{at}.id", ENDPOINT_ID_MAX, problems)
    if ident is None:
        return None
    return EndpointSpec(
        pod=item["pod"],
        pod_uid=item["podUID"],
        node=item["node"],
        interface=item["interface"],
        # Optional: the CNI plugin names the host end from these two, so can anyone.
        host_interface=host or host_ifname(item["podUID"], item["interface"]),
        state=state,
        id=ident,
    )


def _parse_id(raw: object, at: str, top: int, problems: Problems) -> int | None:
    """An optional id: absent -> 0 (not assigned yet), else an integer from 1 to ``top``."""
    if raw is None:
        return 0
    if isinstance(raw, int) and not isinstance(raw, bool) and 1 <= raw <= top:
        return raw
    problems.add(at, f"{raw!r} is not an id: expected an integer from 1 to {top}")
    return None


def _parse_side(raw: object, side: Side, problems: Problems) -> CrossConnectionSide:
    if not isinstance(raw, Mapping):
        problems.add(f"spec.{side}", "must be an object with function, interface and endpoints")
        return CrossConnectionSide("", "")
    endpoints = [
        endpoint
        for i, item in enumerate(raw.get("endpoints") or ())
        if (endpoint := _parse_endpoint(item, f"spec.{side}.endpoints[{i}]", problems))
    ]
    return CrossConnectionSide(
        str(raw.get("function") or ""), str(raw.get("interface") or ""), tuple(endpoints)
    )


def _check_host_interfaces(
    a: CrossConnectionSide, b: CrossConnectionSide, problems: Problems
) -> None:
    """A host interface can be one endpoint of one side only (per node: names are local)."""
    seen: set[tuple[str, str]] = set()
    for side, endpoints in ((Side.A, a.endpoints), (Side.B, b.endpoints)):
        for i, ep in enumerate(endpoints):
            key = (ep.node, ep.host_interface)
            if key in seen:
                problems.add(
                    f"spec.{side}.endpoints[{i}]",
                    f"host interface {ep.host_interface!r} of node {ep.node!r} is already used"
                    " by another endpoint of this cross-connection; each pod interface belongs"
                    " to one link side",
                )
            seen.add(key)


def _check_ids(a: CrossConnectionSide, b: CrossConnectionSide, problems: Problems) -> None:
    """Endpoint ids name one endpoint of the link (both sides share one id space)."""
    seen: dict[int, str] = {}
    for side, endpoints in ((Side.A, a.endpoints), (Side.B, b.endpoints)):
        for i, ep in enumerate(endpoints):
            at = f"spec.{side}.endpoints[{i}]"
            if ep.id and ep.id in seen:
                problems.add(
                    f"{at}.id",
                    f"id {ep.id} is already the id of {seen[ep.id]}; ids are unique"
                    " within a cross-connection",
                )
            elif ep.id:
                seen[ep.id] = at


def parse_cross_connection(body: Mapping[str, Any]) -> CrossConnectionSpec:
    """Parse a CrossConnection body: the one parser, called by the node agent on every event.

    ``hostInterface`` may be absent from an endpoint: it is then derived from ``podUID`` and
    ``interface`` as the CNI plugin names the host end. Raises ``CrossConnectionInvalid``
    listing every problem, each with the field at fault.
    """
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        raise CrossConnectionInvalid(name, ["spec: is missing"])
    problems = Problems()
    chain, link = spec.get("chain"), spec.get("link")
    if not isinstance(chain, str) or not chain:
        problems.add("spec.chain", "must name the owning chain")
    if not isinstance(link, str) or not link:
        problems.add("spec.link", "must name the chain's link")
    a = _parse_side(spec.get("a"), Side.A, problems)
    b = _parse_side(spec.get("b"), Side.B, problems)
    _check_host_interfaces(a, b, problems)
    _check_ids(a, b, problems)
    dataplane = parse_dataplane(spec.get("dataplane"), problems)
    cluster_id = _parse_id(spec.get("clusterId"), "spec.clusterId", CLUSTER_ID_MAX, problems)
    last = spec.get("lastEndpointId")
    last_id = 0 if last == 0 else _parse_id(last, "spec.lastEndpointId", ENDPOINT_ID_MAX, problems)
    if problems.items:
        raise CrossConnectionInvalid(name, problems.items)
    return CrossConnectionSpec(
        str(chain),
        str(link),
        a,
        b,
        dataplane,
        cluster_id=cluster_id or 0,
        last_endpoint_id=last_id or 0,
    )


@dataclass(frozen=True)
class LinkProgramming:
    """What the node agents reported for one CrossConnection, relative to its current spec."""

    waiting: tuple[str, ...] = ()  # nodes that have not reported the current generation yet
    failed: tuple[tuple[str, str], ...] = ()  # (node, message) of agents that reported an error
    # (node, message) of agents whose local interfaces are larger than their tunnel's MTU
    oversized: tuple[tuple[str, str], ...] = ()

    @property
    def programmed(self) -> bool:
        return not self.waiting and not self.failed


def link_programming(body: Mapping[str, Any]) -> LinkProgramming:
    """Compare ``status.nodes`` with the nodes holding endpoints in ``spec``.

    A node counts as programmed once it reports ``ready: true`` with an ``observedGeneration`` at
    least the object's ``metadata.generation`` (so a report about an older endpoint set does not
    count). Nodes without endpoints need not report. A node's ``InterfacesFitTunnel=False``
    condition (local interfaces larger than its tunnel) is listed in ``oversized``.
    """
    meta = body.get("metadata") or {}
    generation = meta.get("generation")
    spec = body.get("spec") or {}
    nodes: set[str] = set()
    for side in ("a", "b"):
        for ep in (spec.get(side) or {}).get("endpoints") or ():
            if isinstance(ep, Mapping) and isinstance(ep.get("node"), str):
                nodes.add(ep["node"])
    reports = (body.get("status") or {}).get("nodes") or {}
    waiting: list[str] = []
    failed: list[tuple[str, str]] = []
    oversized: list[tuple[str, str]] = []
    for node in sorted(nodes):
        report = reports.get(node)
        if not isinstance(report, Mapping):
            waiting.append(node)
            continue
        oversized += [(node, message) for message in _mtu_problems(report)]
        observed = report.get("observedGeneration")
        current = generation is None or (isinstance(observed, int) and observed >= int(generation))
        if not current:
            waiting.append(node)
        elif report.get("ready") is True:
            continue
        elif report.get("message"):
            failed.append((node, str(report["message"])))
        else:
            waiting.append(node)
    return LinkProgramming(tuple(waiting), tuple(failed), tuple(oversized))


MTU_CONDITION = "InterfacesFitTunnel"  # the agent's condition in its status.nodes entry


def _mtu_problems(report: Mapping[str, Any]) -> list[str]:
    """The messages of a node report's InterfacesFitTunnel=False condition."""
    return [
        str(c.get("message") or "")
        for c in report.get("conditions") or ()
        if isinstance(c, Mapping) and c.get("type") == MTU_CONDITION and c.get("status") == "False"
    ]
