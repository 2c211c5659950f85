"""The plugin's lean JSON codec and netlink encoding (in-process, no root).

Behaviours covered:
- ``coldstart``'s JSON codec decodes and encodes like ``json`` (property-based), refuses invalid
  documents, trailing data and NaN with ``ValueError``;
- netlink attributes are padded to 4 bytes; a veth creation request nests the peer's name, netns
  fd, MAC and MTU where the kernel expects them; MAC strings convert both ways;
- an L3 interface's IPv6 link-local address is the modified EUI-64 of its MAC;
"""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfc_k8s.cni import netlink as nl
from sfc_k8s.cni.plugin import link_local
from sfc_k8s.coldstart import json_dumps, json_loads

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_json_codec_matches_json(value: object) -> None:
    text = json_dumps(value)
    assert json.loads(text) == value
    assert json_loads(text) == value
    assert json_loads(json.dumps(value, indent=2)) == value
    assert text.isascii()


@pytest.mark.parametrize("bad", ["", " ", "{", "[1,]", '{"a": 1} x', "NaN", "[Infinity]", "'a'"])
def test_json_codec_refuses_invalid(bad: str) -> None:
    with pytest.raises(ValueError):
        json_loads(bad)


def test_json_codec_refuses_unencodable() -> None:
    with pytest.raises(TypeError):
        json_dumps({"a": object()})


def test_attr_padding() -> None:
    assert nl.attr(3, b"abc") == b"\x07\x00\x03\x00abc\x00"
    assert nl.attr_str(3, "eth1") == b"\x09\x00\x03\x00eth1\x00\x00\x00\x00"
    assert len(nl.attr_u32(4, 1500)) == 8


def test_veth_request_layout() -> None:
    kind, flags, payload, what = nl.new_veth(
        "sfchost", "eth1", peer_netns_fd=7, peer_mac=nl.mac_bytes("02:00:00:00:00:01"), mtu=1400
    )
    assert kind == nl.RTM_NEWLINK
    assert flags & nl.NLM_F_CREATE and flags & nl.NLM_F_EXCL
    assert "sfchost" in what
    top = nl.parse_attrs(payload, 16)
    assert top[nl.IFLA_IFNAME] == b"sfchost\0"
    assert top[nl.IFLA_MTU] == (1400).to_bytes(4, "little")
    info = nl.parse_attrs(top[nl.IFLA_LINKINFO], 0)
    assert info[nl.IFLA_INFO_KIND] == b"veth\0"
    peer = nl.parse_attrs(nl.parse_attrs(info[nl.IFLA_INFO_DATA], 0)[nl.VETH_INFO_PEER], 16)
    assert peer[nl.IFLA_IFNAME] == b"eth1\0"
    assert peer[nl.IFLA_NET_NS_FD] == (7).to_bytes(4, "little")
    assert peer[nl.IFLA_ADDRESS] == bytes([2, 0, 0, 0, 0, 1])


def test_mac_conversion() -> None:
    assert nl.mac_str(nl.mac_bytes("0A:bc:00:11:22:33")) == "0a:bc:00:11:22:33"
    for bad in ("0a:bc:00:11:22", "0a-bc-00-11-22-33", "0a:bc:00:11:22:3", "0a:bc:00:11:22:3g"):
        with pytest.raises(ValueError):
            nl.mac_bytes(bad)


@pytest.mark.parametrize(
    ("mac", "address"),
    [
        ("00:00:5e:00:53:01", "fe80::200:5eff:fe00:5301"),  # RFC 7042's documentation MAC
        ("02:aa:bb:cc:dd:ee", "fe80::aa:bbff:fecc:ddee"),  # locally administered: U/L bit off
    ],
)
def test_link_local_is_the_modified_eui64_of_the_mac(mac: str, address: str) -> None:
    packed = link_local(nl.mac_bytes(mac))
    assert socket.inet_ntop(socket.AF_INET6, packed) == address
