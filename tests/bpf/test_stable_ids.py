"""Stable identities: two nodes' data planes agree on every new flow's endpoint.

Two ``Dataplane``s under two bpffs roots stand for two nodes. They hold the same link (one
cluster id) with the same endpoints (the same stable ids), but everything node-local differs:
the node-local link id (one root holds another link first), the slots (endpoints added in
other orders), the interface names and ifindexes. BPF_PROG_TEST_RUN of the same flows on both
must pick the same endpoint id for every flow, and spread the flows over every endpoint.
Catches a Maglev table seeded or ordered by anything node-local, and a flow hash over the
node-local link id. Also: ids are assigned (lowest free) when not given, refused when taken or
out of range, and a cluster id is unique on a node.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from sfc_k8s.dataplane import (
    Dataplane,
    EndpointExists,
    EndpointSpec,
    InvalidValue,
    LinkExists,
    Side,
)
from sfc_k8s.dataplane import _libbpf as bpf
from tests.bpf.conftest import SESSIONS, private_root
from tests.bpf.harness import SKB_IFINDEX_OFFSET, TC_ACT_REDIRECT
from tests.fixtures import frames as f
from tests.nettools import Janitor, unique

CLUSTER_ID = 50
B_IDS = (11, 12, 13, 14)
FLOWS = 300


def _node(janitor: Janitor, tag: str) -> tuple[Dataplane, dict[str, str]]:
    root = private_root()
    ifs = {}
    for role in ("a", "f", *(f"b{i}" for i in B_IDS)):
        ifs[role] = janitor.veth(unique(f"s{tag}{role}"), unique(f"q{tag}{role}"), up=False)[0]
    dp = Dataplane(root, session_table_size=SESSIONS)

    def teardown() -> None:
        dp.close()
        with Dataplane(root) as fresh:
            fresh.destroy()

    janitor.add(teardown)
    return dp, ifs


@pytest.fixture
def nodes(
    janitor: Janitor,
) -> Iterator[tuple[Dataplane, dict[str, str], Dataplane, dict[str, str]]]:
    dp1, ifs1 = _node(janitor, "1")
    dp2, ifs2 = _node(janitor, "2")
    # Node 1: link "x" gets node-local id 1; ids given, B side in increasing order.
    dp1.create_link(
        "x",
        side_a=[EndpointSpec(ifname=ifs1["a"], id=1)],
        side_b=[EndpointSpec(ifname=ifs1[f"b{i}"], id=i) for i in B_IDS],
        cluster_id=CLUSTER_ID,
    )
    # Node 2: another link first (so "x" gets node-local id 2), B side added one by one in
    # another order (so other slots).
    dp2.create_link("filler", side_a=[ifs2["f"]])
    dp2.create_link("x", side_a=[EndpointSpec(ifname=ifs2["a"], id=1)], cluster_id=CLUSTER_ID)
    for i in reversed(B_IDS):
        dp2.add_endpoint("x", Side.B, ifs2[f"b{i}"], endpoint_id=i)
    yield dp1, ifs1, dp2, ifs2


def _tx_by_id(dp: Dataplane) -> dict[int, int]:
    return {e.id: e.counters.tx_packets for e in dp.status("x").side(Side.B)}


def _choose(dp: Dataplane, ifname: str, frame: bytes) -> int:
    """The id of the endpoint the program sends a new flow's packet to."""
    before = _tx_by_id(dp)
    ctx = bytearray(SKB_IFINDEX_OFFSET + 4)
    struct.pack_into("<I", ctx, SKB_IFINDEX_OFFSET, socket.if_nametoindex(ifname))
    result = bpf.prog_test_run(dp.program_fd, frame, ctx=bytes(ctx))
    assert result.retval == TC_ACT_REDIRECT
    moved = [i for i, n in _tx_by_id(dp).items() if n != before[i]]
    assert len(moved) == 1
    return moved[0]


def test_two_nodes_pick_the_same_endpoint_for_every_flow(
    nodes: tuple[Dataplane, dict[str, str], Dataplane, dict[str, str]],
) -> None:
    dp1, ifs1, dp2, ifs2 = nodes
    s1, s2 = dp1.status("x"), dp2.status("x")
    assert (s1.cluster_id, s2.cluster_id) == (CLUSTER_ID, CLUSTER_ID)
    assert s1.link_id != s2.link_id
    slots1 = {e.id: e.ifindex for e in s1.endpoints}
    slots2 = {e.id: e.ifindex for e in s2.endpoints}
    assert slots1 != slots2  # nothing node-local in common
    picks1, picks2 = [], []
    for n in range(FLOWS):
        frame = f.eth(
            f.ETH_IP, f.ipv4("10.1.0.1", f"10.2.{n // 250}.{n % 250 + 1}", f.TCP, f.l4(n + 1, 80))
        )
        picks1.append(_choose(dp1, ifs1["a"], frame))
        picks2.append(_choose(dp2, ifs2["a"], frame))
    assert picks1 == picks2
    assert set(picks1) == set(B_IDS)


def test_ids_are_assigned_checked_and_unique(janitor: Janitor) -> None:
    dp, ifs = _node(janitor, "3")
    dp.create_link("x", side_a=[ifs["a"]], side_b=[EndpointSpec(ifname=ifs["b11"], id=2)])
    dp.add_endpoint("x", Side.B, ifs["b12"])
    assert {e.ifname: e.id for e in dp.status("x").endpoints} == {
        ifs["a"]: 1,
        ifs["b11"]: 2,
        ifs["b12"]: 3,
    }
    with pytest.raises(EndpointExists, match="endpoint id 3 is already taken in 'x'"):
        dp.add_endpoint("x", Side.A, ifs["b13"], endpoint_id=3)
    with pytest.raises(InvalidValue, match="invalid endpoint id 5000: expected 1 to 4095"):
        dp.add_endpoint("x", Side.A, ifs["b13"], endpoint_id=5000)
    with pytest.raises(LinkExists, match="cluster id 1 is taken by 'x'"):
        dp.create_link("y", side_a=[ifs["b13"]], cluster_id=1)
    assert dp.create_link("y", side_a=[ifs["b13"]]).cluster_id == 2
