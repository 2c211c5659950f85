"""Typed, immutable models of the sfc-k8s API (group ``sfc-k8s.io``, version ``v1alpha1``).

The controller parses a ServiceFunctionChain body into a ``ChainSpec`` once, and every decision
(which pods are endpoints of which link, what the status says) is a pure function of these models.
The node agent parses CrossConnections into ``CrossConnectionSpec``. Bodies are rebuilt with the
``to_body`` methods so that the JSON written to the API is produced in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sfc_k8s.api.types import (
    CrossConnectionSideBody,
    CrossConnectionSpecBody,
    DataplaneBody,
    EndpointBody,
    LabelSelectorBody,
    LabelSelectorRequirementBody,
    OwnerReferenceBody,
)

GROUP = "sfc-k8s.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

CHAIN_KIND = "ServiceFunctionChain"
CHAIN_PLURAL = "servicefunctionchains"
XC_KIND = "CrossConnection"
XC_PLURAL = "crossconnections"

# Labels the controller puts on every CrossConnection so that agents and people can select them.
CHAIN_LABEL = f"{GROUP}/chain"
LINK_LABEL = f"{GROUP}/link"

# Kubernetes name limits.
DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253
LABEL_VALUE_MAX = 63
IFNAME_MAX = 15

# Stable identities (``sfc_k8s.api.identity``), the data plane's limits: an endpoint's id within
# its link, and a link's id across the cluster (both start at 1; 0 means "not assigned").
ENDPOINT_ID_MAX = 4095
CLUSTER_ID_MAX = 65535


class Side(StrEnum):
    """The two sides of a link / cross-connection; a packet entering on one leaves on the other.

    The one definition of sides: the chain models, the node agent and the data plane
    (``sfc_k8s.dataplane`` re-exports it) all use this enum.
    """

    A = "a"
    B = "b"

    @property
    def num(self) -> int:
        """The side's number: 0 for a, 1 for b (``enum sfc_side`` of the eBPF maps)."""
        return 0 if self is Side.A else 1

    @classmethod
    def from_index(cls, index: int) -> Side:
        """The side numbered ``index`` (the inverse of ``num``)."""
        return cls.A if index == 0 else cls.B


class EndpointState(StrEnum):
    """State of an endpoint, in a CrossConnection and in the data plane (one definition)."""

    ACTIVE = "active"  # gets new flows and keeps its sessions
    DRAINING = "draining"  # keeps its sessions, gets no new flows


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class ConditionType(StrEnum):
    READY = "Ready"
    DEGRADED = "Degraded"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Reason(StrEnum):
    """Machine-readable reasons of the chain conditions (CamelCase, as Kubernetes expects)."""

    READY = "ChainReady"  # Ready=True
    FUNCTIONS_NOT_READY = "FunctionsNotReady"  # Ready=False: a function has no Ready replica
    NOT_PROGRAMMED = "NotProgrammed"  # Ready=False: agents have not programmed every link yet
    INVALID_SPEC = "InvalidSpec"  # Ready=False, Degraded=True: fix the spec
    SELECTOR_OVERLAP = "SelectorOverlap"  # a pod is selected by two functions of the chain
    NAME_CONFLICT = "NameConflict"  # a CrossConnection name is taken by another chain
    WRITE_REFUSED = "WriteRefused"  # the API server refused a CrossConnection write (RBAC...)
    PROGRAMMING_FAILED = "ProgrammingFailed"  # an agent reported an error for a link
    INTERFACE_CONFLICT = "InterfaceConflict"  # an older chain links the same pod interface
    SELECTOR_MATCHES_NO_POD = "SelectorMatchesNoPod"  # a function's selector matches no pod
    TUNNEL_MTU_EXCEEDED = "TunnelMTUExceeded"  # NF interfaces larger than a node's tunnel
    AS_EXPECTED = "AsExpected"  # Degraded=False


@dataclass(frozen=True)
class SelectorRequirement:
    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator is SelectorOperator.IN:
            return self.key in labels and labels[self.key] in self.values
        if self.operator is SelectorOperator.NOT_IN:
            # Kubernetes semantics: a pod without the key satisfies NotIn.
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator is SelectorOperator.EXISTS:
            return self.key in labels
        return self.key not in labels

    def to_body(self) -> LabelSelectorRequirementBody:
        body: LabelSelectorRequirementBody = {"key": self.key, "operator": str(self.operator)}
        if self.values:
            body["values"] = list(self.values)
        return body


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes LabelSelector: every matchLabels pair AND every requirement must hold."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[SelectorRequirement, ...] = ()

    @property
    def is_empty(self) -> bool:
        """An empty selector matches every pod; chains reject it."""
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions
        )

    def to_body(self) -> LabelSelectorBody:
        body: LabelSelectorBody = {}
        if self.match_labels:
            body["matchLabels"] = dict(self.match_labels)
        if self.match_expressions:
            body["matchExpressions"] = [r.to_body() for r in self.match_expressions]
        return body


@dataclass(frozen=True)
class WorkloadRef:
    """A Deployment or StatefulSet, by kind and name (in the chain's namespace)."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class AutoscalingSpec:
    """A function's ``autoscaling`` block (``sfc_k8s.api.autoscaling`` renders its HPA)."""

    min_replicas: int
    max_replicas: int
    metric: str  # packetsPerSecond | bitsPerSecond | sessions
    target_average_value: str  # a quantity, per replica
    behavior: Mapping[str, Any] | None = None  # None: the NF defaults
    workload: WorkloadRef | None = None  # None: found from the function's pods


@dataclass(frozen=True)
class FunctionSpec:
    """One network function of a chain: its pods (by selector) and data-plane interfaces."""

    name: str
    selector: LabelSelector
    interfaces: tuple[str, ...]
    autoscaling: AutoscalingSpec | None = None


@dataclass(frozen=True)
class LinkEnd:
    function: str
    interface: str

    def __str__(self) -> str:
        return f"{self.function}/{self.interface}"


@dataclass(frozen=True)
class LinkSpec:
    """A cross-connection between one interface of two functions."""

    name: str
    a: LinkEnd
    b: LinkEnd

    def end(self, side: Side) -> LinkEnd:
        return self.a if side is Side.A else self.b


@dataclass(frozen=True)
class DataplaneSpec:
    """Optional per-chain data-plane settings, copied into each CrossConnection of the chain.

    The session table is not one of them: it is node-wide, shared by every link of the node,
    and sized by the node agent's ``--session-table-size``.
    """

    drain_timeout_seconds: int | None = None  # None: drain until the controller removes it

    def to_body(self) -> DataplaneBody:
        body: DataplaneBody = {}
        if self.drain_timeout_seconds is not None:
            body["drainTimeoutSeconds"] = self.drain_timeout_seconds
        return body


@dataclass(frozen=True)
class ChainSpec:
    """A parsed, statically valid ServiceFunctionChain."""

    name: str
    namespace: str
    uid: str
    generation: int
    functions: tuple[FunctionSpec, ...]
    links: tuple[LinkSpec, ...]
    dataplane: DataplaneSpec = field(default_factory=DataplaneSpec)
    created: str = ""  # metadata.creationTimestamp (RFC 3339 strings sort in time order)

    @property
    def seniority(self) -> tuple[str, str]:
        """Older chains first (name breaks ties): the older one keeps a contested interface."""
        return (self.created, self.name)

    def function(self, name: str) -> FunctionSpec:
        for fn in self.functions:
            if fn.name == name:
                return fn
        raise KeyError(name)

    def xc_name(self, link: LinkSpec | str) -> str:
        return xc_name(self.name, link if isinstance(link, str) else link.name)

    def owner_reference(self) -> OwnerReferenceBody:
        """The controlling owner reference of what the controller writes for this chain
        (CrossConnections, HPAs): deleting the chain deletes them."""
        return {
            "apiVersion": API_VERSION,
            "kind": CHAIN_KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def xc_name(chain: str, link: str) -> str:
    """Name of the CrossConnection of ``link`` in ``chain``: ``<chain>-<link>``."""
    return f"{chain}-{link}"


@dataclass(frozen=True)
class PodInfo:
    """What the controller needs to know about a pod; built by ``sfc_k8s.api.pods.pod_info``."""

    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str]
    node: str | None
    ready: bool
    terminating: bool
    owner: tuple[str, str] = ("", "")  # controller owner (kind, name); ("", "") for none

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True)
class EndpointSpec:
    """One replica interface on one side of a cross-connection."""

    pod: str
    pod_uid: str
    node: str
    interface: str
    host_interface: str
    state: EndpointState
    id: int = 0  # stable within the link, the same on every node (0: not assigned yet)

    @property
    def identity(self) -> tuple[str, str]:
        """What makes an endpoint the same one from one reconcile to the next."""
        return (self.pod_uid, self.interface)

    def to_body(self) -> EndpointBody:
        body: EndpointBody = {
            "pod": self.pod,
            "podUID": self.pod_uid,
            "node": self.node,
            "interface": self.interface,
            "hostInterface": self.host_interface,
            "state": str(self.state),
        }
        if self.id:
            body["id"] = self.id
        return body


@dataclass(frozen=True)
class CrossConnectionSide:
    function: str
    interface: str
    endpoints: tuple[EndpointSpec, ...] = ()

    @property
    def active(self) -> tuple[EndpointSpec, ...]:
        return tuple(e for e in self.endpoints if e.state is EndpointState.ACTIVE)

    @property
    def draining(self) -> tuple[EndpointSpec, ...]:
        return tuple(e for e in self.endpoints if e.state is EndpointState.DRAINING)

    def on_node(self, node: str) -> tuple[EndpointSpec, ...]:
        return tuple(e for e in self.endpoints if e.node == node)

    def to_body(self) -> CrossConnectionSideBody:
        return {
            "function": self.function,
            "interface": self.interface,
            "activeEndpoints": len(self.active),
            "drainingEndpoints": len(self.draining),
            "endpoints": [e.to_body() for e in self.endpoints],
        }


@dataclass(frozen=True)
class CrossConnectionSpec:
    """The desired state of one link: the endpoints of both sides (written by the controller)."""

    chain: str
    link: str
    a: CrossConnectionSide
    b: CrossConnectionSide
    dataplane: DataplaneSpec = field(default_factory=DataplaneSpec)
    cluster_id: int = 0  # the link's id across the cluster (0: not assigned yet)
    last_endpoint_id: int = 0  # the endpoint id handed out last (ids are not reused soon)

    def side(self, side: Side) -> CrossConnectionSide:
        return self.a if side is Side.A else self.b

    @property
    def endpoints(self) -> tuple[tuple[Side, EndpointSpec], ...]:
        """Every endpoint of both sides, with its side."""
        return tuple((side, ep) for side in Side for ep in self.side(side).endpoints)

    @property
    def nodes(self) -> frozenset[str]:
        """Nodes holding at least one endpoint: the agents that must program this link."""
        return frozenset(e.node for e in (*self.a.endpoints, *self.b.endpoints))

    def to_body(self) -> CrossConnectionSpecBody:
        body: CrossConnectionSpecBody = {
            "chain": self.chain,
            "link": self.link,
            "a": self.a.to_body(),
            "b": self.b.to_body(),
        }
        if self.cluster_id:
            body["clusterId"] = self.cluster_id
        if self.last_endpoint_id:
            body["lastEndpointId"] = self.last_endpoint_id
        dataplane = self.dataplane.to_body()
        if dataplane:
            body["dataplane"] = dataplane
        return body
