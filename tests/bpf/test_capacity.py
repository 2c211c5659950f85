"""The data plane at its real limits, not at lowered test constants.

Covers: one side of a link holds ``MAX_ENDPOINTS_PER_SIDE`` (1,024) endpoints, every one of them
in its Maglev table, and the 1,025th is refused with an error naming the side, the link and the
limit, leaving the link as it was; a node holds ``MAX_LINKS - 1`` (1,023) links, refuses the
next with an error naming the limit, and a deleted link's id serves the next one; a session
table far smaller than the live flows (LRU eviction, ``docs/dataplane.md``): the table never
holds more than its size, every flow still reaches the endpoint Maglev gives it (the
independent reference of ``tests/maglev_reference``), and once an endpoint drains, the flows
whose sessions were evicted leave it for the active ones while those whose sessions survived
stay.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
import subprocess
import time
from collections.abc import Callable

import pytest

from sfc_k8s.dataplane import CapacityError, Dataplane, Side, flow, structs
from sfc_k8s.dataplane import _libbpf as bpf
from sfc_k8s.dataplane.flow import make_key
from sfc_k8s.dataplane.structs import FlowKind
from tests import maglev_reference
from tests.bpf.harness import SKB_IFINDEX_OFFSET, TC_ACT_REDIRECT, Harness
from tests.fixtures import frames as f
from tests.nettools import Janitor, private_bpffs_root

pytestmark = pytest.mark.root


def _veths(janitor: Janitor, count: int) -> list[str]:
    """``count`` host veths (ends down, so that the kernel sends nothing into the link) whose
    peers share one namespace: deleting it removes every pair in one batch, where deleting the
    veths one by one costs a grace period each (about 20 s for a thousand)."""
    tag = secrets.token_hex(2)
    names = [f"sfcc{tag}{i:05d}" for i in range(count)]

    def gone() -> None:  # runs after the namespace's own undo (the janitor goes backwards)
        deadline = time.monotonic() + 30
        while os.path.exists(f"/sys/class/net/{names[-1]}") and time.monotonic() < deadline:
            time.sleep(0.05)

    janitor.add(gone)
    netns = janitor.netns("sfct-cap")
    script = "".join(f"link add {n} type veth peer name p{i} netns {netns}\n" for i, n in
                     enumerate(names))  # fmt: skip
    subprocess.run(["ip", "-batch", "-"], input=script, text=True, check=True)
    return names


@pytest.fixture
def fresh(janitor: Janitor) -> Callable[[int], Dataplane]:
    """Makes a data plane of its own (any session table size); the janitor destroys it after
    the interfaces the test made are gone (no program left to detach from them one by one)."""

    def make(size: int) -> Dataplane:
        root = private_bpffs_root()

        def destroy() -> None:
            dp.close()
            with Dataplane(root) as fresh_dp:
                fresh_dp.destroy()

        dp = Dataplane(root, session_table_size=size)
        janitor.add(destroy)
        return dp

    return make


def test_a_side_holds_1024_endpoints_and_refuses_the_1025th(
    janitor: Janitor, fresh: Callable[[int], Dataplane]
) -> None:
    limit = structs.MAX_ENDPOINTS_PER_SIDE
    assert limit == 1024
    dp = fresh(4096)
    client, *many = _veths(janitor, limit + 2)
    dp.create_link("wide", side_a=[client], side_b=many[:limit])  # 1,025 attaches: ~15 s
    status = dp.status("wide")
    assert len(status.side(Side.B)) == limit
    assert all(e.state.value == "active" for e in status.side(Side.B))

    with pytest.raises(CapacityError) as err:
        dp.add_endpoint("wide", Side.B, many[limit])
    assert str(err.value) == (
        f"side b of 'wide' already has {limit} endpoints, the most a side can have"
    )
    assert len(dp.status("wide").side(Side.B)) == limit  # nothing half-added
    assert many[limit] not in {e.ifname for e in dp.status("wide").side(Side.B)}

    # Every one of the 1,024 is in the table: 4,096 new flows reach nearly all of them (read
    # from the tx counters once at the end: a run each is 4,096 program runs, not more).
    ctx = bytearray(SKB_IFINDEX_OFFSET + 4)
    struct.pack_into("<I", ctx, SKB_IFINDEX_OFFSET, socket.if_nametoindex(client))
    for sport in range(1024, 1024 + 4 * limit):
        frame = f.eth(f.ETH_IP, f.ipv4("10.1.0.1", "10.1.0.2", f.UDP, f.l4(sport, 53)))
        assert bpf.prog_test_run(dp.program_fd, frame, ctx=bytes(ctx)).retval == TC_ACT_REDIRECT
    reached = [n for n in Harness(dp).tx_counts().values() if n]
    assert sum(reached) == 4 * limit
    assert len(reached) > 0.95 * limit  # 4 flows per endpoint: missing 5 % has odds below 1e-9


def test_a_node_holds_1023_links_and_refuses_the_next(fresh: Callable[[int], Dataplane]) -> None:
    limit = structs.MAX_LINKS - 1  # link id 0 means "no link" in the maps
    assert limit == 1023
    dp = fresh(1024)
    for i in range(limit):  # links with no endpoint: no attachment, ~25 s of pins and tables
        dp.create_link(f"l{i}")
    assert len(dp.links()) == limit
    assert len({dp.status(n).link_id for n in dp.links()}) == limit

    with pytest.raises(CapacityError) as err:
        dp.create_link("one-more")
    assert str(err.value) == f"the node has room for {limit} links"
    assert "one-more" not in dp.links()  # nothing half-created
    assert len(dp.links()) == limit

    freed = dp.status("l0").link_id  # a deleted link's id serves the next one
    dp.delete_link("l0")
    assert dp.create_link("one-more").link_id == freed


def test_a_session_table_smaller_than_the_live_flows(
    janitor: Janitor, fresh: Callable[[int], Dataplane]
) -> None:
    size = 256
    dp = fresh(size)
    h = Harness(dp)
    client, *servers = _veths(janitor, 4)
    dp.create_link("tight", side_a=[client], side_b=servers)
    link_id = dp.status("tight").link_id

    def key(sport: int) -> structs.FlowKey:
        return make_key(
            link_id, FlowKind.L4_V4, "10.2.0.1", "10.2.0.2", proto=f.UDP, sport=sport, dport=53
        )

    status = dp.status("tight")
    ids = {e.ifname: maglev_reference.name(status.cluster_id, e.id) for e in status.side(Side.B)}

    def expected(sport: int, active: list[str]) -> str:
        named = {ids[h]: h for h in active}
        slot = flow.flow_hash(key(sport), link_cid=status.cluster_id) % structs.MAGLEV_SIZE
        return named[maglev_reference.table(named, structs.MAGLEV_SIZE)[slot]]

    def send(sport: int) -> str:
        frame = f.eth(f.ETH_IP, f.ipv4("10.2.0.1", "10.2.0.2", f.UDP, f.l4(sport, 53)))
        verdict = h.run(client, frame)
        assert verdict.retval == TC_ACT_REDIRECT
        return str(verdict.target)

    flows = range(20000, 20000 + 4 * size)  # four times the table
    for sport in flows:
        assert send(sport) == expected(sport, servers), sport
    assert dp.status("tight").sessions <= size
    # Evicted or not, every flow comes back to its endpoint: Maglev gives the same pick.
    h.clear_flow_cache()
    for sport in flows:
        assert send(sport) == expected(sport, servers), sport
    assert len(h.session_entries()) <= size

    drained = servers[0]
    dp.drain_endpoint("tight", Side.B, drained)
    h.clear_flow_cache()
    active = servers[1:]
    kept = moved = 0
    for sport in flows:
        had = h.session_names(key(sport))  # (a, b) of its session, or None once evicted
        got = send(sport)
        if had is not None:
            assert got == had[1], sport  # a surviving session is followed, drained or not
            kept += had[1] == drained
        else:
            assert got == expected(sport, active), sport  # re-picked among the active ones
            moved += expected(sport, servers) == drained
    assert moved > 0, "no evicted flow of the drained endpoint: the case was not exercised"
    assert kept + moved > 0
