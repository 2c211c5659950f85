"""The underlay's plan (``sfc_k8s.local.underlay``, pure parts).

Covers: node addresses in 172.18.0.0/16 from .2 on, each node's bridge port and pod CIDR; each
node routes every other node's pod CIDR via that node's address and never its own; node counts
and MTUs out of range are refused naming the flag, the value and the range.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sfc_k8s.local import underlay
from sfc_k8s.local.layout import Layout


def test_plan_gives_each_node_an_address_port_and_pod_cidr() -> None:
    links = underlay.plan(3)
    assert [(lk.node, lk.address, lk.port, lk.pod_cidr) for lk in links] == [
        ("node-1", "172.18.0.2", "node-1", "10.244.1.0/24"),
        ("node-2", "172.18.0.3", "node-2", "10.244.2.0/24"),
        ("node-3", "172.18.0.4", "node-3", "10.244.3.0/24"),
    ]
    record = underlay.record(Layout(Path("/tmp/x")), links, 1400)
    assert record["mtu"] == 1400 and record["bridge"] == underlay.BRIDGE
    assert record["nodes"] == {
        lk.node: {"address": lk.address, "interface": "eth0", "port": lk.port} for lk in links
    }


def test_each_node_routes_the_other_nodes_pod_cidrs() -> None:
    links = underlay.plan(3)
    assert underlay.routes(links, links[1]) == [
        ("10.244.1.0/24", "172.18.0.2"),
        ("10.244.3.0/24", "172.18.0.4"),
    ]
    assert underlay.routes(links[:1], links[0]) == []


@pytest.mark.parametrize(
    ("nodes", "mtu", "message"),
    [
        (0, 1500, "--nodes 0: expected a whole number from 1 to 200"),
        (201, 1500, "--nodes 201: expected a whole number from 1 to 200"),
        (2, 1279, "--mtu 1279: expected an MTU from 1280 to 9000 bytes"),
        (2, 9001, "--mtu 9001: expected an MTU from 1280 to 9000 bytes"),
    ],
)
def test_out_of_range_options_are_refused(nodes: int, mtu: int, message: str) -> None:
    with pytest.raises(underlay.UnderlayError) as err:
        underlay.check_options(nodes, mtu)
    assert str(err.value) == message
    underlay.check_options(200, 9000)
    underlay.check_options(1, 1280)
