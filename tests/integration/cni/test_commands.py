"""Every CNI command in every cniVersion, run as Multus/containerd run sfc-cni, on real netns.

Behaviours covered:
- ADD (L2 and L3 with host-local) in 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0: a veth pair whose pod end
  is CNI_IFNAME in the pod's namespace, carries the configured MTU and the MAC derived from
  ``macSeed``, is up, has no IPv6 address the kernel made (addr_gen_mode none) and, in L3 mode,
  the leased addresses and routes, plus with IPv6 the link-local address derived from its MAC
  (EUI-64), all without duplicate address detection; whose host end is named
  ``host_ifname(K8S_POD_UID, ifname)``, is up and has no IPv6 address; the result in the
  version's format (``version`` in IPs before 1.0.0, interface ``mtu`` only in 1.1.0);
- CHECK succeeds right after ADD (0.4.0+), misses the IPv6 link-local address once it is
  removed, and is refused with code 1 before 0.4.0;
- DEL removes both ends and the lease, and a second DEL succeeds; without K8S_POD_UID it finds
  the veth from the pod end;
- a fixed ``mac`` and Multus' ``runtimeConfig.mac`` set the pod MAC; CNI_CONTAINERID names the host
  end when CNI_ARGS has no K8S_POD_UID;
- VERSION lists every supported version; STATUS (1.1.0) reports ready, refuses older versions
  with code 1 and answers 50 when the IPAM plugin is missing; GC (1.1.0) removes the veths and
  leases of attachments missing from ``cni.dev/valid-attachments`` and keeps the others;
- logs go to stderr and ``logFile``, stdout carries only the result.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sfc_k8s.api.naming import host_ifname, mac_from_seed
from tests.fixtures.cni import (
    VERSIONS,
    Cni,
    addresses,
    eui64_link_local,
    ip_json,
    l2_conf,
    l3_conf,
    leases,
    link,
)
from tests.nettools import Janitor, run, unique

pytestmark = pytest.mark.root


def attachment(cni_path: Path, janitor: Janitor, **kw: object) -> Cni:
    """A pod netns and its invocation context, DEL'd by the janitor whatever happens."""
    netns = janitor.netns("sfcc")
    uid = unique("uid", 20)
    args = {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": netns}
    args["K8S_POD_UID"] = uid
    cni = Cni(cni_path, container_id=unique("ctr", 24), netns=netns, args=args)
    for key, value in kw.items():
        setattr(cni, key, value)
    return cni


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("mode", ["l2", "l3"])
def test_add_check_del(
    cni_path: Path, janitor: Janitor, data_dir: Path, version: str, mode: str
) -> None:
    cni = attachment(cni_path, janitor)
    seed = unique("nf", 20) + "/eth1"
    if mode == "l2":
        conf = l2_conf(version, macSeed=seed, mtu=1400)
    else:
        conf = l3_conf(version, data_dir, macSeed=seed, mtu=1400)
    janitor.add(lambda: cni("DEL", conf))
    host = host_ifname(cni.args["K8S_POD_UID"], "eth1")
    mac = mac_from_seed(seed)

    result = cni.ok("ADD", conf)

    assert result["cniVersion"] == version
    host_if, pod_if = result["interfaces"]
    assert host_if["name"] == host
    assert pod_if == {
        "name": "eth1",
        "mac": mac,
        "sandbox": f"/run/netns/{cni.netns}",
        **({"mtu": 1400} if version == "1.1.0" else {}),
    }
    pod_link = link("eth1", cni.netns)
    host_link = link(host)
    assert pod_link is not None and host_link is not None
    assert pod_link["address"] == mac
    assert pod_link["mtu"] == host_link["mtu"] == 1400
    assert pod_link["linkinfo"]["info_kind"] == "veth"
    assert "UP" in pod_link["flags"] and "UP" in host_link["flags"]
    assert pod_link["link_index"] == host_link["ifindex"]
    assert not [a for a in addresses(host) if ":" in a]
    pod_addrs = addresses("eth1", cni.netns)
    if mode == "l2":
        assert pod_addrs == []
        assert "ips" not in result
    else:
        (ip,) = result["ips"]
        assert ip["interface"] == 1
        assert ip["gateway"] == "10.77.0.1"
        assert ("version" in ip) == (version < "1.0.0")
        assert pod_addrs == [ip["address"]]
        assert result["routes"] == [{"dst": "10.78.0.0/16"}]
        assert len(leases(data_dir)) == 1

    check_conf = {**conf, "prevResult": result}
    if version < "0.4.0":
        assert cni("CHECK", check_conf).code == 1
    else:
        cni.ok("CHECK", check_conf)

    cni.ok("DEL", conf)
    assert link(host) is None
    assert link("eth1", cni.netns) is None
    assert leases(data_dir) == []
    cni.ok("DEL", conf)  # idempotent


def test_fixed_and_runtime_mac(cni_path: Path, janitor: Janitor) -> None:
    cni = attachment(cni_path, janitor)
    conf = l2_conf("1.0.0", mac="02:00:5E:10:00:01")
    janitor.add(lambda: cni("DEL", conf))
    assert cni.ok("ADD", conf)["interfaces"][1]["mac"] == "02:00:5e:10:00:01"
    cni.ok("DEL", conf)
    runtime = {**conf, "runtimeConfig": {"mac": "0a:00:00:00:00:07"}}
    cni.ok("ADD", runtime)
    pod_link = link("eth1", cni.netns)
    assert pod_link is not None and pod_link["address"] == "0a:00:00:00:00:07"
    cni.ok("DEL", runtime)


def test_container_id_names_host_end_without_pod_uid(cni_path: Path, janitor: Janitor) -> None:
    cni = attachment(cni_path, janitor, args={"IgnoreUnknown": "1"}, ifname="net1")
    conf = l2_conf("1.0.0", macSeed="x")
    janitor.add(lambda: cni("DEL", conf))
    result = cni.ok("ADD", conf)
    expected = host_ifname(cni.container_id, "net1")
    assert result["interfaces"][0]["name"] == expected
    assert link(expected) is not None
    cni.ok("DEL", conf)
    assert link(expected) is None


def test_version(cni_path: Path) -> None:
    cni = Cni(cni_path, container_id="unused")
    for version in VERSIONS:
        body = cni.ok("VERSION", {"cniVersion": version})
        assert body == {"cniVersion": version, "supportedVersions": list(VERSIONS)}


def test_status(cni_path: Path, data_dir: Path) -> None:
    cni = Cni(cni_path, container_id="unused")
    assert cni.ok("STATUS", l3_conf("1.1.0", data_dir)) == {}
    assert cni.ok("STATUS", l2_conf("1.1.0")) == {}
    for version in VERSIONS[:-1]:
        assert cni("STATUS", l2_conf(version)).code == 1
    missing = l3_conf("1.1.0", data_dir)
    missing["ipam"]["type"] = "no-such-ipam"
    out = cni("STATUS", missing)
    assert out.code == 50
    assert "no-such-ipam" in out.body["msg"]


def test_gc_removes_only_stale_attachments(
    cni_path: Path, janitor: Janitor, data_dir: Path
) -> None:
    conf = l3_conf("1.1.0", data_dir, name=unique("gcnet", 20))
    keep = attachment(cni_path, janitor)
    stale = [attachment(cni_path, janitor) for _ in range(2)]
    for cni in (keep, *stale):
        janitor.add(lambda cni=cni: cni("DEL", conf))
        cni.ok("ADD", conf)
    assert len(leases(data_dir)) == 3
    gc = {
        **conf,
        "cni.dev/valid-attachments": [{"containerID": keep.container_id, "ifname": "eth1"}],
    }
    keep.ok("GC", gc)
    assert link(host_ifname(keep.args["K8S_POD_UID"], "eth1")) is not None
    for cni in stale:  # each lease released under its own attachment's identity
        assert link(host_ifname(cni.args["K8S_POD_UID"], "eth1")) is None
        assert link("eth1", cni.netns) is None
    assert len(leases(data_dir)) == 1
    old = keep("GC", {**gc, "cniVersion": "1.0.0"})
    assert (old.code, old.body["msg"]) == (1, 'cniVersion="1.0.0": expected 1.1.0 or later for GC')
    keep.ok("DEL", conf)
    assert leases(data_dir) == []


def test_logs_go_to_stderr_and_log_file(cni_path: Path, janitor: Janitor, tmp_path: Path) -> None:
    cni = attachment(cni_path, janitor)
    log_file = tmp_path / "sfc-cni.log"
    conf = l2_conf("1.0.0", logFile=str(log_file), macSeed="log")
    janitor.add(lambda: cni("DEL", conf))
    out = cni("ADD", conf)
    assert out.rc == 0
    assert out.body["cniVersion"] == "1.0.0"  # stdout is exactly one JSON document
    assert "added" in out.stderr
    cni.ok("DEL", conf)
    text = log_file.read_text()
    assert "ADD" in text and "DEL" in text and cni.container_id[:12] in text


def test_dual_stack_l3(cni_path: Path, janitor: Janitor, data_dir: Path) -> None:
    cni = attachment(cni_path, janitor)
    conf = l3_conf("1.0.0", data_dir)
    conf["ipam"]["ranges"] = [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd00:77::/64"}]]
    del conf["ipam"]["subnet"]
    conf["ipam"]["routes"] = [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    janitor.add(lambda: cni("DEL", conf))
    result = cni.ok("ADD", conf)
    assert [ip["address"].split("/")[1] for ip in result["ips"]] == ["24", "64"]
    pod_mac = result["interfaces"][1]["mac"]
    expected = [ip["address"] for ip in result["ips"]] + [f"{eui64_link_local(pod_mac)}/64"]
    assert sorted(addresses("eth1", cni.netns)) == sorted(expected)
    (info,) = ip_json("-6", "addr", "show", "dev", "eth1", netns=cni.netns)
    assert not [a for a in info["addr_info"] if a.get("tentative")]  # no DAD between replicas
    assert all(a.get("nodad") for a in info["addr_info"])
    routes = ip_json("-6", "route", "show", "default", netns=cni.netns)
    assert routes and routes[0]["dev"] == "eth1" and routes[0]["gateway"] == "fd00:77::1"
    cni.ok("CHECK", {**conf, "prevResult": result})
    local = f"{eui64_link_local(pod_mac)}/64"
    run("ip", "addr", "del", local, "dev", "eth1", netns=cni.netns)
    out = cni("CHECK", {**conf, "prevResult": result})
    assert out.code == 103
    assert out.body["msg"] == f"CHECK found differences: address {local} is missing from 'eth1'"
    cni.ok("DEL", conf)
    assert leases(data_dir) == []


def test_del_without_pod_uid_finds_the_pod_end(cni_path: Path, janitor: Janitor) -> None:
    cni = attachment(cni_path, janitor)
    conf = l2_conf("1.0.0", macSeed="fallback")
    janitor.add(lambda: cni("DEL", conf))
    host = cni.ok("ADD", conf)["interfaces"][0]["name"]
    cni.ok("DEL", conf, drop=("CNI_ARGS",))  # the host end's name is not derivable now
    assert link(host) is None
    assert link("eth1", cni.netns) is None
