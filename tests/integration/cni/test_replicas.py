"""Replicas of one NF interface share a MAC (and, in L3 mode, an IP) without fighting.

Behaviours covered:
- two L3 replicas in different namespaces get the same MAC (from ``macSeed``) and the same
  address (``static`` IPAM); a client on a Linux bridge reaches the shared address through
  either replica's host end, and its ARP entry stays valid when traffic moves from one replica to
  the other (the second replica answers: its counters move);
- two L2 replicas get the same MAC, no address at all, and IPv6 address generation is off on
  both ends (no link-local address, so no duplicate address detection between replicas).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sfc_k8s.api.naming import mac_from_seed
from tests.fixtures.cni import Cni, addresses, ip_json, l2_conf, link
from tests.nettools import Janitor, run, unique

pytestmark = pytest.mark.root

SHARED_IP = "10.79.0.2"


def replica(cni_path: Path, janitor: Janitor, conf: dict[str, object]) -> tuple[Cni, str]:
    """ADD one replica in a fresh netns; return its invocation context and host-end name."""
    netns = janitor.netns("sfcr")
    args = {"IgnoreUnknown": "1", "K8S_POD_UID": unique("uid", 20)}
    cni = Cni(cni_path, container_id=unique("ctr", 24), netns=netns, args=args)
    janitor.add(lambda: cni("DEL", conf))
    result = cni.ok("ADD", conf)
    return cni, str(result["interfaces"][0]["name"])


def rx_packets(netns: str) -> int:
    (info,) = ip_json("-s", "link", "show", "dev", "eth1", netns=netns)
    return int(info["stats64"]["rx"]["packets"])


def test_l3_replicas_share_mac_and_ip(cni_path: Path, janitor: Janitor) -> None:
    seed = unique("fw", 20) + "/eth1"
    conf = {
        "cniVersion": "1.0.0",
        "name": "sfc-replicas",
        "type": "sfc-cni",
        "macSeed": seed,
        "ipam": {"type": "static", "addresses": [{"address": f"{SHARED_IP}/24"}]},
    }
    first, first_host = replica(cni_path, janitor, conf)
    second, second_host = replica(cni_path, janitor, conf)
    mac = mac_from_seed(seed)
    for cni in (first, second):
        pod_link = link("eth1", cni.netns)
        assert pod_link is not None and pod_link["address"] == mac
        assert addresses("eth1", cni.netns) == [f"{SHARED_IP}/24"]

    bridge = unique("sfcbr")
    run("ip", "link", "add", bridge, "type", "bridge")
    janitor.add(lambda: run("ip", "link", "del", bridge, check=False))
    run("ip", "link", "set", bridge, "up")
    client = janitor.netns("sfcr")
    client_port = unique("sfcp")
    janitor.veth(client_port, "c0", b_netns=client)
    run("ip", "link", "set", client_port, "master", bridge)
    run("ip", "addr", "add", "10.79.0.1/24", "dev", "c0", netns=client)

    run("ip", "link", "set", first_host, "master", bridge)
    run("ping", "-c", "2", "-i", "0.2", "-W", "2", SHARED_IP, netns=client)
    (neighbour,) = ip_json("neigh", "show", SHARED_IP, "dev", "c0", netns=client)
    assert neighbour["lladdr"] == mac

    run("ip", "link", "set", first_host, "nomaster")
    run("ip", "link", "set", second_host, "master", bridge)
    before = rx_packets(second.netns)
    run("ping", "-c", "2", "-i", "0.2", "-W", "2", SHARED_IP, netns=client)
    assert rx_packets(second.netns) >= before + 2  # the second replica answered this time
    (neighbour,) = ip_json("neigh", "show", SHARED_IP, "dev", "c0", netns=client)
    assert neighbour["lladdr"] == mac  # the same logical device for the client

    for cni in (first, second):
        cni.ok("DEL", conf)
        assert link("eth1", cni.netns) is None


def test_l2_replicas_share_mac_without_ipv6(cni_path: Path, janitor: Janitor) -> None:
    seed = unique("nat", 20) + "/eth1"
    conf = l2_conf("1.1.0", macSeed=seed)
    replicas = [replica(cni_path, janitor, conf) for _ in range(2)]
    for cni, host in replicas:
        pod_link = link("eth1", cni.netns)
        host_link = link(host)
        assert pod_link is not None and host_link is not None
        assert pod_link["address"] == mac_from_seed(seed)
        assert pod_link["inet6_addr_gen_mode"] == host_link["inet6_addr_gen_mode"] == "none"
        assert addresses("eth1", cni.netns) == []
        assert addresses(host) == []
    for cni, _ in replicas:
        cni.ok("DEL", conf)
