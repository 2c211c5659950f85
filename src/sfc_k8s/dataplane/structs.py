"""ctypes mirrors of the structures and constants the eBPF program shares with user space.

The one place where C layouts appear in Python (``tests/bpf/test_layout.py`` compares every
size and offset with the BTF of the compiled object, and the constants with the C headers).
Used by the loader, the manager and the tests.
"""

from __future__ import annotations

import ctypes
import enum
import ipaddress
import socket

# Capacities (bpf/lib/common.h).
MAX_LINKS = 1024
MAX_IFACES = 16384
MAX_ENDPOINTS_PER_SIDE = 1024
# Stable ids: endpoint ids within a link 1..MAX_EP_ID, cluster-wide link ids
# 1..MAX_CLUSTER_LINKS - 1 (bpf/lib/common.h).
MAX_EP_ID = 4095
MAX_CLUSTER_LINKS = 65536
IFCACHE_SIZE = 65536
MAGLEV_SIZE = 65537
SESSIONS_DEFAULT = 1_048_576
DROP_MAX = 16
# Flow caches (bpf/lib/flow_cache.h): entries per CPU, how often an entry asks the table.
FLOW_CACHE_BITS = 13
FLOW_CACHE_SIZE = 1 << FLOW_CACHE_BITS
FLOW_CACHE_REFRESH = 64
IFNAMSIZ = 16
# The tunnel (bpf/lib/tunnel.h): bits of each endpoint id in the VNI, the GBP id mask.
TUNNEL_ID_BITS = 12
TUNNEL_GBP_MASK = 0xFFFF
# bpf_skb_set_tunnel_key flag (linux/bpf.h): no outer UDP checksum.
BPF_F_ZERO_CSUM_TX = 1 << 1

SIDE_A = 0
SIDE_B = 1
EP_ACTIVE = 0
EP_DRAINING = 1
# Control entry of a Maglev table (index MAGLEV_SIZE): the copy in use, or this (bpf/lib/maglev.h).
MAGLEV_EMPTY = 2

# Map and program names in the object; the version suffix changes with the layout.
MAP_ENDPOINTS = "sfc_endpts_v2"
MAP_IFSLOTS = "sfc_ifslots_v1"
MAP_EPIDS = "sfc_epids_v1"
MAP_IFCACHE = "sfc_ifcache_v1"
MAP_SESSIONS = "sfc_sessions_v2"
MAP_SESSIONS4 = "sfc_sess4_v1"
# The session tables: IPv4 TCP/UDP/UDP-Lite/SCTP flows in MAP_SESSIONS4, the rest in
# MAP_SESSIONS (``session_key`` says which); user space walks and purges both.
SESSION_MAPS = (MAP_SESSIONS4, MAP_SESSIONS)
# The per-CPU flow caches in front of MAP_SESSIONS4 and of both tables for the rest
# (bpf/lib/flow_cache.h).
MAP_FLOW_CACHE4 = "sfc_fcache4_v1"
MAP_FLOW_CACHE = "sfc_fcache_v1"
MAP_MAGLEV = "sfc_maglev_v3"
MAP_EP_COUNTERS = "sfc_epstats_v2"
MAP_LINK_STATS = "sfc_lnkstats_v1"
# The tunnel (bpf/lib/tunnel.h): its configuration, cluster link ids, known nodes.
MAP_TUNNEL = "sfc_tunnel_v1"
MAP_CLINKS = "sfc_clinks_v1"
MAP_NODES = "sfc_nodes_v1"
NODE_MAPS = (
    MAP_ENDPOINTS,
    MAP_IFSLOTS,
    MAP_EPIDS,
    MAP_IFCACHE,
    MAP_SESSIONS,
    MAP_SESSIONS4,
    MAP_FLOW_CACHE4,
    MAP_FLOW_CACHE,
    MAP_MAGLEV,
    MAP_EP_COUNTERS,
    MAP_LINK_STATS,
    MAP_TUNNEL,
    MAP_CLINKS,
    MAP_NODES,
)
# How a program upgrade (dataplane/upgrade.py) treats a node-wide map whose layout changed:
# caches the program refills start empty in the new build; maps only user space writes (under
# the root's lock, so a copy is exact) are copied when only their capacity grew; any other
# change (session tables, counters, the Maglev outer map) is refused.
REBUILT_MAPS = (MAP_FLOW_CACHE4, MAP_FLOW_CACHE)
COPIED_MAPS = (
    MAP_ENDPOINTS,
    MAP_IFSLOTS,
    MAP_EPIDS,
    MAP_IFCACHE,
    MAP_TUNNEL,
    MAP_CLINKS,
    MAP_NODES,
)
# A map created by user space beside the node-wide maps: the SHA-256 of the object file whose
# programs are pinned (its build identity), so a process with another build replaces them.
BUILD_MAP = "sfc_build_v1"
BUILD_ID_SIZE = 32
PROG_INGRESS = "sfc_xc_ingress"
# The receive side of the tunnel, at TC ingress of the node's tunnel device.
PROG_TUNNEL = "sfc_tun_ingress"
# A map created per link (not in the object): holds the link id; its pin names the link.
LINK_INFO_MAP = "sfc_link_v2"
# The per-(link, side) Maglev tables (inner maps of MAP_MAGLEV) created by user space.
MAGLEV_TABLE_MAP = "sfc_mglv_tbl_v2"


class FlowKind(enum.IntEnum):
    """enum sfc_flow_kind (bpf/lib/flow_key.h)."""

    L4_V4 = 1
    L4_V6 = 2
    L3_V4 = 3
    L3_V6 = 4
    ARP = 5
    ND = 6
    L2 = 7


class EndpointEntry(ctypes.Structure):
    """struct sfc_endpoint: one endpoint (value of sfc_endpts_v2, key its slot); local
    (``ifindex``) or remote (``node``, its node's underlay IPv4 address in network order)."""

    _fields_ = [
        ("ifindex", ctypes.c_uint32),
        ("gen", ctypes.c_uint32),  # 0: a free slot
        ("link_id", ctypes.c_uint32),  # node-local
        ("side", ctypes.c_uint8),
        ("state", ctypes.c_uint8),
        ("id", ctypes.c_uint16),  # stable within the link, the same on every node
        ("link_cid", ctypes.c_uint32),  # the link's cluster-wide id
        ("node", ctypes.c_uint8 * 4),  # network order; zero for a local endpoint
        ("ifname", ctypes.c_char * IFNAMSIZ),
    ]

    @property
    def remote(self) -> bool:
        return any(self.node)

    @property
    def node_address(self) -> str:
        """The remote endpoint's node address, "" for a local endpoint."""
        return str(ipaddress.IPv4Address(bytes(self.node))) if self.remote else ""


class EpRef(ctypes.Structure):
    """struct sfc_ep_ref: (node-local link id, stable endpoint id), key of sfc_epids_v1."""

    _fields_ = [
        ("link_id", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
    ]


class FlowKey(ctypes.Structure):
    """struct sfc_flow_key: the direction-normalised flow (key of sfc_sessions_v2)."""

    _fields_ = [
        ("link_id", ctypes.c_uint32),
        ("kind", ctypes.c_uint8),
        ("proto", ctypes.c_uint8),
        ("vlan", ctypes.c_uint16),
        ("port_lo", ctypes.c_uint16),  # network order
        ("port_hi", ctypes.c_uint16),  # network order
        ("addr_lo", ctypes.c_uint8 * 16),
        ("addr_hi", ctypes.c_uint8 * 16),
    ]

    def endpoints(self) -> tuple[str, int, str, int]:
        """(lower address, port, higher address, port) in readable form."""
        kind = FlowKind(self.kind)
        lo, hi = bytes(self.addr_lo), bytes(self.addr_hi)
        if kind in (FlowKind.L4_V4, FlowKind.L3_V4, FlowKind.ARP):
            lo_s, hi_s = str(ipaddress.IPv4Address(lo[:4])), str(ipaddress.IPv4Address(hi[:4]))
        elif kind == FlowKind.L2:
            lo_s, hi_s = lo[:6].hex(":"), hi[:6].hex(":")
        else:
            lo_s, hi_s = str(ipaddress.IPv6Address(lo)), str(ipaddress.IPv6Address(hi))
        return lo_s, socket.ntohs(self.port_lo), hi_s, socket.ntohs(self.port_hi)


class FlowKey4(ctypes.Structure):
    """struct sfc_flow_key4: the compact key of an IPv4 TCP/UDP/UDP-Lite/SCTP flow (kind
    L4_V4) in sfc_sess4_v1; the same fields as its FlowKey, without the unused ones."""

    _fields_ = [
        ("link_id", ctypes.c_uint32),
        ("vlan", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("port_lo", ctypes.c_uint16),  # network order
        ("port_hi", ctypes.c_uint16),  # network order
        ("addr_lo", ctypes.c_uint8 * 4),
        ("addr_hi", ctypes.c_uint8 * 4),
    ]

    @classmethod
    def of(cls, key: FlowKey) -> FlowKey4:
        """The compact form of ``key`` (which must be of kind L4_V4)."""
        if key.kind != FlowKind.L4_V4:
            raise ValueError(f"only an IPv4 L4 flow has a compact key, not kind {key.kind}")
        k4 = cls(link_id=key.link_id, vlan=key.vlan, proto=key.proto)
        k4.port_lo, k4.port_hi = key.port_lo, key.port_hi
        k4.addr_lo[:] = key.addr_lo[:4]
        k4.addr_hi[:] = key.addr_hi[:4]
        return k4

    def flow_key(self) -> FlowKey:
        """The full key the program builds for this flow."""
        key = FlowKey(link_id=self.link_id, kind=FlowKind.L4_V4, proto=self.proto, vlan=self.vlan)
        key.port_lo, key.port_hi = self.port_lo, self.port_hi
        key.addr_lo[:4] = self.addr_lo[:]
        key.addr_hi[:4] = self.addr_hi[:]
        return key


def session_key(key: FlowKey) -> tuple[str, FlowKey | FlowKey4]:
    """The session map that holds the flow of ``key``, and its key there."""
    if key.kind == FlowKind.L4_V4:
        return MAP_SESSIONS4, FlowKey4.of(key)
    return MAP_SESSIONS, key


class SessionValue(ctypes.Structure):
    """struct sfc_session: the endpoint slot on each side (value of sfc_sessions_v2)."""

    _fields_ = [
        ("slot", ctypes.c_uint32 * 2),
        ("gen", ctypes.c_uint32 * 2),
    ]


class FlowCacheState(ctypes.Structure):
    """struct sfc_flow_cache_state: what follows the key in a flow cache entry."""

    _fields_ = [
        ("hits", ctypes.c_uint32),
        ("session", SessionValue),
    ]


class FlowCache4Entry(ctypes.Structure):
    """struct sfc_flow_cache4_entry: one CPU's cached session of one IPv4 L4 flow
    (value of sfc_fcache4_v1, key ``flow.flow_cache_index`` of the flow's FlowKey4)."""

    _fields_ = [
        ("key", FlowKey4),
        ("state", FlowCacheState),
    ]


class FlowCacheEntry(ctypes.Structure):
    """struct sfc_flow_cache_entry: one CPU's cached session of any other flow (value of
    sfc_fcache_v1, key ``flow.flow_cache_index`` of the flow's FlowKey)."""

    _fields_ = [
        ("key", FlowKey),
        ("state", FlowCacheState),
    ]


class MaglevEntry(ctypes.Structure):
    """struct sfc_maglev_entry: a Maglev table slot in each of the table's two copies (not in
    the object's BTF: the table template gives sizes; ``test_layout`` checks a live table)."""

    _fields_ = [("slot", ctypes.c_uint32 * 2)]


class EpCounters(ctypes.Structure):
    """struct sfc_ep_counters: one CPU's counters of one endpoint (sfc_epstats_v2)."""

    _fields_ = [
        ("rx_packets", ctypes.c_uint64),
        ("rx_bytes", ctypes.c_uint64),
        ("tx_packets", ctypes.c_uint64),
        ("tx_bytes", ctypes.c_uint64),
    ]


class LinkStats(ctypes.Structure):
    """struct sfc_link_stats: one CPU's statistics of one link (sfc_lnkstats_v1)."""

    _fields_ = [
        ("sessions_created", ctypes.c_uint64),
        ("drops", ctypes.c_uint64 * DROP_MAX),
    ]


class TunnelConfig(ctypes.Structure):
    """struct sfc_tunnel_cfg: the node's tunnel device (sfc_tunnel_v1[0])."""

    _fields_ = [
        ("ifindex", ctypes.c_uint32),  # 0: no tunnel
        ("key_flags", ctypes.c_uint32),  # BPF_F_ZERO_CSUM_TX or 0
    ]


class LinkInfoValue(ctypes.Structure):
    """The value of a link's own info map (user space only, not in the object)."""

    _fields_ = [
        ("link_id", ctypes.c_uint32),  # node-local: indexes the node-wide maps
        ("cluster_id", ctypes.c_uint32),  # the same on every node (flow hash, tunnel key)
    ]


# The flow caches and the type of their entries (user space only ever empties them).
FLOW_CACHES: dict[str, type[ctypes.Structure]] = {
    MAP_FLOW_CACHE4: FlowCache4Entry,
    MAP_FLOW_CACHE: FlowCacheEntry,
}

# C struct name -> mirror, for the layout test against the object's BTF.
MIRRORS: dict[str, type[ctypes.Structure]] = {
    "sfc_endpoint": EndpointEntry,
    "sfc_ep_ref": EpRef,
    "sfc_flow_key": FlowKey,
    "sfc_flow_key4": FlowKey4,
    "sfc_session": SessionValue,
    "sfc_flow_cache_state": FlowCacheState,
    "sfc_flow_cache4_entry": FlowCache4Entry,
    "sfc_flow_cache_entry": FlowCacheEntry,
    "sfc_ep_counters": EpCounters,
    "sfc_link_stats": LinkStats,
    "sfc_tunnel_cfg": TunnelConfig,
}


# The C type of each node-wide map's value, for messages about a layout change.
MAP_VALUE_TYPES: dict[str, str] = {
    MAP_ENDPOINTS: "struct sfc_endpoint",
    MAP_IFSLOTS: "__u32",
    MAP_EPIDS: "__u32",
    MAP_IFCACHE: "__u32",
    MAP_SESSIONS: "struct sfc_session",
    MAP_SESSIONS4: "struct sfc_session",
    MAP_FLOW_CACHE4: "struct sfc_flow_cache4_entry",
    MAP_FLOW_CACHE: "struct sfc_flow_cache_entry",
    MAP_MAGLEV: "inner map id",
    MAP_EP_COUNTERS: "struct sfc_ep_counters",
    MAP_LINK_STATS: "struct sfc_link_stats",
    MAP_TUNNEL: "struct sfc_tunnel_cfg",
    MAP_CLINKS: "__u32",
    MAP_NODES: "__u32",
}

# (key size, value size) of each node-wide map, checked when adopting pinned maps.
MAP_LAYOUTS: dict[str, tuple[int, int]] = {
    MAP_ENDPOINTS: (4, ctypes.sizeof(EndpointEntry)),
    MAP_IFSLOTS: (4, 4),
    MAP_EPIDS: (ctypes.sizeof(EpRef), 4),
    MAP_IFCACHE: (4, 4),
    MAP_SESSIONS: (ctypes.sizeof(FlowKey), ctypes.sizeof(SessionValue)),
    MAP_SESSIONS4: (ctypes.sizeof(FlowKey4), ctypes.sizeof(SessionValue)),
    MAP_FLOW_CACHE4: (4, ctypes.sizeof(FlowCache4Entry)),
    MAP_FLOW_CACHE: (4, ctypes.sizeof(FlowCacheEntry)),
    MAP_MAGLEV: (4, 4),
    MAP_EP_COUNTERS: (4, ctypes.sizeof(EpCounters)),
    MAP_LINK_STATS: (4, ctypes.sizeof(LinkStats)),
    MAP_TUNNEL: (4, ctypes.sizeof(TunnelConfig)),
    MAP_CLINKS: (4, 4),
    MAP_NODES: (4, 4),
}
