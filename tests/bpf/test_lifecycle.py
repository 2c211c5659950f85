"""Endpoint lifecycle as the program sees it (BPF_PROG_TEST_RUN, map state):

- a far side with no active endpoint drops new flows with NO_ENDPOINT;
- drain: the endpoint keeps its sessions and gets no new flow; activate undoes it;
  ``endpoints(link)`` shows the states (the same list as ``status(link).endpoints``);
- many successive table changes (each rewrites the idle copy and flips to it) keep new
  flows exactly where the Python Maglev model puts them;
- remove: its sessions are purged, its flows move, other flows stay where they were;
- the ifindex cache: each endpoint's entry names its slot and is cleared on removal; an empty,
  stale or colliding entry (another endpoint's slot) only sends the lookup to the hash index:
  the packet is still taken as coming from its own interface;
- a session naming an endpoint of another generation is not followed (re-picked);
- with the session table lost, adding an endpoint moves only the flows the new one takes;
- deleting a link purges its sessions, unpins its attachments, frees its slots and leaves
  other links alone; its interfaces then pass traffic untouched;
- a full side refuses one more endpoint (CapacityError) and nothing changes (the limit is
  lowered here; ``test_capacity.py`` does it at the real 1,024, about 20 s of attachments).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator

import pytest

from sfc_k8s.dataplane import CapacityError, DropReason, Side, maps, structs
from sfc_k8s.dataplane import _libbpf as bpf
from sfc_k8s.dataplane.flow import make_key
from sfc_k8s.dataplane.structs import FlowKind
from tests.bpf.conftest import Topology
from tests.bpf.harness import TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC, Harness
from tests.fixtures import frames as f
from tests.nettools import Janitor, unique

FLOWS = 200


def flow_frame(i: int, *, reply: bool = False) -> bytes:
    src, dst, sport, dport = "10.2.0.1", "10.2.0.2", 10000 + i, 80
    if reply:
        src, dst, sport, dport = dst, src, dport, sport
    return f.eth(f.ETH_IP, f.ipv4(src, dst, f.TCP, f.l4(sport, dport)))


def flow_key(h: Harness, link: str, i: int) -> structs.FlowKey:
    return make_key(
        h.link_id(link),
        FlowKind.L4_V4,
        "10.2.0.1",
        "10.2.0.2",
        proto=f.TCP,
        sport=10000 + i,
        dport=80,
    )


class Life:
    """A private link ``life``: side A one interface, side B four, on fresh veths."""

    def __init__(self, t: Topology, janitor: Janitor) -> None:
        self.h = t.h
        self.a = janitor.veth(unique("la"), unique("pa"), up=False)[0]
        self.b = [janitor.veth(unique(f"lb{i}"), unique(f"pb{i}"), up=False)[0] for i in range(4)]
        self.h.dp.create_link("life", side_a=[self.a], side_b=self.b[:3])

    def send(self, count: int = FLOWS) -> list[str | None]:
        return [self.h.run(self.a, flow_frame(i)).target for i in range(count)]


@pytest.fixture
def life(t: Topology, janitor: Janitor) -> Iterator[Life]:
    life = Life(t, janitor)
    try:
        yield life
    finally:
        if "life" in t.h.dp.links():
            t.h.dp.delete_link("life")


def test_no_active_endpoint_drops_new_flows(life: Life) -> None:
    before = life.h.drops("life")[DropReason.NO_ENDPOINT]
    established = life.send(1)[0]
    for name in life.b[:3]:
        life.h.dp.drain_endpoint("life", Side.B, name)
    assert life.h.run(life.a, flow_frame(0)).target == established  # sessions live on
    v = life.h.run(life.a, flow_frame(1))
    assert (v.retval, v.target) == (TC_ACT_SHOT, None)
    assert life.h.drops("life")[DropReason.NO_ENDPOINT] == before + 1


def test_drain_keeps_sessions_and_takes_no_new_flow(life: Life) -> None:
    first = life.send(FLOWS // 2)
    victim = first[0]
    assert victim is not None
    life.h.dp.drain_endpoint("life", Side.B, victim)
    assert life.send(FLOWS // 2) == first  # established flows unchanged
    new = [life.h.run(life.a, flow_frame(i)).target for i in range(FLOWS // 2, FLOWS)]
    assert victim not in new
    assert {e.ifname: e.state.value for e in life.h.dp.status("life").side(Side.B)}[
        victim
    ] == "draining"
    assert life.h.dp.endpoints("life") == life.h.dp.status("life").endpoints
    life.h.dp.activate_endpoint("life", Side.B, victim)
    life.h.clear_sessions()
    assert victim in life.send()


def test_successive_table_changes_follow_the_model(life: Life) -> None:
    names = life.h.active("life", Side.B)
    for round_ in range(5):  # drain/activate each in turn: ten flips of the table copies
        victim = names[round_ % len(names)]
        for change in (life.h.dp.drain_endpoint, life.h.dp.activate_endpoint):
            change("life", Side.B, victim)
            active = life.h.active("life", Side.B)
            life.h.clear_sessions()
            for i in range(20):
                n = 1000 * round_ + i
                expected = life.h.predict(flow_key(life.h, "life", n), active)
                assert life.h.run(life.a, flow_frame(n)).target == expected


def test_remove_purges_its_sessions_and_moves_only_its_flows(life: Life) -> None:
    before = life.send()
    victim = before[0]
    assert victim is not None
    life.h.dp.remove_endpoint("life", Side.B, victim)
    for i, target in enumerate(before):
        session = life.h.session(flow_key(life.h, "life", i))
        assert session is not None if target != victim else session is None
    after = life.send()
    for old, new in zip(before, after, strict=True):
        assert new != victim
        if old != victim:
            assert new == old
    assert victim not in [e.ifname for e in life.h.dp.status("life").endpoints]


def cache_entry(h: Harness, ifname: str) -> int:
    fd = h.dp.map_fd(structs.MAP_IFCACHE)
    key = ctypes.c_uint32(h.ifindex(ifname) & (structs.IFCACHE_SIZE - 1))
    value = maps.lookup(fd, key, ctypes.c_uint32)
    assert value is not None
    return int(value.value)


def set_cache_entry(h: Harness, ifname: str, slot: int) -> None:
    key = ctypes.c_uint32(h.ifindex(ifname) & (structs.IFCACHE_SIZE - 1))
    bpf.map_update(h.dp.map_fd(structs.MAP_IFCACHE), key, ctypes.c_uint32(slot))


def test_ifindex_cache_is_only_a_shortcut(life: Life) -> None:
    for name in [life.a, *life.b[:3]]:
        assert cache_entry(life.h, name) == life.h.slot(name)
    before = life.send(20)
    replies = [life.h.run(t, flow_frame(i, reply=True)).target for i, t in enumerate(before)]
    assert replies == [life.a] * 20
    for wrong in (0, life.h.slot(life.b[0]), structs.MAX_IFACES - 1):  # empty, colliding, stale
        set_cache_entry(life.h, life.a, wrong)
        assert life.send(20) == before
    set_cache_entry(life.h, life.a, life.h.slot(life.a))
    victim = life.b[2]
    slot = life.h.slot(victim)
    life.h.dp.remove_endpoint("life", Side.B, victim)
    assert cache_entry(life.h, victim) != slot


def test_session_of_another_generation_is_not_followed(life: Life) -> None:
    target = life.send(1)[0]
    key = flow_key(life.h, "life", 0)
    session = life.h.session(key)
    assert session is not None and target is not None
    honest_gen = session.gen[1]
    other = next(b for b in life.b[:3] if b != target)
    session.slot[1] = life.h.slot(other)
    session.gen[1] = honest_gen ^ 0x5A5A  # as if "other" had been removed and added again
    life.h.put_session(key, session)
    v = life.h.run(life.a, flow_frame(0))
    assert (v.retval, v.target) == (TC_ACT_REDIRECT, target)  # re-picked by Maglev
    repaired = life.h.session(key)
    assert repaired is not None and repaired.slot[1] == life.h.slot(target)


def test_lost_session_table_keeps_flows_on_their_endpoints(life: Life) -> None:
    before = life.send()
    life.h.dp.add_endpoint("life", Side.B, life.b[3])
    life.h.clear_sessions()
    after = life.send()
    moved = [(o, n) for o, n in zip(before, after, strict=True) if o != n]
    # Maglev moves (almost) only what the new endpoint takes: a slot or two may shuffle.
    assert sum(1 for _, n in moved if n != life.b[3]) <= 0.03 * FLOWS
    assert 0.1 * FLOWS < len(moved) < 0.4 * FLOWS  # about a quarter


def test_full_side_refuses_another_endpoint(life: Life, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(structs, "MAX_ENDPOINTS_PER_SIDE", 3)
    before = life.h.dp.status("life")
    with pytest.raises(CapacityError, match="already has 3 endpoints"):
        life.h.dp.add_endpoint("life", Side.B, life.b[3])
    with pytest.raises(CapacityError, match="more than 3"):
        life.h.dp.create_link("full", side_b=life.b)
    assert life.h.dp.status("life") == before
    assert life.h.dp.links() == ["life", "main", "other"]


def test_delete_link_purges_its_sessions_and_pins(life: Life) -> None:
    link_id = life.h.link_id("life")
    life.send(20)
    main_before = life.h.dp.status("main")
    folder = life.h.dp.pins.link_dir("life")
    assert len([p for p in os.listdir(folder) if p.startswith("tcx_")]) == 4
    life.h.dp.delete_link("life")
    assert [k for k, _ in life.h.session_entries() if k.link_id == link_id] == []
    assert not os.path.exists(folder)
    assert all(e.link_id != link_id for e in life.h.slots().values())
    assert life.h.dp.status("main") == main_before  # the other links are untouched
    v = life.h.run(life.a, flow_frame(0))
    assert (v.retval, v.target) == (TC_ACT_UNSPEC, None)  # no longer in any link
