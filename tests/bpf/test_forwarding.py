"""BPF_PROG_TEST_RUN on crafted frames: what the program decides for each kind of traffic.

Covers: interfaces in no link pass (TC_ACT_UNSPEC: the next program, or the stack, decides);
IPv4 TCP/UDP/SCTP keyed on the 5-tuple, the new flow going where Maglev (computed in Python)
says and its replies coming back to the sender; ICMP on (addresses, protocol); ARP on the IP
pair (request and reply share it); IPv6 L4, ICMPv6, neighbour discovery (solicitation and
advertisement share the pair); IPv4 options;
IPv4 and IPv6 fragments (no ports); IPv6 extension headers (hop-by-hop, routing, destination
options, AH, too many); 802.1Q and 802.1ad tags (key from the inner headers, VLAN id kept);
non-IP frames on the MAC pair; ICMP and ICMPv6 errors keyed on the packet they quote (so they
follow its flow), or as plain ICMP when the quote is too short; a flow re-entering from
another near-side replica; two links never sharing sessions; IPv4 TCP/UDP/SCTP sessions kept
in the compact table and every other kind in the general one, both counted and listed.
"""

from __future__ import annotations

import pytest

from sfc_k8s.dataplane import DropReason, Side, maps, structs
from sfc_k8s.dataplane.flow import make_key
from sfc_k8s.dataplane.structs import FlowKind
from tests.bpf.conftest import Topology
from tests.bpf.harness import TC_ACT_REDIRECT, TC_ACT_UNSPEC
from tests.fixtures import frames as f

B_SIDE = ("b0", "b1", "b2")


def b_names(t: Topology) -> list[str]:
    return [t[r] for r in B_SIDE]


def test_interface_in_no_link_passes(t: Topology) -> None:
    frame = f.eth(f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", f.TCP, f.l4(1000, 80)))
    v = t.h.run(t["s0"], frame)
    assert (v.retval, v.target) == (TC_ACT_UNSPEC, None)
    assert t.h.dp.status("main").sessions == 0


@pytest.mark.parametrize("proto", [f.TCP, f.UDP, f.SCTP])
def test_ipv4_l4_flow_and_reply(t: Topology, proto: int) -> None:
    link_id = t.h.link_id("main")
    out = f.eth(f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", proto, f.l4(40000, 80)))
    key = make_key(
        link_id, FlowKind.L4_V4, "10.0.0.1", "10.0.0.2", proto=proto, sport=40000, dport=80
    )
    expected = t.h.predict(key, sorted(b_names(t)))

    v = t.h.run(t["a0"], out)
    assert (v.retval, v.target) == (TC_ACT_REDIRECT, expected)
    assert t.h.session_names(key) == (t["a0"], expected)

    back = f.eth(
        f.ETH_IP, f.ipv4("10.0.0.2", "10.0.0.1", proto, f.l4(80, 40000)), src=f.MAC_B, dst=f.MAC_A
    )
    v = t.h.run(expected, back)
    assert (v.retval, v.target) == (TC_ACT_REDIRECT, t["a0"])
    # Later packets of the flow follow the session.
    assert t.h.run(t["a0"], out).target == expected
    assert t.h.dp.status("main").sessions == 1


def test_icmp_keyed_on_addresses_and_protocol(t: Topology) -> None:
    key = make_key(t.h.link_id("main"), FlowKind.L3_V4, "10.0.0.1", "10.0.0.2", proto=f.ICMP)
    v1 = t.h.run(
        t["a0"], f.eth(f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", f.ICMP, f.icmp_echo(seq=1)))
    )
    v2 = t.h.run(
        t["a0"], f.eth(f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", f.ICMP, f.icmp_echo(ident=9)))
    )
    assert v1.retval == v2.retval == TC_ACT_REDIRECT
    assert v1.target == v2.target == t.h.predict(key, sorted(b_names(t)))
    assert t.h.session(key) is not None


def test_arp_request_and_reply_share_the_ip_pair(t: Topology) -> None:
    request = f.eth(
        f.ETH_ARP,
        f.arp(1, f.MAC_A, "10.0.0.1", "00:00:00:00:00:00", "10.0.0.2"),
        dst="ff:ff:ff:ff:ff:ff",
    )
    v = t.h.run(t["a1"], request)
    assert v.retval == TC_ACT_REDIRECT
    key = make_key(t.h.link_id("main"), FlowKind.ARP, "10.0.0.2", "10.0.0.1")
    assert t.h.session_names(key) == (t["a1"], v.target)
    reply = f.eth(
        f.ETH_ARP, f.arp(2, f.MAC_B, "10.0.0.2", f.MAC_A, "10.0.0.1"), src=f.MAC_B, dst=f.MAC_A
    )
    assert t.h.run(v.target, reply).target == t["a1"]


def test_non_ethernet_arp_falls_back_to_the_mac_pair(t: Topology) -> None:
    odd = f.eth(f.ETH_ARP, b"\x00\x06" + f.arp(1, f.MAC_A, "10.0.0.1", f.MAC_B, "10.0.0.2")[2:])
    assert t.h.run(t["a0"], odd).retval == TC_ACT_REDIRECT
    key = make_key(t.h.link_id("main"), FlowKind.L2, f.MAC_A, f.MAC_B)
    assert t.h.session(key) is not None


def test_ipv6_tcp_and_icmpv6(t: Topology) -> None:
    link_id = t.h.link_id("main")
    tcp = f.eth(f.ETH_IPV6, f.ipv6("fd00::1", "fd00::2", f.TCP, f.l4(5555, 443)))
    v = t.h.run(t["a0"], tcp)
    key = make_key(
        link_id, FlowKind.L4_V6, "fd00::1", "fd00::2", proto=f.TCP, sport=5555, dport=443
    )
    assert (v.retval, v.target) == (TC_ACT_REDIRECT, t.h.predict(key, sorted(b_names(t))))
    echo = f.eth(f.ETH_IPV6, f.ipv6("fd00::1", "fd00::2", f.ICMPV6, f.icmp6(128)))
    assert t.h.run(t["a0"], echo).retval == TC_ACT_REDIRECT
    assert t.h.session(make_key(link_id, FlowKind.L3_V6, "fd00::1", "fd00::2", proto=f.ICMPV6))


def test_neighbour_solicitation_and_advert_share_the_pair(t: Topology) -> None:
    solicit = f.eth(
        f.ETH_IPV6,
        f.ipv6("fd00::1", f.solicited_node("fd00::2"), f.ICMPV6, f.nd_solicit("fd00::2")),
        dst="33:33:ff:00:00:02",
    )
    v = t.h.run(t["a0"], solicit)
    assert v.retval == TC_ACT_REDIRECT
    key = make_key(t.h.link_id("main"), FlowKind.ND, "fd00::1", "fd00::2")
    assert t.h.session_names(key) == (t["a0"], v.target)
    advert = f.eth(f.ETH_IPV6, f.ipv6("fd00::2", "fd00::1", f.ICMPV6, f.nd_advert("fd00::2")))
    assert t.h.run(v.target, advert).target == t["a0"]


def test_ipv4_options_are_skipped(t: Topology) -> None:
    frame = f.eth(
        f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", f.UDP, f.l4(7, 9), options=b"\x94\x04\0\0" * 3)
    )
    assert t.h.run(t["a0"], frame).retval == TC_ACT_REDIRECT
    key = make_key(
        t.h.link_id("main"), FlowKind.L4_V4, "10.0.0.1", "10.0.0.2", proto=f.UDP, sport=7, dport=9
    )
    assert t.h.session(key) is not None


def test_ipv4_fragments_share_the_address_key(t: Topology) -> None:
    first = f.eth(f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", f.UDP, f.l4(7, 9), more_fragments=True))
    later = f.eth(f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", f.UDP, b"y" * 24, frag_offset=3))
    v1, v2 = t.h.run(t["a0"], first), t.h.run(t["a0"], later)
    assert v1.retval == v2.retval == TC_ACT_REDIRECT
    assert v1.target == v2.target
    key = make_key(t.h.link_id("main"), FlowKind.L3_V4, "10.0.0.1", "10.0.0.2", proto=f.UDP)
    assert t.h.session(key) is not None
    assert t.h.dp.status("main").sessions == 1


@pytest.mark.parametrize(
    ("chain", "kind", "ports"),
    [
        ([f.HOPOPTS], FlowKind.L4_V6, True),
        ([f.HOPOPTS, f.ROUTING, f.DSTOPTS], FlowKind.L4_V6, True),
        ([f.AH], FlowKind.L4_V6, True),
        ([f.FRAGMENT], FlowKind.L3_V6, False),
        ([f.DSTOPTS, f.FRAGMENT], FlowKind.L3_V6, False),
    ],
)
def test_ipv6_extension_headers(t: Topology, chain: list[int], kind: FlowKind, ports: bool) -> None:
    payload = f.l4(1234, 53)
    nexthdr = f.UDP
    for header in reversed(chain):
        if header == f.FRAGMENT:
            payload = f.frag6(nexthdr, offset=0, more=True) + payload
        elif header == f.AH:
            payload = f.ah(nexthdr) + payload
        else:
            payload = f.ext(nexthdr, length_units=1) + payload
        nexthdr = header
    frame = f.eth(f.ETH_IPV6, f.ipv6("fd00::1", "fd00::2", nexthdr, payload))
    assert t.h.run(t["a0"], frame).retval == TC_ACT_REDIRECT
    key = make_key(
        t.h.link_id("main"), kind, "fd00::1", "fd00::2", proto=f.UDP,
        sport=1234 if ports else 0, dport=53 if ports else 0,
    )  # fmt: skip
    assert t.h.session(key) is not None


def test_too_many_ipv6_extension_headers_use_the_address_key(t: Topology) -> None:
    payload = f.l4(1, 2)
    nexthdr = f.UDP
    for _ in range(7):
        payload = f.ext(nexthdr) + payload
        nexthdr = f.DSTOPTS
    frame = f.eth(f.ETH_IPV6, f.ipv6("fd00::1", "fd00::2", nexthdr, payload))
    assert t.h.run(t["a0"], frame).retval == TC_ACT_REDIRECT
    key = make_key(t.h.link_id("main"), FlowKind.L3_V6, "fd00::1", "fd00::2", proto=f.DSTOPTS)
    assert t.h.session(key) is not None


@pytest.mark.parametrize("outer", [f.ETH_VLAN, f.ETH_QINQ])
def test_vlan_tags_key_on_inner_headers_and_vlan_id(t: Topology, outer: int) -> None:
    inner = f.ipv4("10.0.0.1", "10.0.0.2", f.TCP, f.l4(1000, 22))
    body = (
        f.vlan(100, f.ETH_IP, inner)
        if outer == f.ETH_VLAN
        else f.vlan(100, f.ETH_VLAN, f.vlan(7, f.ETH_IP, inner))
    )
    assert t.h.run(t["a0"], f.eth(outer, body)).retval == TC_ACT_REDIRECT
    key = make_key(
        t.h.link_id("main"),
        FlowKind.L4_V4,
        "10.0.0.1",
        "10.0.0.2",
        proto=f.TCP,
        sport=1000,
        dport=22,
        vlan=100,
    )
    assert t.h.session(key) is not None
    # The same flow untagged is another flow.
    assert t.h.run(t["a0"], f.eth(f.ETH_IP, inner)).retval == TC_ACT_REDIRECT
    assert t.h.dp.status("main").sessions == 2


def test_non_ip_frames_use_the_mac_pair(t: Topology) -> None:
    frame = f.eth(0x88B5, b"local experimental ethertype....")
    v = t.h.run(t["a0"], frame)
    assert v.retval == TC_ACT_REDIRECT
    key = make_key(t.h.link_id("main"), FlowKind.L2, f.MAC_A, f.MAC_B)
    assert t.h.session_names(key) == (t["a0"], v.target)
    back = f.eth(0x88B5, b"reply" * 8, src=f.MAC_B, dst=f.MAC_A)
    assert t.h.run(v.target, back).target == t["a0"]


def test_flow_entering_from_another_replica_moves_the_near_end(t: Topology) -> None:
    out = f.eth(f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", f.TCP, f.l4(2000, 80)))
    far = t.h.run(t["a0"], out).target
    assert t.h.run(t["a1"], out).target == far  # the far end stays
    back = f.eth(f.ETH_IP, f.ipv4("10.0.0.2", "10.0.0.1", f.TCP, f.l4(80, 2000)))
    assert far is not None
    assert t.h.run(far, back).target == t["a1"]  # replies follow the path taken now


def test_two_links_never_share_sessions(t: Topology) -> None:
    frame = f.eth(f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", f.TCP, f.l4(3000, 80)))
    v_main = t.h.run(t["a0"], frame)
    v_other = t.h.run(t["c0"], frame)
    assert v_main.target in b_names(t)
    assert (v_other.retval, v_other.target) == (TC_ACT_REDIRECT, t["d0"])
    assert t.h.dp.status("main").sessions == 1
    assert t.h.dp.status("other").sessions == 1
    assert {s.name: s.sessions for s in t.h.dp.statuses()} == {"main": 1, "other": 1}
    assert t.h.drops("other")[DropReason.MALFORMED] == 0


def test_side_b_packet_goes_to_side_a(t: Topology) -> None:
    frame = f.eth(f.ETH_IP, f.ipv4("10.1.0.1", "10.1.0.2", f.UDP, f.l4(1, 2)))
    v = t.h.run(t["b2"], frame)
    key = make_key(
        t.h.link_id("main"), FlowKind.L4_V4, "10.1.0.1", "10.1.0.2", proto=f.UDP, sport=1, dport=2
    )
    assert (v.retval, v.target) == (TC_ACT_REDIRECT, t.h.predict(key, sorted([t["a0"], t["a1"]])))
    assert t.h.active("main", Side.A) == sorted([t["a0"], t["a1"]])


def test_icmp_errors_follow_the_flow_they_quote(t: Topology) -> None:
    link_id = t.h.link_id("main")
    out = f.ipv4("10.0.0.1", "10.0.0.2", f.TCP, f.l4(40000, 80))
    far = t.h.run(t["a1"], f.eth(f.ETH_IP, out)).target
    assert far is not None
    # A router beyond side B says the flow's packets are too big (fragmentation needed).
    error = f.ipv4("10.0.9.9", "10.0.0.1", f.ICMP, f.icmp_error(3, 4, out[:28]))
    v = t.h.run(far, f.eth(f.ETH_IP, error))
    assert (v.retval, v.target) == (TC_ACT_REDIRECT, t["a1"])
    assert t.h.dp.status("main").sessions == 1
    # Too short a quote: keyed as plain ICMP between the router and the host.
    cut = f.ipv4("10.0.9.9", "10.0.0.1", f.ICMP, f.icmp_error(3, 4, out[:12]))
    assert t.h.run(far, f.eth(f.ETH_IP, cut)).retval == TC_ACT_REDIRECT
    assert t.h.session(make_key(link_id, FlowKind.L3_V4, "10.0.9.9", "10.0.0.1", proto=f.ICMP))


def test_icmpv6_packet_too_big_follows_the_flow(t: Topology) -> None:
    out = f.ipv6("fd00::1", "fd00::2", f.UDP, f.l4(5353, 53))
    far = t.h.run(t["a1"], f.eth(f.ETH_IPV6, out)).target
    assert far is not None
    error = f.ipv6("fd00::99", "fd00::1", f.ICMPV6, f.icmp_error(2, 0, out[:48]))
    v = t.h.run(far, f.eth(f.ETH_IPV6, error))
    assert (v.retval, v.target) == (TC_ACT_REDIRECT, t["a1"])
    assert t.h.dp.status("main").sessions == 1


def test_ipv4_l4_sessions_use_the_compact_table(t: Topology) -> None:
    link_id = t.h.link_id("main")
    udp = f.eth(f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", f.UDP, f.l4(7000, 53)))
    icmp = f.eth(f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", f.ICMP, f.icmp_echo()))
    tcp6 = f.eth(f.ETH_IPV6, f.ipv6("fd00::1", "fd00::2", f.TCP, f.l4(5555, 443)))
    for frame in (udp, icmp, tcp6):
        assert t.h.run(t["a0"], frame).retval == TC_ACT_REDIRECT
    udp_key = make_key(
        link_id, FlowKind.L4_V4, "10.0.0.1", "10.0.0.2", proto=f.UDP, sport=7000, dport=53
    )
    fd4 = t.h.dp.map_fd(structs.MAP_SESSIONS4)
    compact = [k for k, _ in maps.walk(fd4, structs.FlowKey4, structs.SessionValue)]
    assert [bytes(k.flow_key()) for k in compact] == [bytes(udp_key)]
    fd = t.h.dp.map_fd(structs.MAP_SESSIONS)
    general = [k for k, _ in maps.walk(fd, structs.FlowKey, structs.SessionValue)]
    assert sorted(FlowKind(k.kind).name for k in general) == ["L3_V4", "L4_V6"]
    assert t.h.dp.status("main").sessions == 3
    assert sorted(s.kind for s in t.h.dp.sessions("main")) == ["l3-v4", "l4-v4", "l4-v6"]
    listed = next(s for s in t.h.dp.sessions("main") if s.kind == "l4-v4")
    assert (listed.addr_lo, listed.port_lo, listed.addr_hi, listed.port_hi) == (
        "10.0.0.1",
        7000,
        "10.0.0.2",
        53,
    )
    assert listed.a_ifname == t["a0"] and listed.b_ifname in b_names(t)
