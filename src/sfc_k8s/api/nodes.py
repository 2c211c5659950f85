"""What the node agents need to know of a Node: where to tunnel to, and whether to use it.

The agent watches Nodes and keeps a ``NodeView`` of each (``node_view``); ``usable`` is the one
decision on node loss: a node whose Ready condition is not True (NotReady, or Unknown once its
heartbeats stop for the grace period), that is being deleted, or whose Node object is gone,
gets no new flows from other nodes (its endpoints leave their Maglev tables). The underlay
address is the Node's first ``InternalIP``, or the ``sfc-k8s.io/tunnel-address`` annotation when
the data path uses another NIC (an agent flag overrides it for the agent's own node, see
``sfc_k8s.operator.agent``). ``agent_finalizer`` names each agent's finalizer, and
``orphan_finalizers`` finds those of agents whose Node is gone (the controller removes them).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sfc_k8s.api.conditions import is_ready

TUNNEL_ADDRESS_ANNOTATION = "sfc-k8s.io/tunnel-address"
AGENT_FINALIZER_PREFIX = "sfc-k8s.io/agent-"
_QUALIFIED_NAME_MAX = 63


@dataclass(frozen=True)
class NodeView:
    """A Node as the agents use it."""

    name: str
    address: str  # underlay IPv4 address ("" when the Node publishes none usable)
    ready: bool  # Ready=True and not being deleted
    problem: str = ""  # why ``address`` is empty or not the annotation's, for logs

    @property
    def usable(self) -> bool:
        """Whether other nodes may send new flows to this node's endpoints."""
        return self.ready and bool(self.address)


def ipv4_address(value: object) -> str:
    """``value`` if it is a unicast IPv4 address, else ""."""
    try:
        address = ipaddress.IPv4Address(str(value))
    except ValueError:
        return ""
    if address.is_unspecified or address.is_multicast or address.is_loopback:
        return ""
    return str(address)


def node_view(body: Mapping[str, Any]) -> NodeView:
    """Parse a Node body: its tunnel address and readiness."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    name = str(meta.get("name") or "")
    ready = meta.get("deletionTimestamp") is None and is_ready(body)
    problem = ""
    annotated = (meta.get("annotations") or {}).get(TUNNEL_ADDRESS_ANNOTATION)
    address = ipv4_address(annotated) if annotated is not None else ""
    if annotated is not None and not address:
        problem = (
            f"annotation {TUNNEL_ADDRESS_ANNOTATION}={annotated!r} is not a unicast IPv4"
            " address; using the InternalIP"
        )
    if not address:
        internal = [
            a.get("address")
            for a in status.get("addresses") or ()
            if isinstance(a, Mapping) and a.get("type") == "InternalIP"
        ]
        address = next((found for a in internal if (found := ipv4_address(a))), "")
        if not address:
            problem = problem or "no IPv4 InternalIP in status.addresses"
    return NodeView(name, address, ready, problem)


def agent_finalizer(node: str) -> str:
    """The finalizer ``node``'s agent puts on the CrossConnections it programs."""
    name = f"agent-{node}"
    if len(name) > _QUALIFIED_NAME_MAX or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name):
        name = f"agent-{hashlib.sha256(node.encode()).hexdigest()[:16]}"
    return f"sfc-k8s.io/{name}"


def orphan_finalizers(finalizers: Iterable[str], nodes: Collection[str]) -> list[str]:
    """The agent finalizers among ``finalizers`` whose node is not among ``nodes`` (the Nodes
    that exist): their agent is gone with its node and will never remove them, so the
    controller does (else deleting the CrossConnection would hang for ever). No Node at all
    says nothing (Nodes not readable, or a test API server without any): nothing is orphaned."""
    if not nodes:
        return []
    known = {agent_finalizer(node) for node in nodes}
    return [f for f in finalizers if f.startswith(AGENT_FINALIZER_PREFIX) and f not in known]


__all__ = [
    "AGENT_FINALIZER_PREFIX",
    "TUNNEL_ADDRESS_ANNOTATION",
    "NodeView",
    "agent_finalizer",
    "ipv4_address",
    "node_view",
    "orphan_finalizers",
]
