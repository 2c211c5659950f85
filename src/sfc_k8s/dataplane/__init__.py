"""The eBPF cross-connection data plane: program, maps, loader and link/endpoint manager.

Public surface (used by the ``sfc-k8s dp`` CLI, the node agent, the traffic tests and the
benchmark): ``Dataplane`` and the value types and errors below.
"""

from sfc_k8s.dataplane.errors import (
    BpfError,
    CapacityError,
    DataplaneError,
    EndpointExists,
    EndpointNotFound,
    InterfaceNotFound,
    InvalidName,
    LinkExists,
    LinkNotFound,
)
from sfc_k8s.dataplane.manager import DEFAULT_BPFFS_ROOT, Dataplane
from sfc_k8s.dataplane.model import (
    DropReason,
    Endpoint,
    EndpointCounters,
    EndpointState,
    LinkStatus,
    Session,
    Side,
)
from sfc_k8s.dataplane.structs import MAGLEV_SIZE, MAX_ENDPOINTS_PER_SIDE, SESSIONS_DEFAULT

__all__ = [
    "DEFAULT_BPFFS_ROOT",
    "MAGLEV_SIZE",
    "MAX_ENDPOINTS_PER_SIDE",
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
    "EndpointState",
    "InterfaceNotFound",
    "InvalidName",
    "LinkExists",
    "LinkNotFound",
    "LinkStatus",
    "Session",
    "Side",
]
