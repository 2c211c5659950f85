"""Property-based fuzz (hypothesis) of the program with random and half-valid frames from
every kind of interface (both sides of two links, and one in no link):

- an interface in no link always gets TC_ACT_UNSPEC (pass through) and nothing is counted;
- otherwise the verdict is a drop or a redirect, and a redirect always lands on the far side
  of the link the frame entered (never the near side, never another link);
- every session recorded names endpoints of its own link, on the right sides.
"""

from __future__ import annotations

import errno
import struct

from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from sfc_k8s.dataplane import BpfError
from tests.bpf.conftest import Topology
from tests.bpf.harness import TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC
from tests.fixtures import frames as f

ROLES = ["a0", "a1", "b0", "b1", "b2", "c0", "d0", "s0"]
FAR = {
    "a0": ("b0", "b1", "b2"),
    "a1": ("b0", "b1", "b2"),
    "b0": ("a0", "a1"),
    "b1": ("a0", "a1"),
    "b2": ("a0", "a1"),
    "c0": ("d0",),
    "d0": ("c0",),
}
ETHERTYPES = [f.ETH_IP, f.ETH_IPV6, f.ETH_ARP, f.ETH_VLAN, f.ETH_QINQ, 0x88CC, 0x0000]
IP_PROTOS = [
    f.TCP,
    f.UDP,
    f.SCTP,
    f.ICMP,
    f.ICMPV6,
    f.HOPOPTS,
    f.ROUTING,
    f.FRAGMENT,
    f.DSTOPTS,
    f.AH,
    f.NONE,
    136,
]


@st.composite
def l3_payloads(draw: st.DrawFn) -> bytes:
    """An IPv4 or IPv6 header with random fields, a random protocol chain, maybe cut short."""
    tail = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        header = struct.pack(
            "!BBHHHBB",
            draw(st.integers(0, 255)),  # version and IHL, often wrong
            0,
            draw(st.integers(0, 0xFFFF)),
            0,
            draw(st.integers(0, 0xFFFF)),  # flags and fragment offset
            64,
            draw(st.sampled_from(IP_PROTOS)),
        ) + draw(st.binary(min_size=10, max_size=10))
    else:
        header = struct.pack(
            "!IHBB",
            draw(st.sampled_from([6 << 28, draw(st.integers(0, 0xFFFFFFFF))])),
            len(tail),
            draw(st.sampled_from(IP_PROTOS)),
            64,
        ) + draw(st.binary(min_size=32, max_size=32))
    frame = header + tail
    return frame[: draw(st.integers(0, len(frame)))]


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(min_size=14, max_size=160))
    body = draw(l3_payloads())
    for _ in range(draw(st.integers(0, 2))):
        body = f.vlan(draw(st.integers(0, 4095)), draw(st.sampled_from(ETHERTYPES)), body)
    return (
        f.mac("02:00:00:00:00:0b")
        + f.mac("02:00:00:00:00:0a")
        + struct.pack("!H", draw(st.sampled_from(ETHERTYPES)))
        + body
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(role=st.sampled_from(ROLES), frame=frames())
def test_no_frame_leaves_its_link(topo: Topology, role: str, frame: bytes) -> None:
    try:
        v = topo.h.run(topo[role], frame)
    except BpfError as err:
        # BPF_PROG_TEST_RUN refuses an IP frame shorter than the IP header; nothing else.
        ethertype = struct.unpack("!H", frame[12:14])[0]
        short = {f.ETH_IP: 20, f.ETH_IPV6: 40}.get(ethertype, 0) > len(frame) - 14
        assert err.errno == errno.EINVAL and short, err
        reject()
    if role == "s0":
        assert (v.retval, v.target) == (TC_ACT_UNSPEC, None)
        return
    assert v.retval in (TC_ACT_SHOT, TC_ACT_REDIRECT)
    if v.retval == TC_ACT_SHOT:
        assert v.target is None
    else:
        assert v.target in {topo[r] for r in FAR[role]}


def test_sessions_after_fuzz_stay_inside_their_links(topo: Topology) -> None:
    members: dict[tuple[int, int], set[int]] = {}
    for slot, e in topo.h.slots().items():
        members.setdefault((e.link_id, e.side), set()).add(slot)
    assert len(members) == 4
    for key, value in topo.h.session_entries():
        for side in (0, 1):
            assert value.slot[side] in members[(key.link_id, side)]
