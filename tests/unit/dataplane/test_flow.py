"""Flow keys built in Python (mirroring bpf/lib/flow_key.h) and the flow hash (pure, no root):

- the key of a packet and of its reply are the same (direction normalisation), ports
  included, and for equal addresses the ports decide the order;
- the hash is MurmurHash3 x86_32 (checked against published test vectors with our seed
  replaced by the reference seeds) and spreads keys over the table;
- keys decode back to readable endpoints;
- an IPv4 L4 key and its compact form (the key of the IPv4 session table) convert both ways
  without loss, and other kinds have no compact form.
"""

from __future__ import annotations

import ctypes
import struct

import pytest

from sfc_k8s.dataplane import flow, structs
from sfc_k8s.dataplane.structs import MAGLEV_SIZE, FlowKey, FlowKey4, FlowKind


def test_reply_has_the_same_key() -> None:
    out = flow.make_key(1, FlowKind.L4_V4, "10.0.0.9", "10.0.0.1", proto=6, sport=5000, dport=80)
    back = flow.make_key(1, FlowKind.L4_V4, "10.0.0.1", "10.0.0.9", proto=6, sport=80, dport=5000)
    assert bytes(out) == bytes(back)
    assert out.endpoints() == ("10.0.0.1", 80, "10.0.0.9", 5000)


def test_equal_addresses_order_by_port() -> None:
    a = flow.make_key(1, FlowKind.L4_V6, "fd00::1", "fd00::1", proto=17, sport=9, dport=7)
    b = flow.make_key(1, FlowKind.L4_V6, "fd00::1", "fd00::1", proto=17, sport=7, dport=9)
    assert bytes(a) == bytes(b)


def test_mac_keys() -> None:
    key = flow.make_key(2, FlowKind.L2, "02:00:00:00:00:0b", "02:00:00:00:00:0a")
    assert key.endpoints()[0::2] == ("02:00:00:00:00:0a", "02:00:00:00:00:0b")


def murmur3_reference(data: bytes, seed: int) -> int:
    """Reference MurmurHash3_x86_32, with hash_words' seed swapped for ``seed``."""
    saved = flow.HASH_SEED
    flow.HASH_SEED = seed
    try:
        return flow.hash_words(struct.unpack(f"<{len(data) // 4}I", data))
    finally:
        flow.HASH_SEED = saved


def test_hash_is_murmur3() -> None:
    # Published vectors of MurmurHash3_x86_32 for 4- and 8-byte inputs.
    assert murmur3_reference(b"\0\0\0\0", 0) == 0x2362F9DE
    assert murmur3_reference(b"\x21\x43\x65\x87", 0) == 0xF55B516B
    assert murmur3_reference(b"\x21\x43\x65\x87", 0x5082EDEE) == 0x2362F9DE


def test_hash_spreads_keys() -> None:
    slots = {
        flow.flow_hash(
            flow.make_key(1, FlowKind.L4_V4, "10.0.0.1", "10.0.0.2", proto=6, sport=p, dport=80)
        )
        % MAGLEV_SIZE
        for p in range(1000, 3000)
    }
    assert len(slots) > 1950
    # Every field of the key feeds the hash: keys differing only in the link or the VLAN differ.
    base = flow.make_key(1, FlowKind.L4_V4, "10.0.0.1", "10.0.0.2", proto=6, sport=1, dport=80)
    other_link = flow.make_key(
        2, FlowKind.L4_V4, "10.0.0.1", "10.0.0.2", proto=6, sport=1, dport=80
    )
    tagged = FlowKey.from_buffer_copy(bytes(base))
    tagged.vlan = 7
    hashes = {flow.flow_hash(k) for k in (base, other_link, tagged, FlowKey())}
    assert len(hashes) == 4


def test_compact_ipv4_key_round_trip() -> None:
    key = flow.make_key(9, FlowKind.L4_V4, "10.1.2.3", "10.0.0.1", proto=132, sport=1, dport=2)
    key.vlan = 42
    name, k4 = structs.session_key(key)
    assert name == structs.MAP_SESSIONS4 and isinstance(k4, FlowKey4)
    assert ctypes.sizeof(k4) == 20
    assert (k4.link_id, k4.vlan, k4.proto, bytes(k4.addr_lo)) == (9, 42, 132, bytes([10, 0, 0, 1]))
    assert bytes(k4.flow_key()) == bytes(key)


def test_other_kinds_keep_the_full_key() -> None:
    key = flow.make_key(9, FlowKind.L3_V4, "10.1.2.3", "10.0.0.1", proto=1)
    assert structs.session_key(key) == (structs.MAP_SESSIONS, key)
    with pytest.raises(ValueError, match="compact key"):
        FlowKey4.of(key)


def test_maglev_hash_ignores_the_node_local_link_id() -> None:
    """Two nodes give one link different local ids: the hash takes the cluster id instead."""
    here = flow.make_key(3, FlowKind.L4_V4, "10.0.0.1", "10.0.0.2", proto=6, sport=1, dport=2)
    there = flow.make_key(7, FlowKind.L4_V4, "10.0.0.1", "10.0.0.2", proto=6, sport=1, dport=2)
    as_cid = flow.make_key(50, FlowKind.L4_V4, "10.0.0.1", "10.0.0.2", proto=6, sport=1, dport=2)
    assert flow.flow_hash(here, link_cid=50) == flow.flow_hash(there, link_cid=50)
    assert flow.flow_hash(here, link_cid=50) == flow.flow_hash(as_cid)
    assert flow.flow_hash(here, link_cid=50) != flow.flow_hash(here, link_cid=51)
