"""sfc-cni under repetition and concurrency: nothing leaks, nothing collides.

Behaviours covered:
- 200 ADD/DEL cycles (L3, host-local, a new container ID each time) leave no veth on either side,
  no host end tagged with the network, no lease and no other file behind;
- 20 ADDs run in parallel for 20 pods all succeed with distinct addresses and host ends, then
  20 parallel DELs remove every veth and lease.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sfc_k8s.api.naming import host_ifname
from tests.fixtures.cni import Cni, ip_json, l3_conf, leases, link
from tests.nettools import Janitor, unique

pytestmark = pytest.mark.root


def tagged_links(network: str) -> list[str]:
    """Host interfaces whose alias says they belong to ``network``."""
    prefix = f"sfc-cni/{network}/"
    return [i["ifname"] for i in ip_json("link", "show") if i.get("ifalias", "").startswith(prefix)]


def files_under(path: Path) -> set[str]:
    return {os.path.join(root, f) for root, _, files in os.walk(path) for f in files}


def test_200_add_del_cycles_leave_nothing(cni_path: Path, janitor: Janitor, data_dir: Path) -> None:
    network = unique("cycles", 20)
    conf = l3_conf("1.0.0", data_dir, name=network, subnet="10.80.0.0/24")
    netns = janitor.netns("sfcs")
    seen_hosts = set()
    current: list[Cni] = []  # the attachment a failing cycle may leave: DEL'd at teardown
    janitor.add(lambda: [cni("DEL", conf) for cni in current])
    baseline: set[str] = set()
    for cycle in range(200):
        cni = Cni(
            cni_path,
            container_id=f"cycle{cycle}-{unique('c', 10)}",
            netns=netns,
            args={"IgnoreUnknown": "1", "K8S_POD_UID": unique("uid", 20)},
        )
        current[:] = [cni]
        cni.ok("ADD", conf)
        if cycle == 0:
            baseline = files_under(data_dir)
        cni.ok("DEL", conf)
        seen_hosts.add(host_ifname(cni.args["K8S_POD_UID"], "eth1"))
    assert len(seen_hosts) == 200
    assert tagged_links(network) == []
    assert all(link(name) is None for name in list(seen_hosts)[:20])
    assert ip_json("link", "show", netns=netns)[-1]["ifname"] == "lo"
    assert leases(data_dir) == []
    lease_files = {f for f in baseline if "last_reserved_ip" not in f and not f.endswith("lock")}
    assert len(lease_files) == 1  # what the first ADD created: one lease...
    assert files_under(data_dir) == baseline - lease_files  # ...and nothing else is left


def test_20_parallel_adds_then_dels(cni_path: Path, janitor: Janitor, data_dir: Path) -> None:
    network = unique("par", 20)
    conf = l3_conf("1.1.0", data_dir, name=network, subnet="10.81.0.0/24", macSeed="par/eth1")
    pods = []
    for _ in range(20):
        cni = Cni(
            cni_path,
            container_id=unique("ctr", 24),
            netns=janitor.netns("sfcp"),
            args={"IgnoreUnknown": "1", "K8S_POD_UID": unique("uid", 20)},
        )
        janitor.add(lambda cni=cni: cni("DEL", conf))
        pods.append(cni)

    with ThreadPoolExecutor(max_workers=20) as pool:
        added = list(pool.map(lambda cni: cni("ADD", conf), pods))
    assert [out.rc for out in added] == [0] * 20, [o.stdout for o in added if o.rc]
    addresses = {out.body["ips"][0]["address"] for out in added}
    hosts = {out.body["interfaces"][0]["name"] for out in added}
    assert len(addresses) == 20 and len(hosts) == 20
    assert sorted(tagged_links(network)) == sorted(hosts)
    assert len(leases(data_dir)) == 20

    with ThreadPoolExecutor(max_workers=20) as pool:
        deleted = list(pool.map(lambda cni: cni("DEL", conf), pods))
    assert [out.rc for out in deleted] == [0] * 20, [o.stdout for o in deleted if o.rc]
    assert tagged_links(network) == []
    assert all(link("eth1", cni.netns) is None for cni in pods)
    assert leases(data_dir) == []
