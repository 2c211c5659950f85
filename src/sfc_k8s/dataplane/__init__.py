"""The eBPF cross-connection data plane: program, maps, loader and link/endpoint manager.

Public surface (used by the ``sfc-k8s dp`` CLI, the node agent, the traffic tests and the
benchmark): ``Dataplane`` and the value types and errors below. ``Side`` and ``EndpointState``
are the API's enums (``sfc_k8s.api.models``), re-exported here for callers of the data plane.
"""

from sfc_k8s.api.models import EndpointState, Side
from sfc_k8s.dataplane.errors import (
    BpfError,
    CapacityError,
    DataplaneError,
    EndpointExists,
    EndpointNotFound,
    InterfaceNotFound,
    InvalidName,
    InvalidValue,
    LinkExists,
    LinkNotFound,
)
from sfc_k8s.dataplane.manager import DEFAULT_BPFFS_ROOT, Dataplane
from sfc_k8s.dataplane.records import (
    DropReason,
    Endpoint,
    EndpointCounters,
    EndpointSpec,
    LinkStatus,
    Session,
)
from sfc_k8s.dataplane.structs import (
    MAGLEV_SIZE,
    MAX_CLUSTER_LINKS,
    MAX_ENDPOINTS_PER_SIDE,
    MAX_EP_ID,
    SESSIONS_DEFAULT,
)

__all__ = [
    "DEFAULT_BPFFS_ROOT",
    "MAGLEV_SIZE",
    "MAX_CLUSTER_LINKS",
    "MAX_ENDPOINTS_PER_SIDE",
    "MAX_EP_ID",
    "SESSIONS_DEFAULT",
    "BpfError",
    "CapacityError",
    "Dataplane",
    "DataplaneError",
    "DropReason",
    "Endpoint",
    "EndpointCounters",
    "EndpointExists",
    "EndpointNotFound",
    "EndpointSpec",
    "EndpointState",
    "InterfaceNotFound",
    "InvalidName",
    "InvalidValue",
    "LinkExists",
    "LinkNotFound",
    "LinkStatus",
    "Session",
    "Side",
]
