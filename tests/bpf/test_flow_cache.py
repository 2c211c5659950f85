"""The per-CPU flow cache in front of the IPv4 session table (bpf/lib/flow_cache.h):

- a new IPv4 L4 flow's session is recorded in the table; its next packet, found there, fills
  this CPU's entry at the index Python computes with that very session, and the packets
  after it count as hits there;
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
import os
import random
import socket
from collections.abc import Iterator

import pytest

from sfc_k8s.dataplane import Side, maps, structs
from sfc_k8s.dataplane import _libbpf as bpf
from sfc_k8s.dataplane.flow import flow_cache_index, make_key
from sfc_k8s.dataplane.structs import FlowCacheEntry, FlowKey4, FlowKind
from tests.bpf import frames as f
from tests.bpf.conftest import Topology
from tests.bpf.harness import TC_ACT_REDIRECT

CLIENT, SERVER = "10.4.0.1", "10.4.0.128"


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


def frame(sport: int, src: str = CLIENT) -> bytes:
    return f.eth(f.ETH_IP, f.ipv4(src, SERVER, f.UDP, f.l4(sport, 53)))


def key4(t: Topology, sport: int, src: str = CLIENT, *, link_id: int = 0) -> FlowKey4:
    link_id = link_id or t.h.link_id("main")
    key = make_key(link_id, FlowKind.L4_V4, src, SERVER, proto=f.UDP, sport=sport, dport=53)
    return FlowKey4.of(key)


def entry(t: Topology, k4: FlowKey4, cpu: int) -> FlowCacheEntry:
    fd = t.h.dp.map_fd(structs.MAP_FLOW_CACHE)
    per_cpu = maps.percpu(fd, ctypes.c_uint32(flow_cache_index(k4)), FlowCacheEntry)
    assert per_cpu is not None
    return per_cpu[cpu]


def test_an_established_flow_fills_this_cpus_entry_and_then_hits_it(t: Topology, cpu: int) -> None:
    k4 = key4(t, 5000)
    assert t.h.run(t["a0"], frame(5000)).retval == TC_ACT_REDIRECT  # new: the table only
    assert entry(t, k4, cpu).key.link_id == 0
    assert t.h.run(t["a0"], frame(5000)).retval == TC_ACT_REDIRECT  # found in the table
    cached = entry(t, k4, cpu)
    assert bytes(cached.key) == bytes(k4)
    table = t.h.session(k4.flow_key())
    assert table is not None and bytes(cached.session) == bytes(table)
    assert cached.hits == 0
    for _ in range(5):
        t.h.run(t["a0"], frame(5000))
    assert entry(t, k4, cpu).hits == 5


Flow = tuple[int, str]  # (source port, source address)


def sharing_pair(t: Topology, vary: str) -> tuple[Flow, Flow]:
    """Two flows with the same cache index whose keys differ in one field only: ``vary`` is
    ``port_lo`` or the key field (``addr_lo``, ``addr_hi``) the source address lands in."""
    rng = random.Random(vary)
    link_id = t.h.link_id("main")
    seen: dict[int, Flow] = {}
    for _ in range(100_000):
        n = rng.getrandbits(16)
        flow = (n | 1024, CLIENT) if vary == "port_lo" else (6000, f"10.5.{n >> 8}.{n & 255}")
        k4 = key4(t, *flow, link_id=link_id)
        if vary != "port_lo" and bytes(getattr(k4, vary)) == socket.inet_aton(SERVER):
            continue  # the source landed in the other address field
        other = seen.setdefault(flow_cache_index(k4), flow)
        if other != flow:
            return other, flow
    raise AssertionError("no two flows share an entry")


@pytest.mark.parametrize("vary", ["port_lo", "addr_lo", "addr_hi"])
def test_flows_sharing_an_entry_keep_their_own_endpoints(t: Topology, cpu: int, vary: str) -> None:
    first, second = sharing_pair(t, vary)
    expected = {flow: t.h.run(t["a0"], frame(*flow)).target for flow in (first, second)}
    if expected[first] == expected[second]:  # make them differ, so that a mix-up shows
        other = next(t[r] for r in ("b0", "b1", "b2") if t[r] != expected[first])
        set_far_end(t, key4(t, *first), other)
        t.h.clear_flow_cache()
        expected[first] = other
    assert None not in expected.values()
    for _ in range(4):  # alternating: each packet takes the entry from the other flow
        for flow in (first, second):
            assert t.h.run(t["a0"], frame(*flow)).target == expected[flow]
    assert bytes(entry(t, key4(t, *second), cpu).key) == bytes(key4(t, *second))


def set_far_end(t: Topology, k4: FlowKey4, ifname: str) -> None:
    """Point the table's session of ``k4`` at side-B endpoint ``ifname`` (the cache untouched)."""
    session = t.h.session(k4.flow_key())
    assert session is not None
    session.slot[1] = t.h.slot(ifname)
    session.gen[1] = t.h.slots()[session.slot[1]].gen
    bpf.map_update(t.h.dp.map_fd(structs.MAP_SESSIONS4), k4, session)


def test_a_change_in_the_table_reaches_a_cached_flow(t: Topology, cpu: int) -> None:
    k4 = key4(t, 5100)
    before = t.h.run(t["a0"], frame(5100)).target
    assert t.h.run(t["a0"], frame(5100)).target == before  # now cached
    other = next(t[r] for r in ("b0", "b1", "b2") if t[r] != before)
    set_far_end(t, k4, other)
    targets = [t.h.run(t["a0"], frame(5100)).target for _ in range(2 * structs.FLOW_CACHE_REFRESH)]
    switch = targets.index(other)
    assert 0 < switch <= structs.FLOW_CACHE_REFRESH
    assert set(targets[:switch]) == {before} and set(targets[switch:]) == {other}


def test_a_cached_flow_whose_far_endpoint_left_is_repicked(t: Topology, cpu: int) -> None:
    k4 = key4(t, 5200)
    far = t.h.run(t["a0"], frame(5200)).target
    assert far is not None and t.h.run(t["a0"], frame(5200)).target == far
    assert entry(t, k4, cpu).session.slot[1] == t.h.slot(far)
    t.h.dp.remove_endpoint("main", Side.B, far)
    try:
        again = t.h.run(t["a0"], frame(5200)).target
        assert again not in (None, far)
        assert t.h.run(t["a0"], frame(5200)).target == again
        assert entry(t, k4, cpu).session.slot[1] == t.h.slot(again)
    finally:
        t.h.dp.add_endpoint("main", Side.B, far)


def test_an_entry_for_another_near_endpoint_asks_the_table(t: Topology, cpu: int) -> None:
    k4 = key4(t, 5300)
    far = t.h.run(t["a0"], frame(5300)).target
    assert t.h.run(t["a0"], frame(5300)).target == far  # cached for a0
    assert entry(t, k4, cpu).session.slot[0] == t.h.slot(t["a0"])
    assert t.h.run(t["a1"], frame(5300)).target == far
    session = t.h.session(k4.flow_key())
    assert session is not None and session.slot[0] == t.h.slot(t["a1"])  # the near end moved
    assert entry(t, k4, cpu).session.slot[0] == t.h.slot(t["a1"])  # and the entry with it
