"""Frame builders for the BPF tests: Ethernet, 802.1Q, ARP, IPv4 (options, fragments), IPv6
(extension headers), TCP/UDP/SCTP/ICMP/ICMPv6, each a few lines of ``struct``.

Checksums are left zero: the program never looks at them.
"""

from __future__ import annotations

import ipaddress
import struct

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
ETH_IP, ETH_IPV6, ETH_ARP, ETH_VLAN, ETH_QINQ = 0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8
TCP, UDP, ICMP, SCTP, ICMPV6 = 6, 17, 1, 132, 58
HOPOPTS, ROUTING, FRAGMENT, DSTOPTS, AH, NONE = 0, 43, 44, 60, 51, 59


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def eth(ethertype: int, payload: bytes, *, src: str = MAC_A, dst: str = MAC_B) -> bytes:
    return mac(dst) + mac(src) + struct.pack("!H", ethertype) + payload


def vlan(vid: int, ethertype: int, payload: bytes, *, prio: int = 0) -> bytes:
    """An 802.1Q tag followed by the inner ethertype (put after the MACs by ``eth``)."""
    return struct.pack("!HH", prio << 13 | vid, ethertype) + payload


def l4(sport: int, dport: int, body: bytes = b"x" * 16) -> bytes:
    """The first bytes of a TCP, UDP or SCTP header: ports, then filler."""
    return struct.pack("!HH", sport, dport) + b"\0" * 16 + body


def icmp_echo(ident: int = 1, seq: int = 1) -> bytes:
    return struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"ping" * 4


def ipv4(
    src: str,
    dst: str,
    proto: int,
    payload: bytes,
    *,
    options: bytes = b"",
    frag_offset: int = 0,
    more_fragments: bool = False,
    ihl: int | None = None,
    version: int = 4,
    total_length: int | None = None,
) -> bytes:
    options += b"\0" * (-len(options) % 4)
    hl = ihl if ihl is not None else 5 + len(options) // 4
    length = total_length if total_length is not None else 20 + len(options) + len(payload)
    flags = (0x2000 if more_fragments else 0) | frag_offset
    header = struct.pack(
        "!BBHHHBBH4s4s",
        version << 4 | hl,
        0,
        length,
        0x1234,
        flags,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header + options + payload


def ext(nexthdr: int, length_units: int = 0) -> bytes:
    """A hop-by-hop/routing/destination-options header of (length_units + 1) * 8 bytes."""
    return (
        struct.pack("!BB", nexthdr, length_units) + b"\x01\x04\0\0\0\0" + b"\0" * 8 * length_units
    )


def ah(nexthdr: int) -> bytes:
    """An authentication header with a 12-byte ICV: (4 + 2) * 4 = 24 bytes."""
    return struct.pack("!BBHII", nexthdr, 4, 0, 0x100, 1) + b"\0" * 12


def frag6(nexthdr: int, offset: int = 0, more: bool = False) -> bytes:
    return struct.pack("!BBHI", nexthdr, 0, offset << 3 | int(more), 0xABCD)


def ipv6(src: str, dst: str, nexthdr: int, payload: bytes, *, version: int = 6) -> bytes:
    return (
        struct.pack("!IHBB", version << 28, len(payload), nexthdr, 64)
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + payload
    )


def icmp6(icmp_type: int, body: bytes = b"\0" * 4) -> bytes:
    return struct.pack("!BBH", icmp_type, 0, 0) + body


def nd_solicit(target: str) -> bytes:
    return icmp6(135, b"\0" * 4 + ipaddress.IPv6Address(target).packed)


def nd_advert(target: str) -> bytes:
    return icmp6(136, struct.pack("!I", 0x60000000) + ipaddress.IPv6Address(target).packed)


def solicited_node(addr: str) -> str:
    low = ipaddress.IPv6Address(addr).packed[-3:]
    return str(ipaddress.IPv6Address(bytes.fromhex("ff0200000000000000000001ff") + low))


def arp(op: int, sha: str, spa: str, tha: str, tpa: str) -> bytes:
    return struct.pack(
        "!HHBBH6s4s6s4s",
        1,
        ETH_IP,
        6,
        4,
        op,
        mac(sha),
        ipaddress.IPv4Address(spa).packed,
        mac(tha),
        ipaddress.IPv4Address(tpa).packed,
    )


def icmp_error(icmp_type: int, code: int, quoted: bytes) -> bytes:
    """An ICMP (or ICMPv6) error quoting the start of the packet it is about."""
    return struct.pack("!BBHI", icmp_type, code, 0, 1400) + quoted
