"""The per-CPU flow caches in front of the session tables (bpf/lib/flow_cache.h), for IPv4 L4
flows (compact key, ``sfc_fcache4_v1``) and for the rest (full key, ``sfc_fcache_v1``: IPv6
UDP and IPv4 ICMP here):

- a new flow's session is recorded in its table; its next packet, found there, fills this
  CPU's entry at the index Python computes with that very session, and the packets after it
  count as hits there;
- flows that share an entry (found with the Python index) each keep their own endpoint, when
  their keys differ in one port or in one address only;
- the table stays the authority: a change made there reaches a cached flow within
  FLOW_CACHE_REFRESH packets;
- an entry whose far endpoint was removed is not followed (the flow is re-picked), and one
  recorded for another near endpoint sends the packet to the table.

The program runs on the CPU of the calling thread, so each test pins itself to one CPU.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sfc_k8s.dataplane import Side, maps, structs
from sfc_k8s.dataplane import _libbpf as bpf
from sfc_k8s.dataplane.flow import flow_cache_index, make_key
from sfc_k8s.dataplane.structs import FlowCache4Entry, FlowCacheEntry, FlowKey, FlowKey4, FlowKind
from tests.bpf.conftest import Topology
from tests.bpf.harness import TC_ACT_REDIRECT
from tests.fixtures import frames as f

Entry = FlowCache4Entry | FlowCacheEntry


@dataclass(frozen=True)
class Family:
    """One kind of flow: how to build its packets and keys, and which cache holds it."""

    name: str
    client: str
    server: str
    proto: int

    @property
    def compact(self) -> bool:
        return self.name == "ipv4-udp"

    def frame(self, sport: int, src: str | None = None) -> bytes:
        src = src or self.client
        if self.proto == f.ICMP:  # no ports: ``sport`` is the echo identifier, not in the key
            return f.eth(f.ETH_IP, f.ipv4(src, self.server, f.ICMP, f.icmp_echo(ident=sport)))
        if ":" in self.server:
            return f.eth(f.ETH_IPV6, f.ipv6(src, self.server, self.proto, f.l4(sport, 53)))
        return f.eth(f.ETH_IP, f.ipv4(src, self.server, self.proto, f.l4(sport, 53)))

    def key(self, link_id: int, sport: int, src: str | None = None) -> FlowKey | FlowKey4:
        src = src or self.client
        if self.proto == f.ICMP:
            key = make_key(link_id, FlowKind.L3_V4, src, self.server, proto=f.ICMP)
        else:
            kind = FlowKind.L4_V6 if ":" in self.server else FlowKind.L4_V4
            key = make_key(link_id, kind, src, self.server, proto=self.proto, sport=sport, dport=53)
        return FlowKey4.of(key) if self.compact else key

    def full_key(self, link_id: int, sport: int, src: str | None = None) -> FlowKey:
        key = self.key(link_id, sport, src)
        return key.flow_key() if isinstance(key, FlowKey4) else key

    def address(self, n: int) -> str:
        """The ``n``-th of a range of client addresses (0 <= n < 65,536): they differ in one
        32-bit word, the third for IPv6 (an odd word of the full key, the last for IPv4)."""
        if ":" in self.client:
            return str(ipaddress.ip_address("fd00::5:0") + (n << 32))
        return str(ipaddress.ip_address("10.5.0.0") + n)

    def cache(self) -> tuple[str, type[Entry]]:
        if self.compact:
            return structs.MAP_FLOW_CACHE4, FlowCache4Entry
        return structs.MAP_FLOW_CACHE, FlowCacheEntry

    def table(self) -> str:
        return structs.MAP_SESSIONS4 if self.compact else structs.MAP_SESSIONS


IPV4 = Family("ipv4-udp", "10.4.0.1", "10.4.0.128", f.UDP)
# The server's third address word sits mid-range, so clients land on either side of it.
IPV6 = Family("ipv6-udp", "fd00::4:1", "fd00::80:4:80", f.UDP)
ICMP = Family("ipv4-icmp", "10.4.0.1", "10.4.0.128", f.ICMP)
L4 = [pytest.param(IPV4, id="ipv4-udp"), pytest.param(IPV6, id="ipv6-udp")]
ALL = [*L4, pytest.param(ICMP, id="ipv4-icmp")]


@pytest.fixture
def cpu(t: Topology) -> Iterator[int]:
    """Run the test on one CPU; the number of that CPU."""
    before = os.sched_getaffinity(0)
    one = min(before)
    os.sched_setaffinity(0, {one})
    try:
        yield one
    finally:
        os.sched_setaffinity(0, before)


def entry(t: Topology, fam: Family, key: FlowKey | FlowKey4, cpu: int) -> Entry:
    name, entry_type = fam.cache()
    per_cpu = maps.percpu(t.h.dp.map_fd(name), ctypes.c_uint32(flow_cache_index(key)), entry_type)
    assert per_cpu is not None
    return per_cpu[cpu]


def set_far_end(t: Topology, fam: Family, flow: tuple[int, str | None], ifname: str) -> None:
    """Point the table's session of ``flow`` (source port and address) at side-B endpoint
    ``ifname``, the caches left as they are."""
    link_id = t.h.link_id("main")
    session = t.h.session(fam.full_key(link_id, *flow))
    assert session is not None
    session.slot[1] = t.h.slot(ifname)
    session.gen[1] = t.h.slots()[session.slot[1]].gen
    bpf.map_update(t.h.dp.map_fd(fam.table()), fam.key(link_id, *flow), session)


def other_b(t: Topology, than: str | None) -> str:
    return next(t[r] for r in ("b0", "b1", "b2") if t[r] != than)


@pytest.mark.parametrize("fam", ALL)
def test_an_established_flow_fills_this_cpus_entry_and_then_hits_it(
    t: Topology, cpu: int, fam: Family
) -> None:
    link_id = t.h.link_id("main")
    key = fam.key(link_id, 5000)
    assert t.h.run(t["a0"], fam.frame(5000)).retval == TC_ACT_REDIRECT  # new: the table only
    assert entry(t, fam, key, cpu).key.link_id == 0
    assert t.h.run(t["a0"], fam.frame(5000)).retval == TC_ACT_REDIRECT  # found in the table
    cached = entry(t, fam, key, cpu)
    assert bytes(cached.key) == bytes(key)
    table = t.h.session(fam.full_key(link_id, 5000))
    assert table is not None and bytes(cached.state.session) == bytes(table)
    assert cached.state.hits == 0
    for _ in range(5):
        t.h.run(t["a0"], fam.frame(5000))
    assert entry(t, fam, key, cpu).state.hits == 5


Flow = tuple[int, str]  # (source port, source address)


def sharing_pair(t: Topology, fam: Family, vary: str) -> tuple[Flow, Flow]:
    """Two flows with the same cache index whose keys differ in one field only: ``vary`` is
    ``port_lo`` or the key field (``addr_lo``, ``addr_hi``) the source address lands in."""
    rng = random.Random(f"{fam.name} {vary}")
    link_id = t.h.link_id("main")
    server = bytes(fam.key(link_id, 6000, fam.server).addr_lo)  # both ends the server's
    seen: dict[int, Flow] = {}
    for _ in range(100_000):
        n = rng.getrandbits(16)
        flow = (n | 1024, fam.client) if vary == "port_lo" else (6000, fam.address(n))
        key = fam.key(link_id, *flow)
        if vary != "port_lo" and bytes(getattr(key, vary)) == server:
            continue  # the source landed in the other address field
        other = seen.setdefault(flow_cache_index(key), flow)
        if other != flow:
            return other, flow
    raise AssertionError("no two flows share an entry")


@pytest.mark.parametrize("vary", ["port_lo", "addr_lo", "addr_hi"])
@pytest.mark.parametrize("fam", L4)
def test_flows_sharing_an_entry_keep_their_own_endpoints(
    t: Topology, cpu: int, fam: Family, vary: str
) -> None:
    first, second = sharing_pair(t, fam, vary)
    expected = {flow: t.h.run(t["a0"], fam.frame(*flow)).target for flow in (first, second)}
    if expected[first] == expected[second]:  # make them differ, so that a mix-up shows
        expected[first] = other_b(t, expected[first])
        set_far_end(t, fam, first, expected[first])
        t.h.clear_flow_cache()
    assert None not in expected.values()
    for _ in range(4):  # alternating: each packet takes the entry from the other flow
        for flow in (first, second):
            assert t.h.run(t["a0"], fam.frame(*flow)).target == expected[flow]
    key = fam.key(t.h.link_id("main"), *second)
    assert bytes(entry(t, fam, key, cpu).key) == bytes(key)


@pytest.mark.parametrize("fam", ALL)
def test_a_change_in_the_table_reaches_a_cached_flow(t: Topology, cpu: int, fam: Family) -> None:
    before = t.h.run(t["a0"], fam.frame(5100)).target
    assert t.h.run(t["a0"], fam.frame(5100)).target == before  # now cached
    other = other_b(t, before)
    set_far_end(t, fam, (5100, None), other)
    targets = [
        t.h.run(t["a0"], fam.frame(5100)).target for _ in range(2 * structs.FLOW_CACHE_REFRESH)
    ]
    switch = targets.index(other)
    assert 0 < switch <= structs.FLOW_CACHE_REFRESH
    assert set(targets[:switch]) == {before} and set(targets[switch:]) == {other}


@pytest.mark.parametrize("fam", L4)
def test_a_cached_flow_whose_far_endpoint_left_is_repicked(
    t: Topology, cpu: int, fam: Family
) -> None:
    key = fam.key(t.h.link_id("main"), 5200)
    far = t.h.run(t["a0"], fam.frame(5200)).target
    assert far is not None and t.h.run(t["a0"], fam.frame(5200)).target == far
    assert entry(t, fam, key, cpu).state.session.slot[1] == t.h.slot(far)
    t.h.dp.remove_endpoint("main", Side.B, far)
    try:
        again = t.h.run(t["a0"], fam.frame(5200)).target
        assert again not in (None, far)
        assert t.h.run(t["a0"], fam.frame(5200)).target == again
        assert entry(t, fam, key, cpu).state.session.slot[1] == t.h.slot(again)
    finally:
        t.h.dp.add_endpoint("main", Side.B, far)


@pytest.mark.parametrize("fam", L4)
def test_an_entry_for_another_near_endpoint_asks_the_table(
    t: Topology, cpu: int, fam: Family
) -> None:
    link_id = t.h.link_id("main")
    key = fam.key(link_id, 5300)
    far = t.h.run(t["a0"], fam.frame(5300)).target
    assert t.h.run(t["a0"], fam.frame(5300)).target == far  # cached for a0
    assert entry(t, fam, key, cpu).state.session.slot[0] == t.h.slot(t["a0"])
    assert t.h.run(t["a1"], fam.frame(5300)).target == far
    session = t.h.session(fam.full_key(link_id, 5300))
    assert session is not None and session.slot[0] == t.h.slot(t["a1"])  # the near end moved
    assert entry(t, fam, key, cpu).state.session.slot[0] == t.h.slot(t["a1"])  # the entry too
