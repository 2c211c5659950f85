"""The Multus annotation and result handling of the node runtime (pure functions, no root).

Covers: the networks annotation in its comma form (``name``, ``ns/name``, ``name@ifname``) and
JSON form (``interface``, ``mac``, ``ips``), errors that say what to fix (bad JSON, bad names,
interface names too long), the NetworkAttachmentDefinition config (missing or invalid
``spec.config``, the NAD name as the default network name), and network-status entries built
from 1.0.0 results (the pod-side interface's MAC and addresses only).
"""

from __future__ import annotations

import pytest

from sfc_k8s.local.node.cni import (
    Attachment,
    NetworkAttachmentError,
    NetworkSelection,
    network_status,
    parse_nad_config,
    parse_networks,
)


def test_comma_form() -> None:
    assert parse_networks(" a, other/b@eth2 ,c@net9", "ns1") == [
        NetworkSelection("a", "ns1"),
        NetworkSelection("b", "other", "eth2"),
        NetworkSelection("c", "ns1", "net9"),
    ]
    assert parse_networks("", "ns1") == []


def test_json_form() -> None:
    text = '[{"name": "a", "interface": "in0", "mac": "02:00:00:00:00:01", "ips": ["10.0.0.1/24"]}]'
    (sel,) = parse_networks(text, "ns1")
    assert (sel.name, sel.namespace, sel.interface) == ("a", "ns1", "in0")
    assert sel.mac == "02:00:00:00:00:01" and sel.ips == ("10.0.0.1/24",)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[{", "not valid JSON"),
        ('[{"namespace": "x"}]', "needs a string 'name'"),
        ("Bad_Name", "not a DNS name"),
        ("a@an-interface-name-too-long", "not a valid Linux interface name"),
    ],
)
def test_bad_annotations_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(NetworkAttachmentError, match=fragment):
        parse_networks(text, "ns1")


def test_nad_config() -> None:
    nad = {"metadata": {"name": "n1", "namespace": "x"}, "spec": {"config": '{"type": "ptp"}'}}
    assert parse_nad_config(nad) == {"type": "ptp", "name": "n1"}
    with pytest.raises(NetworkAttachmentError, match=r"has no spec\.config"):
        parse_nad_config({"metadata": {"name": "n1"}, "spec": {}})
    with pytest.raises(NetworkAttachmentError, match="not valid JSON"):
        parse_nad_config({"metadata": {"name": "n1"}, "spec": {"config": "{"}})
    with pytest.raises(NetworkAttachmentError, match="needs 'type'"):
        parse_nad_config({"metadata": {"name": "n1"}, "spec": {"config": "{}"}})


def test_network_status_from_a_result() -> None:
    result = {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "sfc0123456789ab", "mac": "aa:aa:aa:aa:aa:aa"},
            {"name": "eth1", "mac": "02:11:22:33:44:55", "sandbox": "/run/netns/p"},
        ],
        "ips": [{"address": "192.168.100.10/24", "interface": 1}],
    }
    att = Attachment(network="ns/net", ifname="eth1", config={}, result=result)
    assert network_status(att) == {
        "name": "ns/net",
        "interface": "eth1",
        "mac": "02:11:22:33:44:55",
        "ips": ["192.168.100.10"],
        "dns": {},
    }
