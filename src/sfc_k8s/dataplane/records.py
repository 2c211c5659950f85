"""What the data plane reports: drop reasons, endpoint counters, link status, sessions and the
tunnel; and ``EndpointSpec``, the one record callers hand it (an endpoint to add, local or on
another node).

Returned by ``sfc_k8s.dataplane.Dataplane`` to the ``dp`` CLI, the node agent and the tests. The
sides and endpoint states they carry are the API's enums (``sfc_k8s.api.models``), so a
CrossConnection and the data plane speak of them with the same values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sfc_k8s.api.models import EndpointState, Side


class DropReason(enum.IntEnum):
    """Mirrors bpf/lib/drop_reasons.h; never renumbered."""

    MALFORMED = 1  # a header is truncated or inconsistent
    NO_ENDPOINT = 2  # the far side has no active endpoint
    STALE_ENDPOINT = 3  # the lookup table named an endpoint no longer in the link
    REDIRECT_FAILED = 4  # bpf_redirect_peer refused the target
    # The tunnel; the first three are node-wide (``Dataplane.tunnel_drops``), no link known.
    TUNNEL_NO_KEY = 5  # a packet on the tunnel device without our key and option
    TUNNEL_UNKNOWN_NODE = 6  # its outer source is no node of a remote endpoint
    TUNNEL_UNKNOWN_LINK = 7  # its key names no link of this node
    TUNNEL_BAD_ENDPOINT = 8  # its ids are not a remote source and a local destination opposite
    TOO_BIG = 9  # too large for the tunnel once encapsulated
    NO_TUNNEL = 10  # a remote endpoint was chosen but the node has no tunnel


# The reasons counted for the node (on link 0), before the packet's link is known.
NODE_DROPS = (
    DropReason.TUNNEL_NO_KEY,
    DropReason.TUNNEL_UNKNOWN_NODE,
    DropReason.TUNNEL_UNKNOWN_LINK,
)


@dataclass(frozen=True)
class EndpointCounters:
    """Summed over CPUs."""

    rx_packets: int = 0  # entered the link FROM this endpoint's interface
    rx_bytes: int = 0
    tx_packets: int = 0  # redirected INTO this endpoint's pod
    tx_bytes: int = 0


@dataclass(frozen=True)
class EndpointSpec:
    """An endpoint to add: a local host interface (``ifname``) or an endpoint on another node
    (``node``: that node's underlay IPv4 address). ``id`` is its stable id within the link,
    the same on every node (1 to ``MAX_EP_ID``; 0: the first free one, for a local endpoint of
    a single-node link)."""

    ifname: str = ""
    node: str = ""
    id: int = 0

    @property
    def remote(self) -> bool:
        return bool(self.node)


@dataclass(frozen=True)
class Endpoint:
    side: Side
    ifname: str  # local: host interface; "" for a remote endpoint
    ifindex: int  # 0 for a remote endpoint
    state: EndpointState
    counters: EndpointCounters = field(default_factory=EndpointCounters)
    id: int = 0  # stable id within the link, the same on every node
    node: str = ""  # remote: underlay IPv4 address of its node; "" for a local endpoint


@dataclass(frozen=True)
class LinkStatus:
    name: str
    link_id: int  # node-local
    endpoints: list[Endpoint]
    sessions: int  # live sessions of the link in the node's session table
    drops: dict[DropReason, int]
    sessions_created: int = 0  # new sessions recorded since the link was created
    cluster_id: int = 0  # the same on every node

    def side(self, side: Side) -> list[Endpoint]:
        return [e for e in self.endpoints if e.side is side]


@dataclass(frozen=True)
class Session:
    """One flow of a link: its direction-normalised key and the endpoint on each side."""

    kind: str  # l4-v4, l4-v6, l3-v4, l3-v6, arp, nd, l2
    proto: int  # IP protocol number (l4/l3 kinds), else 0
    vlan: int
    addr_lo: str
    port_lo: int
    addr_hi: str
    port_hi: int
    a_ifname: str  # endpoint on side A ("" if it left the link)
    a_ifindex: int
    b_ifname: str
    b_ifindex: int

    def endpoint(self, side: Side) -> str:
        return self.a_ifname if side is Side.A else self.b_ifname


@dataclass(frozen=True)
class TunnelStatus:
    """The node's tunnel device, as ``Dataplane.tunnel`` finds it."""

    ifname: str
    ifindex: int
    port: int  # UDP destination port
    mtu: int  # the device's MTU: the largest inner packet (L3) sent without a TOO_BIG drop
    udp_csum: bool  # outer UDP checksum on sent packets
