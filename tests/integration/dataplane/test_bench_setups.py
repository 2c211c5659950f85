"""The setups of ``bench/crossnode.py`` carry their traffic where the benchmark says.

Each cross-node setup is built as the benchmark builds it (two node namespaces on one underlay
veth) and pinged from its client pod; the replies prove the round trip, and node 1's interface
counters prove the path: the requests left through that setup's own VXLAN device (the plain
``vxp0``, flannel's ``flannel.1``, or the cross-connections' ``sfc-vxlan0``) and the replies
came back through it, while the other two devices carried less than that. A setup wired
through the wrong device (e.g. a route that sends the ceiling through another tunnel, or a
cross-connection that falls back to the stack) fails here instead of skewing the benchmark.
"""

from __future__ import annotations

import json

import pytest
from bench.crossnode import build_crossnode

from tests.nettools import Janitor, run

pytestmark = pytest.mark.root

PINGS = 20
DEVICE = {
    "vxlan": "vxp0",
    "bridge-vxlan": "flannel.1",
    "xn-1:1": "sfc-vxlan0",
    "xn-chain-1:4": "sfc-vxlan0",
}


def _packets(netns: str) -> dict[str, tuple[int, int]]:
    """(sent, received) packets of each tunnel device in ``netns``."""
    out = {}
    for device in set(DEVICE.values()):
        link = json.loads(run("ip", "-j", "-s", "link", "show", device, netns=netns).stdout)[0]
        stats = link["stats64"]
        out[device] = (stats["tx"]["packets"], stats["rx"]["packets"])
    return out


def test_each_crossnode_setup_crosses_its_own_tunnel(janitor: Janitor) -> None:
    cluster, setups = build_crossnode(janitor)
    node1 = cluster.nodes[0].netns
    assert [s.name for s in setups] == list(DEVICE)
    for setup in setups:
        before = _packets(node1)
        ping = run("ping", "-n", "-c", str(PINGS), "-i", "0.01", "-W", "2", setup.server_ip,
                   netns=setup.client_ns, check=False)  # fmt: skip
        assert ping.returncode == 0, (setup.name, ping.stdout + ping.stderr)
        after = _packets(node1)
        grown = {d: (after[d][0] - before[d][0], after[d][1] - before[d][1]) for d in after}
        own = grown.pop(DEVICE[setup.name])
        assert min(own) >= PINGS, (setup.name, own, grown)
        assert all(max(g) < PINGS for g in grown.values()), (setup.name, own, grown)
