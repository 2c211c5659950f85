"""Stable identities of a CrossConnection: its link's cluster-wide id and its endpoints' ids.

The controller calls ``assign_identities`` on every spec ``compute_links`` produces, with the
spec it wrote before, and writes the result; the node agents read the ids back
(``parse_cross_connection``) and hand them to the data plane, whose Maglev tables are built from
(cluster id, endpoint ids) so that every node makes the same first choice, and whose tunnel key
names the exact endpoint a packet is for.

Rules (docs/api.md, "Identities"):

- cluster id: kept while no other CrossConnection holds it; else, and for a new object, the
  lowest id from 1 to ``CLUSTER_ID_MAX`` that no other CrossConnection holds;
- endpoint id: an endpoint (a pod's interface on one side) keeps its id for as long as it is
  listed, draining included; a new endpoint gets the next id after ``lastEndpointId`` that no
  listed endpoint holds, counting up to ``ENDPOINT_ID_MAX`` and then round from 1. A removed
  endpoint's id is therefore handed out again only after every other id has been, never while
  sessions on some node may still name it (a removal purges them at once).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import replace
from typing import Any

from sfc_k8s.api.models import (
    CLUSTER_ID_MAX,
    ENDPOINT_ID_MAX,
    CrossConnectionSide,
    CrossConnectionSpec,
    EndpointSpec,
)


class IdentitiesExhausted(Exception):  # noqa: N818 (reads as the condition it reports)
    """No free cluster id, or a link with more endpoints than ids."""


def previous_ids(previous: Mapping[str, Any] | None) -> dict[tuple[str, str], int]:
    """The ids a previously written spec (raw) gave its endpoints, by (podUID, interface);
    malformed or duplicated ids are dropped (those endpoints get new ones)."""
    found: dict[tuple[str, str], int] = {}
    seen: set[int] = set()
    for side in ("a", "b"):
        raw = (previous or {}).get(side)
        for ep in (raw.get("endpoints") or ()) if isinstance(raw, Mapping) else ():
            if not isinstance(ep, Mapping):
                continue
            ident = _valid_id(ep.get("id"), ENDPOINT_ID_MAX)
            if not ident or ident in seen:
                continue
            seen.add(ident)
            found[(str(ep.get("podUID")), str(ep.get("interface")))] = ident
    return found


def _valid_id(value: object, top: int) -> int:
    """``value`` if it is an id from 1 to ``top``, else 0."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= top:
        return value
    return 0


def choose_cluster_id(current: object, in_use: Container[int], *, search_from: int = 1) -> int:
    """``current`` if it is a valid id no other CrossConnection holds, else the lowest free
    from ``search_from`` on (the caller's knowledge that every id below it is held: without
    it, the n-th new link would test n ids, n² over a cluster's links)."""
    kept = _valid_id(current, CLUSTER_ID_MAX)
    if kept and kept not in in_use:
        return kept
    for candidate in range(max(search_from, 1), CLUSTER_ID_MAX + 1):
        if candidate not in in_use:
            return candidate
    raise IdentitiesExhausted(f"all {CLUSTER_ID_MAX} cross-connection cluster ids are taken")


def _next_free(after: int, used: Container[int]) -> int:
    """The first id after ``after`` (round from 1 past the top) that ``used`` lacks."""
    for step in range(1, ENDPOINT_ID_MAX + 1):
        candidate = (after + step - 1) % ENDPOINT_ID_MAX + 1
        if candidate not in used:
            return candidate
    raise IdentitiesExhausted(f"a link has room for {ENDPOINT_ID_MAX} endpoints")


def assign_endpoint_ids(
    sides: Iterable[CrossConnectionSide], kept: Mapping[tuple[str, str], int], last: int
) -> tuple[list[CrossConnectionSide], int]:
    """Give every endpoint of ``sides`` its id: its ``kept`` one, else the next free after
    ``last``. Returns the sides and the new ``last``."""
    sides = list(sides)
    listed = {ep.identity for side in sides for ep in side.endpoints}
    used = {ident for key, ident in kept.items() if key in listed}
    result = []
    for side in sides:
        endpoints: list[EndpointSpec] = []
        for ep in side.endpoints:
            ident = kept.get(ep.identity)
            if ident is None:
                ident = last = _next_free(last, used)
                used.add(ident)
            endpoints.append(replace(ep, id=ident))
        result.append(replace(side, endpoints=tuple(endpoints)))
    return result, last


def assign_identities(
    spec: CrossConnectionSpec,
    previous: Mapping[str, Any] | None,
    in_use: Container[int],
    *,
    search_from: int = 1,
) -> CrossConnectionSpec:
    """``spec`` with its cluster id and endpoint ids, following ``previous`` (the raw spec
    written before, or None). ``in_use``: cluster ids other CrossConnections hold;
    ``search_from``: see ``choose_cluster_id``."""
    previous = previous or {}
    cluster_id = choose_cluster_id(previous.get("clusterId"), in_use, search_from=search_from)
    last = _valid_id(previous.get("lastEndpointId"), ENDPOINT_ID_MAX)
    (a, b), last = assign_endpoint_ids((spec.a, spec.b), previous_ids(previous), last)
    return replace(spec, a=a, b=b, cluster_id=cluster_id, last_endpoint_id=last)


__all__ = [
    "IdentitiesExhausted",
    "assign_endpoint_ids",
    "assign_identities",
    "choose_cluster_id",
    "previous_ids",
]
