"""Truncated and inconsistent frames are dropped and counted as MALFORMED, never redirected
and never recorded as sessions: short IPv4/IPv6 headers, bad versions, bad IHL, total length
shorter than the header, options running past the end, ports cut off, extension headers cut
off, ICMPv6/ND cut off, short ARP, a VLAN tag cut off. Minimal but valid frames still pass.
"""

from __future__ import annotations

import pytest

from sfc_k8s.dataplane import DropReason
from tests.bpf.conftest import Topology
from tests.bpf.harness import TC_ACT_REDIRECT, TC_ACT_SHOT
from tests.fixtures import frames as f

IP_OK = f.ipv4("10.0.0.1", "10.0.0.2", f.TCP, f.l4(1, 2))
IP6_OK = f.ipv6("fd00::1", "fd00::2", f.TCP, f.l4(1, 2))

MALFORMED = {
    # BPF_PROG_TEST_RUN itself refuses an IP frame shorter than the IP header, so those cut
    # headers come behind a VLAN tag (the program parses them the same way).
    "ipv4-cut": f.eth(f.ETH_VLAN, f.vlan(5, f.ETH_IP, IP_OK[:10])),
    "ipv4-empty": f.eth(f.ETH_VLAN, f.vlan(5, f.ETH_IP, b"")),
    "ipv4-bad-version": f.eth(
        f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", f.TCP, f.l4(1, 2), version=6)
    ),
    "ipv4-ihl-4": f.eth(f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", f.TCP, f.l4(1, 2), ihl=4)),
    "ipv4-ihl-past-end": f.eth(f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", f.ICMP, b"", ihl=15)),
    "ipv4-total-length-short": f.eth(
        f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", f.TCP, f.l4(1, 2), total_length=12)
    ),
    "ipv4-options-past-end": f.eth(
        f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", f.UDP, b"", options=b"\x01" * 8)
    ),
    "ipv4-ports-cut": f.eth(f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", f.UDP, b"\x00\x01")),
    "ipv6-cut": f.eth(f.ETH_VLAN, f.vlan(5, f.ETH_IPV6, IP6_OK[:30])),
    "ipv6-bad-version": f.eth(
        f.ETH_IPV6, f.ipv6("fd00::1", "fd00::2", f.TCP, f.l4(1, 2), version=4)
    ),
    "ipv6-ports-cut": f.eth(f.ETH_IPV6, f.ipv6("fd00::1", "fd00::2", f.TCP, b"\x00")),
    "ipv6-ext-cut": f.eth(f.ETH_IPV6, f.ipv6("fd00::1", "fd00::2", f.HOPOPTS, b"")),
    "ipv6-ext-past-end": f.eth(
        f.ETH_IPV6, f.ipv6("fd00::1", "fd00::2", f.DSTOPTS, f.ext(f.TCP, length_units=4)[:8])
    ),
    "ipv6-frag-cut": f.eth(f.ETH_IPV6, f.ipv6("fd00::1", "fd00::2", f.FRAGMENT, b"\x06\x00")),
    "icmpv6-empty": f.eth(f.ETH_IPV6, f.ipv6("fd00::1", "fd00::2", f.ICMPV6, b"")),
    "nd-solicit-cut": f.eth(
        f.ETH_IPV6, f.ipv6("fd00::1", "ff02::1:ff00:2", f.ICMPV6, f.icmp6(135))
    ),
    "arp-cut": f.eth(f.ETH_ARP, f.arp(1, f.MAC_A, "10.0.0.1", f.MAC_B, "10.0.0.2")[:20]),
    "vlan-cut": f.eth(f.ETH_VLAN, b"\x00"),
    "vlan-inner-ip-cut": f.eth(f.ETH_VLAN, f.vlan(5, f.ETH_IP, IP_OK[:8])),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_frames_are_dropped_and_counted(t: Topology, name: str) -> None:
    before = t.h.drops("main")[DropReason.MALFORMED]
    v = t.h.run(t["a0"], MALFORMED[name])
    assert (v.retval, v.target) == (TC_ACT_SHOT, None)
    assert t.h.drops("main")[DropReason.MALFORMED] == before + 1
    assert t.h.dp.status("main").sessions == 0


@pytest.mark.parametrize(
    "frame",
    [
        f.eth(0x9000, b""),  # a bare Ethernet header: keyed on the MAC pair
        f.eth(f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", 99, b"")),  # IP with no payload
        f.eth(f.ETH_IPV6, f.ipv6("fd00::1", "fd00::2", f.NONE, b"")),  # no next header
    ],
)
def test_minimal_valid_frames_pass(t: Topology, frame: bytes) -> None:
    assert t.h.run(t["a0"], frame).retval == TC_ACT_REDIRECT
