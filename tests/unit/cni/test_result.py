"""Result handling: reading IPAM results of any version and writing ours per cniVersion.

Behaviours covered:
- ``IpConfig.from_result`` reads 0.3.x/0.4.0 results (with ``version``) and 1.x ones alike, and
  refuses malformed IPs, routes and DNS with the caller's code and a message naming the field
  (its path in the result), the value and the expected form;
- ``format_result`` writes ``version`` in IPs only before 1.0.0, interface ``mtu`` and the extra
  route fields only in 1.1.0, attaches IPs to the pod interface, and always has ``dns``;
- the error object carries the version, code, message and optional details.
"""

from __future__ import annotations

import pytest

from sfc_k8s.cni.errors import CniError, Code
from sfc_k8s.cni.result import IpConfig, format_result, parse_cidr

LEGACY = {
    "cniVersion": "0.4.0",
    "ips": [{"version": "4", "address": "10.0.0.2/24", "gateway": "10.0.0.1"}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "10.9.0.0/16"}],
    "dns": {"nameservers": ["10.0.0.53"]},
}
CURRENT = {
    "cniVersion": "1.1.0",
    "ips": [{"address": "fd00::2/64", "gateway": "fd00::1"}, {"address": "10.0.0.2/24"}],
    "routes": [{"dst": "::/0", "priority": 10, "table": 100}],
}
IFACES: list[dict[str, object]] = [
    {"name": "sfcabc", "mac": "02:00:00:00:00:01", "mtu": 1500},
    {"name": "eth1", "mac": "02:00:00:00:00:02", "mtu": 1500, "sandbox": "/run/netns/p"},
]


def test_reads_legacy_and_current_results() -> None:
    legacy = IpConfig.from_result(LEGACY, where="", code=Code.IPAM_FAILURE)
    assert legacy.ips == [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]
    assert legacy.routes[1] == {"dst": "10.9.0.0/16"}
    assert legacy.dns == {"nameservers": ["10.0.0.53"]}
    current = IpConfig.from_result(CURRENT, where="", code=Code.IPAM_FAILURE)
    assert [ip["address"] for ip in current.ips] == ["fd00::2/64", "10.0.0.2/24"]


CIDR = 'expected an IP address with a prefix length, like "10.0.0.2/24" or "fd00::2/64"'
IP = 'expected an IP address, like "10.0.0.1" or "fd00::1"'


@pytest.mark.parametrize(
    ("bad", "msg"),
    [
        ({"ips": "10.0.0.2/24"}, 'X: ips="10.0.0.2/24": expected a list of {"address", "gateway"}'
         " objects"),
        ({"ips": ["10.0.0.2/24"]}, 'X: ips[0]="10.0.0.2/24": expected an object with an "address"'),
        ({"ips": [{"gateway": "10.0.0.1"}]}, f"X: ips[0].address is missing: {CIDR}"),
        ({"ips": [{"address": "10.0.0.2"}]}, f'X: ips[0].address="10.0.0.2": {CIDR}'),
        ({"ips": [{"address": 7}]}, f"X: ips[0].address=7: {CIDR}"),
        ({"ips": [{"address": "10.0.0.300/24"}]}, f'X: ips[0].address="10.0.0.300/24": {CIDR}'),
        ({"ips": [{"address": "10.0.0.2/24", "gateway": "nope"}]},
         f'X: ips[0].gateway="nope": {IP}'),
        ({"routes": {}}, 'X: routes={}: expected a list of {"dst", "gw"} objects'),
        ({"routes": [None]}, 'X: routes[0]=null: expected an object with a "dst"'),
        ({"routes": [{"gw": "10.0.0.1"}]}, f"X: routes[0].dst is missing: {CIDR}"),
        ({"routes": [{"dst": "0.0.0.0/0"}, {"dst": "0.0.0.0/0", "gw": "x"}]},
         f'X: routes[1].gw="x": {IP}'),
        ({"dns": []}, "X: dns=[]: expected an object"),
    ],
)  # fmt: skip
def test_refuses_malformed_results(bad: dict[str, object], msg: str) -> None:
    for code in (Code.IPAM_FAILURE, Code.INVALID_CONFIG):  # an IPAM result, a prevResult
        with pytest.raises(CniError) as info:
            IpConfig.from_result(bad, where="X: ", code=code)
        assert (info.value.code, info.value.msg) == (code, msg)


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_legacy_format(version: str) -> None:
    out = format_result(
        version,
        IFACES,
        IpConfig.from_result(LEGACY, where="", code=Code.IPAM_FAILURE),
        pod_interface=1,
    )
    assert out["cniVersion"] == version
    assert out["interfaces"] == [
        {"name": "sfcabc", "mac": "02:00:00:00:00:01"},
        {"name": "eth1", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/p"},
    ]
    assert out["ips"] == [
        {"version": "4", "address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 1}
    ]
    assert out["routes"] == LEGACY["routes"]
    assert out["dns"] == LEGACY["dns"]


def test_1_0_format_drops_1_1_fields() -> None:
    out = format_result(
        "1.0.0",
        IFACES,
        IpConfig.from_result(CURRENT, where="", code=Code.IPAM_FAILURE),
        pod_interface=1,
    )
    assert out["ips"] == [
        {"address": "fd00::2/64", "gateway": "fd00::1", "interface": 1},
        {"address": "10.0.0.2/24", "interface": 1},
    ]
    assert out["routes"] == [{"dst": "::/0"}]
    assert all("mtu" not in iface for iface in out["interfaces"])  # type: ignore[attr-defined]


def test_1_1_format_keeps_them() -> None:
    out = format_result(
        "1.1.0",
        IFACES,
        IpConfig.from_result(CURRENT, where="", code=Code.IPAM_FAILURE),
        pod_interface=1,
    )
    assert out["routes"] == [{"dst": "::/0", "priority": 10, "table": 100}]
    assert out["interfaces"] == IFACES


def test_l2_result_has_no_ips() -> None:
    out = format_result("1.0.0", IFACES, None, pod_interface=1)
    assert "ips" not in out and "routes" not in out
    assert out["dns"] == {}


def test_parse_cidr() -> None:
    assert parse_cidr("10.1.2.3/8") == (2, bytes([10, 1, 2, 3]), 8)
    assert parse_cidr("fd00::1/128")[2] == 128
    for bad in ("10.1.2.3", "10.1.2.3/33", "fd00::1/129", "10.1.2.3/x", "host/24"):
        with pytest.raises(ValueError):
            parse_cidr(bad)


def test_error_object() -> None:
    err = CniError(Code.INVALID_CONFIG, "mtu=1 must be ...", "details here")
    assert err.to_dict("0.4.0") == {
        "cniVersion": "0.4.0",
        "code": 7,
        "msg": "mtu=1 must be ...",
        "details": "details here",
    }
    assert "details" not in CniError(Code.IO_FAILURE, "x").to_dict("1.0.0")
