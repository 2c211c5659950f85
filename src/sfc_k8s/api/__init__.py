"""The sfc-k8s API: ServiceFunctionChain/CrossConnection models and the pure decisions on them.

Nothing here does I/O or imports another part of sfc-k8s, so every decision can be unit-tested
and shared by the CNI plugin, the controller and the node agent.

Public surface (import from ``sfc_k8s.api``):

- models: ``ChainSpec``, ``FunctionSpec``, ``LinkSpec``, ``LinkEnd``, ``LabelSelector``,
  ``DataplaneSpec``, ``PodInfo``, ``EndpointSpec``, ``CrossConnectionSide``,
  ``CrossConnectionSpec``, enums ``EndpointState``, ``Side``, ``ConditionType``,
  ``ConditionStatus``, ``Reason``, and the group/kind/label constants;
- ``parse_chain(body) -> ChainSpec`` (raises ``ChainInvalid``), ``parse_cross_connection``;
- ``pod_info(body) -> PodInfo``, ``selector_overlaps``, ``interface_conflicts``;
- ``attached_interfaces(pod)`` (the pod's network-status annotation), ``ready_since(pod)``;
- ``assign_identities(spec, previous, in_use)``: cluster and endpoint ids (``identity``);
- ``compute_links(chain, pods)``, ``compute_cross_connections(chain, pods)``,
  ``link_programming(xc_body)``;
- ``compute_chain_status``, ``invalid_chain_status``, ``set_condition``,
  ``condition_changes``.
"""

from sfc_k8s.api.attachments import NETWORK_STATUS_ANNOTATION, attached_interfaces, ready_since
from sfc_k8s.api.chain import parse_chain, parse_selector
from sfc_k8s.api.crossconnection import (
    LinkProgramming,
    compute_cross_connections,
    compute_links,
    cross_connection_body,
    endpoint_state,
    link_programming,
    parse_cross_connection,
)
from sfc_k8s.api.errors import ChainInvalid, CrossConnectionInvalid, InvalidObjectError
from sfc_k8s.api.identity import IdentitiesExhausted, assign_identities
from sfc_k8s.api.models import (
    API_VERSION,
    CHAIN_KIND,
    CHAIN_LABEL,
    CHAIN_PLURAL,
    GROUP,
    LINK_LABEL,
    VERSION,
    XC_KIND,
    XC_PLURAL,
    ChainSpec,
    ConditionStatus,
    ConditionType,
    CrossConnectionSide,
    CrossConnectionSpec,
    DataplaneSpec,
    EndpointSpec,
    EndpointState,
    FunctionSpec,
    LabelSelector,
    LinkEnd,
    LinkSpec,
    PodInfo,
    Reason,
    SelectorOperator,
    SelectorRequirement,
    Side,
    xc_name,
)
from sfc_k8s.api.pods import (
    SelectionKey,
    functions_of,
    interface_claims,
    interface_conflicts,
    pod_info,
    pod_selection_keys,
    selection_keys,
    selector_overlaps,
)
from sfc_k8s.api.status import (
    compute_chain_status,
    condition,
    condition_changes,
    get_condition,
    invalid_chain_status,
    set_condition,
)
from sfc_k8s.api.timestamps import now_rfc3339

__all__ = [
    "API_VERSION",
    "CHAIN_KIND",
    "CHAIN_LABEL",
    "CHAIN_PLURAL",
    "GROUP",
    "LINK_LABEL",
    "NETWORK_STATUS_ANNOTATION",
    "VERSION",
    "XC_KIND",
    "XC_PLURAL",
    "ChainInvalid",
    "ChainSpec",
    "ConditionStatus",
    "ConditionType",
    "CrossConnectionInvalid",
    "CrossConnectionSide",
    "CrossConnectionSpec",
    "DataplaneSpec",
    "EndpointSpec",
    "EndpointState",
    "FunctionSpec",
    "IdentitiesExhausted",
    "InvalidObjectError",
    "LabelSelector",
    "LinkEnd",
    "LinkProgramming",
    "LinkSpec",
    "PodInfo",
    "Reason",
    "SelectionKey",
    "SelectorOperator",
    "SelectorRequirement",
    "Side",
    "assign_identities",
    "attached_interfaces",
    "compute_chain_status",
    "compute_cross_connections",
    "compute_links",
    "condition",
    "condition_changes",
    "cross_connection_body",
    "endpoint_state",
    "functions_of",
    "get_condition",
    "interface_claims",
    "interface_conflicts",
    "invalid_chain_status",
    "link_programming",
    "now_rfc3339",
    "parse_chain",
    "parse_cross_connection",
    "parse_selector",
    "pod_info",
    "pod_selection_keys",
    "ready_since",
    "selection_keys",
    "selector_overlaps",
    "set_condition",
    "xc_name",
]
