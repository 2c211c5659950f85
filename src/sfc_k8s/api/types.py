"""Raw Kubernetes bodies of the sfc-k8s resources and of the parts of Pods we read, as TypedDicts.

These describe the JSON the API server stores and the controller writes; parsing them into the
frozen dataclasses of ``sfc_k8s.api.models`` happens in ``chain.py`` and ``crossconnection.py``.
Every key is optional at the type level (``total=False``) because bodies come from outside: the
parsers check presence and report what is missing.
"""

from __future__ import annotations

from typing import Any, TypedDict

# --- shared --------------------------------------------------------------------------------


class LabelSelectorRequirementBody(TypedDict, total=False):
    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: list[str]


class LabelSelectorBody(TypedDict, total=False):
    matchLabels: dict[str, str]
    matchExpressions: list[LabelSelectorRequirementBody]


class OwnerReferenceBody(TypedDict, total=False):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool
    blockOwnerDeletion: bool


class ObjectMetaBody(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    generation: int
    resourceVersion: str
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[OwnerReferenceBody]
    deletionTimestamp: str


class ConditionBody(TypedDict, total=False):
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


# --- ServiceFunctionChain ----------------------------------------------------------------------


class FunctionBody(TypedDict, total=False):
    name: str
    selector: LabelSelectorBody
    interfaces: list[str]


class LinkEndBody(TypedDict, total=False):
    function: str
    interface: str


class LinkBody(TypedDict, total=False):
    name: str
    a: LinkEndBody
    b: LinkEndBody


class DataplaneBody(TypedDict, total=False):
    drainTimeoutSeconds: int


class ChainSpecBody(TypedDict, total=False):
    functions: list[FunctionBody]
    links: list[LinkBody]
    dataplane: DataplaneBody


class FunctionStatusBody(TypedDict, total=False):
    replicas: int  # pods selected and not terminating
    readyReplicas: int  # of which Ready
    readyReplicasByNode: dict[str, int]  # Ready replicas per node (nodes with one or more)
    autoscaling: dict[str, Any]  # the function's HPA (sfc_k8s.api.autoscaling.hpa_status)


class LinkStatusBody(TypedDict, total=False):
    endpointsA: int  # active endpoints on side a
    endpointsB: int
    drainingA: int  # draining endpoints on side a
    drainingB: int
    crossConnection: str  # name of the CrossConnection of this link


class ChainStatusBody(TypedDict, total=False):
    observedGeneration: int
    functions: dict[str, FunctionStatusBody]
    links: dict[str, LinkStatusBody]
    readyFunctions: str  # "ready/total" functions with at least one Ready replica
    readyLinks: str  # "ready/total" links with active endpoints on both sides
    conditions: list[ConditionBody]


class ChainBody(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMetaBody
    spec: ChainSpecBody
    status: ChainStatusBody


# --- CrossConnection -------------------------------------------------------------------------


class EndpointBody(TypedDict, total=False):
    pod: str
    podUID: str
    node: str
    interface: str  # pod-side interface name
    hostInterface: str  # host end of the pod's veth: naming.host_ifname(podUID, interface)
    state: str  # active | draining
    id: int  # stable endpoint id within the link (sfc_k8s.api.identity)


class CrossConnectionSideBody(TypedDict, total=False):
    function: str
    interface: str
    activeEndpoints: int
    drainingEndpoints: int
    endpoints: list[EndpointBody]


class CrossConnectionSpecBody(TypedDict, total=False):
    chain: str
    link: str
    a: CrossConnectionSideBody
    b: CrossConnectionSideBody
    dataplane: DataplaneBody
    clusterId: int  # the link's id across the cluster
    lastEndpointId: int  # the endpoint id handed out last


class NodeStatusBody(TypedDict, total=False):
    programmedEndpoints: int
    observedGeneration: int
    ready: bool
    message: str
    lastUpdate: str


class CrossConnectionStatusBody(TypedDict, total=False):
    nodes: dict[str, NodeStatusBody]


class CrossConnectionBody(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMetaBody
    spec: CrossConnectionSpecBody
    status: CrossConnectionStatusBody
