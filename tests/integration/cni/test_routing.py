"""An IPv6 routing NF, wired by sfc-cni and joined by real cross-connections, forwards.

The chain of issue 16::

    client (fd00:1::10) --[link 1]-- 2 replicas of a Linux router --[link 2]-- server (fd00:2::20)

Every interface is an sfc-cni attachment with ``static`` IPAM and a ``macSeed``: both router
replicas carry ``fd00:1::1/64`` on eth1 and ``fd00:2::1/64`` on eth2, with the same MACs, and
route with ``net.ipv6.conf.all.forwarding=1``. The host ends are joined by two links of the data
plane (``sfc_k8s.dataplane.Dataplane``): link 1 client | routers' eth1, link 2 routers' eth2 |
server.

Behaviours covered:
- every L3 interface with an IPv6 address gets a link-local address derived from its shared MAC
  (EUI-64), the same on every replica, without duplicate address detection; the host ends get
  none;
- ping -6 from the client to the server crosses each router replica on its own (the other one
  removed from both links): a router can only resolve the next hop (send a Neighbour
  Solicitation) from a link-local address, so without one nothing is forwarded;
- with both replicas in the links, 20 TCP connections over IPv6 all exchange data and both
  replicas forward some of them (each replica's own Ip6OutForwDatagrams counter moves).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sfc_k8s.api.naming import mac_from_seed
from sfc_k8s.dataplane import Dataplane, Side
from tests.fixtures.cni import Cni, eui64_link_local, ip_json
from tests.fixtures.flows import Server, run_flows
from tests.fixtures.topology import TEST_SESSIONS, bpffs_root
from tests.nettools import Janitor, run, unique

pytestmark = pytest.mark.root

CLIENT_IP = "fd00:1::10"
ROUTER_IN_IP = "fd00:1::1"
ROUTER_OUT_IP = "fd00:2::1"
SERVER_IP = "fd00:2::20"
PORT = 7000


def static_conf(name: str, seed: str, address: str, gateway: str | None) -> dict[str, Any]:
    """An L3 sfc-cni config: ``address`` from static IPAM, a default route via ``gateway``."""
    entry = {"address": address, **({"gateway": gateway} if gateway else {})}
    ipam: dict[str, Any] = {"type": "static", "addresses": [entry]}
    if gateway:
        ipam["routes"] = [{"dst": "::/0"}]
    return {"cniVersion": "1.0.0", "name": name, "type": "sfc-cni", "macSeed": seed, "ipam": ipam}


@dataclass
class Pod:
    """A namespace playing a pod, with sfc-cni attachments: pod ifname -> host end."""

    netns: str
    uid: str
    hosts: dict[str, str]

    @classmethod
    def create(cls, janitor: Janitor, prefix: str) -> Pod:
        return cls(janitor.netns(prefix), unique("uid", 20), {})

    def attach(self, cni_path: Path, janitor: Janitor, ifname: str, conf: dict[str, Any]) -> None:
        args = {"IgnoreUnknown": "1", "K8S_POD_UID": self.uid}
        container_id = unique("ctr", 24)
        cni = Cni(cni_path, container_id, netns=self.netns, ifname=ifname, args=args)
        janitor.add(lambda: cni("DEL", conf))
        result = cni.ok("ADD", conf)
        self.hosts[ifname] = str(result["interfaces"][0]["name"])

    def forwarded6(self) -> int:
        """Ip6OutForwDatagrams of this namespace: IPv6 packets its stack routed."""
        out = run("cat", "/proc/net/snmp6", netns=self.netns).stdout
        counters = dict(line.split() for line in out.splitlines() if line.strip())
        return int(counters["Ip6OutForwDatagrams"])


def link_locals(ifname: str, netns: str | None = None) -> list[dict[str, Any]]:
    found = ip_json("-6", "addr", "show", "dev", ifname, netns=netns)
    return [a for i in found for a in i.get("addr_info", []) if a.get("scope") == "link"]


@pytest.fixture
def dataplane(janitor: Janitor) -> Iterator[Dataplane]:
    """A data plane under a private bpffs root, destroyed before the janitor runs the DELs."""
    root = bpffs_root(janitor)
    dp = Dataplane(root, session_table_size=TEST_SESSIONS)
    try:
        yield dp
    finally:
        dp.close()
        with Dataplane(root) as fresh:
            fresh.destroy()


@dataclass
class RoutedChain:
    """The pods, and the links joining them; ``tag`` seeds every MAC of this chain."""

    tag: str
    client: Pod
    routers: list[Pod]
    server: Pod
    link1: str
    link2: str


@pytest.fixture
def chain(cni_path: Path, janitor: Janitor, dataplane: Dataplane) -> RoutedChain:
    tag = secrets.token_hex(4)
    client = Pod.create(janitor, "sfcr-cli")
    conf = static_conf("v6-client", f"{tag}/client", f"{CLIENT_IP}/64", ROUTER_IN_IP)
    client.attach(cni_path, janitor, "eth1", conf)
    server = Pod.create(janitor, "sfcr-srv")
    conf = static_conf("v6-server", f"{tag}/server", f"{SERVER_IP}/64", ROUTER_OUT_IP)
    server.attach(cni_path, janitor, "eth1", conf)
    router_in = static_conf("v6-rtr-in", f"{tag}/router/eth1", f"{ROUTER_IN_IP}/64", None)
    router_out = static_conf("v6-rtr-out", f"{tag}/router/eth2", f"{ROUTER_OUT_IP}/64", None)
    routers = []
    for _ in range(2):
        router = Pod.create(janitor, "sfcr-rtr")
        run("sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1", netns=router.netns)
        router.attach(cni_path, janitor, "eth1", router_in)
        router.attach(cni_path, janitor, "eth2", router_out)
        routers.append(router)
    link1, link2 = f"v6in-{tag}", f"v6out-{tag}"
    dataplane.create_link(link1, side_a=[client.hosts["eth1"]],
                          side_b=[r.hosts["eth1"] for r in routers])  # fmt: skip
    dataplane.create_link(link2, side_a=[r.hosts["eth2"] for r in routers],
                          side_b=[server.hosts["eth1"]])  # fmt: skip
    return RoutedChain(tag, client, routers, server, link1, link2)


def ping6(chain: RoutedChain) -> None:
    ping = run("ping", "-6", "-n", "-c", "3", "-i", "0.2", "-W", "2", SERVER_IP,
               netns=chain.client.netns, check=False)  # fmt: skip
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_link_local_is_shared_by_replicas_and_skips_dad(chain: RoutedChain) -> None:
    for router in chain.routers:
        for ifname in ("eth1", "eth2"):
            expected = eui64_link_local(mac_from_seed(f"{chain.tag}/router/{ifname}"))
            (local,) = link_locals(ifname, router.netns)
            assert (local["local"], local["prefixlen"]) == (expected, 64)
            assert local.get("nodad") is True
            assert not local.get("tentative") and not local.get("dadfailed")
        for host in router.hosts.values():
            assert link_locals(host) == []


def test_each_router_replica_forwards_ipv6(chain: RoutedChain, dataplane: Dataplane) -> None:
    for alone in range(2):
        other = chain.routers[1 - alone]
        dataplane.remove_endpoint(chain.link1, Side.B, other.hosts["eth1"])
        dataplane.remove_endpoint(chain.link2, Side.A, other.hosts["eth2"])
        before = chain.routers[alone].forwarded6()
        ping6(chain)
        assert chain.routers[alone].forwarded6() >= before + 6  # 3 echoes and their replies
        dataplane.add_endpoint(chain.link1, Side.B, other.hosts["eth1"])
        dataplane.add_endpoint(chain.link2, Side.A, other.hosts["eth2"])


def test_tcp_over_ipv6_spreads_over_both_router_replicas(
    chain: RoutedChain, janitor: Janitor
) -> None:
    ping6(chain)
    before = [r.forwarded6() for r in chain.routers]
    server = Server.start(janitor, chain.server.netns, "tcp-echo", PORT, ipv6=True)
    report = run_flows(chain.client.netns, "tcp-flows", "--server", SERVER_IP, "--port",
                       str(PORT), "--flows", "20", "--duration", "1")  # fmt: skip
    flows = report["flows"]
    assert [f["error"] for f in flows] == [None] * 20, flows
    assert all(f["exchanges"] > 0 for f in flows), flows
    server.stop()
    # 20 flows on 2 replicas: all on one happens with probability 2 * 2**-20.
    after = [r.forwarded6() for r in chain.routers]
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
