"""Flow keys and the flow hash, built in Python exactly as the eBPF program builds them.

The program picks a new flow's endpoint at Maglev slot ``flow_hash(key, link_cid=...) %
MAGLEV_SIZE``; this
module lets the tests (and anyone debugging) predict that choice and decode session keys.
Mirrors bpf/lib/flow_key.h and bpf/lib/hash.h.
"""

from __future__ import annotations

import ipaddress
import struct

from sfc_k8s.dataplane.structs import FLOW_CACHE_BITS, FlowKey, FlowKey4, FlowKind

HASH_SEED = 0x5FC0C0DE
_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1
_GOLDEN64 = 0x9E3779B97F4A7C15


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def hash_words(words: tuple[int, ...]) -> int:
    """MurmurHash3 x86 32-bit over 32-bit words (bpf/lib/hash.h: sfc_hash_words)."""
    h = HASH_SEED
    for w in words:
        k = (w * 0xCC9E2D51) & _M32
        k = (_rotl(k, 15) * 0x1B873593) & _M32
        h = (_rotl(h ^ k, 13) * 5 + 0xE6546B64) & _M32
    h ^= len(words) * 4
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def flow_hash(key: FlowKey, *, link_cid: int | None = None) -> int:
    """The Maglev hash of ``key`` (bpf/lib/maglev.h: sfc_maglev_hash): its words with the
    node-local link id replaced by the link's cluster-wide id ``link_cid`` (when given)."""
    raw = bytes(key)
    words = struct.unpack(f"<{len(raw) // 4}I", raw)
    if link_cid is not None:
        words = (link_cid, *words[1:])
    return hash_words(words)


def flow_cache_index(key: FlowKey | FlowKey4) -> int:
    """The flow cache entry of ``key`` (bpf/lib/flow_cache.h: sfc_flow_cache_index)."""
    raw = bytes(key)
    w: tuple[int, ...] = struct.unpack(f"<{len(raw) // 4}I", raw)
    h = 0
    for i in range(0, len(w) - 1, 2):
        h = ((h ^ (w[i] << 32 | w[i + 1])) * _GOLDEN64) & _M64
    if len(w) & 1:
        h = ((h ^ w[-1]) * _GOLDEN64) & _M64
    return h >> (64 - FLOW_CACHE_BITS)


def _addr16(addr: str | bytes) -> bytes:
    if isinstance(addr, bytes):
        return addr.ljust(16, b"\0")
    if ":" in addr and len(addr) == 17 and addr.count(":") == 5:  # a MAC address
        return bytes.fromhex(addr.replace(":", "")).ljust(16, b"\0")
    return ipaddress.ip_address(addr).packed.ljust(16, b"\0")


def make_key(
    link_id: int,
    kind: FlowKind,
    src: str | bytes,
    dst: str | bytes,
    *,
    proto: int = 0,
    sport: int = 0,
    dport: int = 0,
    vlan: int = 0,
) -> FlowKey:
    """The normalised key of a packet from ``src`` to ``dst`` (sfc_flow_set_ends)."""
    s, d = _addr16(src), _addr16(dst)
    sp, dp = struct.pack("!H", sport), struct.pack("!H", dport)
    # The program compares 32-bit words and ports as loaded, in host (little-endian) order.
    s_order = (struct.unpack("<4I", s), struct.unpack("<H", sp)[0])
    d_order = (struct.unpack("<4I", d), struct.unpack("<H", dp)[0])
    if s_order > d_order:
        s, d, sp, dp = d, s, dp, sp
    key = FlowKey()
    key.link_id = link_id
    key.kind = kind
    key.proto = proto
    key.vlan = vlan
    key.port_lo = struct.unpack("<H", sp)[0]
    key.port_hi = struct.unpack("<H", dp)[0]
    key.addr_lo[:] = list(s)
    key.addr_hi[:] = list(d)
    return key
