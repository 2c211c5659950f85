"""What the controller writes for one chain: per CrossConnection, create, patch, leave or refuse;
which ones to delete; what the agents' reports mean for the chain's status.

The controller's reconcile reads its Kopf indexes, calls these pure functions and applies their
answer (``sfc_k8s.operator.controller``), as the node agent applies
``sfc_k8s.operator.agent_reconcile.plan``. ``StoredCrossConnection`` is a CrossConnection as the
controller's index holds it; ``written`` is the spec this controller replica wrote last, for an
object whose own watch event has not arrived yet.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sfc_k8s.api.crossconnection import LinkProgramming, link_programming
from sfc_k8s.api.models import CHAIN_KIND, CHAIN_LABEL, LINK_LABEL, ChainSpec, CrossConnectionSpec
from sfc_k8s.api.types import CrossConnectionBody


@dataclass(frozen=True)
class StoredCrossConnection:
    """A CrossConnection as the server has it (the parts the controller compares)."""

    namespace: str
    name: str
    chain: str | None  # the chain label
    owner_uid: str | None  # the controlling ServiceFunctionChain owner
    generation: int | None
    labels: Mapping[str, str]
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    deleting: bool = False  # deletionTimestamp set: agents are still removing it
    finalizers: tuple[str, ...] = ()
    resource_version: str = ""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> StoredCrossConnection:
        meta = body.get("metadata") or {}
        owners = [
            o
            for o in meta.get("ownerReferences") or ()
            if o.get("controller") and o.get("kind") == CHAIN_KIND
        ]
        labels = dict(meta.get("labels") or {})
        generation = meta.get("generation")
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            chain=labels.get(CHAIN_LABEL),
            owner_uid=str(owners[0].get("uid")) if owners else None,
            generation=int(generation) if generation is not None else None,
            labels=labels,
            spec=copy.deepcopy(dict(body.get("spec") or {})),
            status=copy.deepcopy(dict(body.get("status") or {})),
            deleting=meta.get("deletionTimestamp") is not None,
            finalizers=tuple(meta.get("finalizers") or ()),
            resource_version=str(meta.get("resourceVersion") or ""),
        )

    def programming(self) -> LinkProgramming:
        """What the agents reported about this object's current generation."""
        meta = {} if self.generation is None else {"generation": self.generation}
        return link_programming({"metadata": meta, "spec": self.spec, "status": self.status})


@dataclass(frozen=True)
class Create:
    """The object does not exist: create ``body``."""


@dataclass(frozen=True)
class Patch:
    """Merge-patch the object with ``patch`` (the whole spec; labels and owner if not ours)."""

    patch: Mapping[str, Any]


@dataclass(frozen=True)
class Refuse:
    """An object of that name belongs to another chain: leave it, report ``message``."""

    message: str


XcAction = Create | Patch | Refuse | None  # None: up to date, nothing to write


def plan_cross_connection(
    chain: ChainSpec,
    body: CrossConnectionBody,
    existing: StoredCrossConnection | None,
    *,
    written: Mapping[str, Any] | None = None,
) -> XcAction:
    """What to do so that the server holds ``body`` (``cross_connection_body``) for ``chain``.

    ``existing``: the object as indexed, or None; ``written``: the spec this controller wrote
    last if its watch event has not come back yet (then it is what the server holds).
    """
    desired = body["spec"]
    if existing is None and written is None:
        return Create()
    if existing is not None and existing.chain not in (None, chain.name):
        return Refuse(
            f"CrossConnection {existing.name!r} already exists for chain {existing.chain!r}; "
            "rename this chain or the link"
        )
    current = written if written is not None else existing.spec if existing else None
    owned = existing is None or (
        existing.owner_uid == chain.uid
        and existing.labels.get(CHAIN_LABEL) == chain.name
        and existing.labels.get(LINK_LABEL) == desired["link"]
    )
    if current == desired and owned:
        return None
    # a merge patch: "dataplane" given even when empty, so that a removed setting is removed
    patch: dict[str, Any] = {"spec": {**desired, "dataplane": desired.get("dataplane")}}
    if not owned:
        meta = body["metadata"]
        patch["metadata"] = {"labels": meta["labels"], "ownerReferences": meta["ownerReferences"]}
    return Patch(patch)


def link_report(
    spec: CrossConnectionSpec, body: CrossConnectionBody, existing: StoredCrossConnection | None
) -> LinkProgramming:
    """What the agents have programmed of ``spec``: their report if the stored object already
    has this spec, else every node holding an endpoint still has to (they have not seen it)."""
    if existing is None or existing.spec != body["spec"]:
        return LinkProgramming(waiting=tuple(sorted(spec.nodes)))
    return existing.programming()


def stale_cross_connections(
    chain: ChainSpec,
    wanted: Collection[str],
    existing: Iterable[StoredCrossConnection],
    *,
    deleted: Collection[str] = (),
) -> list[str]:
    """Names of the chain's CrossConnections to delete: labelled with the chain, owned by it
    (or by nobody), not for one of its current links, and not deleted already (terminating, or
    in ``deleted``: deleted by this controller, its watch event not back yet)."""
    return sorted(
        xc.name
        for xc in existing
        if xc.name not in wanted
        and xc.owner_uid in (chain.uid, None)
        and not xc.deleting
        and xc.name not in deleted
    )


__all__ = [
    "Create",
    "Patch",
    "Refuse",
    "StoredCrossConnection",
    "XcAction",
    "link_report",
    "plan_cross_connection",
    "stale_cross_connections",
]
