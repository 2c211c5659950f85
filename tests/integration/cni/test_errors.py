"""sfc-cni's failures on real namespaces: the right error object, and nothing left behind.

Behaviours covered:
- CNI_NETNS that does not exist (code 3), that is a plain file or another kind of namespace
  (code 4);
- an IPAM plugin missing from CNI_PATH (code 7), that cannot be run (code 5) or failing (its
  own code passed on): no veth;
- CNI_IFNAME already taken in the pod (code 101): no veth, the lease released;
- the host end's name already taken by another attachment of the same pod UID (code 101): the
  existing attachment untouched, the new lease released;
- a failure after the veth exists (a route the kernel refuses): veth removed, lease released;
- DEL of a pod whose namespace is gone, or without CNI_NETNS, succeeds and releases the lease;
- CHECK reports every difference (MAC, address, route, missing interface) with code 103;
- error objects speak the config's cniVersion.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sfc_k8s.api.naming import host_ifname
from tests.fixtures.cni import Cni, l2_conf, l3_conf, leases, link
from tests.nettools import Janitor, run, unique

pytestmark = pytest.mark.root


@pytest.fixture
def cni(cni_path: Path, janitor: Janitor) -> Cni:
    netns = janitor.netns("sfce")
    args = {"IgnoreUnknown": "1", "K8S_POD_UID": unique("uid", 20)}
    return Cni(cni_path, container_id=unique("ctr", 24), netns=netns, args=args)


def host_of(cni: Cni) -> str:
    return host_ifname(cni.args["K8S_POD_UID"], cni.ifname)


def test_netns_that_does_not_exist(cni: Cni) -> None:
    out = cni("ADD", l2_conf("1.0.0"), env={"CNI_NETNS": "/run/netns/no-such-netns-here"})
    assert out.code == 3
    assert (
        out.body["msg"]
        == 'CNI_NETNS="/run/netns/no-such-netns-here" does not exist: the pod is gone'
    )
    assert link(host_of(cni)) is None


def test_netns_that_is_not_a_network_namespace(cni: Cni, tmp_path: Path) -> None:
    plain = tmp_path / "plain-file"
    plain.write_text("")
    for path in (str(plain), "/proc/self/ns/uts"):
        out = cni("ADD", l2_conf("0.4.0"), env={"CNI_NETNS": path})
        assert out.code == 4, out.stdout
        assert out.body["cniVersion"] == "0.4.0"
        assert out.body["msg"] == (
            f'CNI_NETNS="{path}": expected a network namespace: /proc/<pid>/ns/net or a bind'
            " mount like /run/netns/<name>"
        )
    assert link(host_of(cni)) is None


def test_ipam_plugin_missing(cni: Cni, data_dir: Path) -> None:
    conf = l3_conf("1.0.0", data_dir)
    conf["ipam"]["type"] = "no-such-ipam"
    out = cni("ADD", conf)
    assert out.code == 7
    assert out.body["msg"] == (
        f'ipam.type="no-such-ipam": expected an IPAM plugin installed in CNI_PATH ({cni.cni_path})'
    )
    assert link(host_of(cni)) is None


def test_ipam_plugin_failure_is_passed_on(cni: Cni, data_dir: Path) -> None:
    conf = l3_conf("1.0.0", data_dir, subnet="10.77.0.0/33")
    out = cni("ADD", conf)
    assert out.rc != 0
    assert "host-local" in out.body["msg"]
    assert link(host_of(cni)) is None
    assert leases(data_dir) == []


def test_pod_ifname_taken_rolls_back(cni: Cni, data_dir: Path) -> None:
    run("ip", "link", "add", "eth1", "type", "veth", "peer", "name", "other1", netns=cni.netns)
    conf = l3_conf("1.0.0", data_dir)
    out = cni("ADD", conf)
    assert out.code == 101
    assert "'eth1' already exists" in out.body["msg"]
    assert link(host_of(cni)) is None
    assert leases(data_dir) == []
    assert link("eth1", cni.netns) is not None  # not ours: left alone


def test_host_name_taken_rolls_back(
    cni: Cni, cni_path: Path, janitor: Janitor, data_dir: Path
) -> None:
    conf = l3_conf("1.0.0", data_dir)
    janitor.add(lambda: cni("DEL", conf))
    cni.ok("ADD", conf)
    other = Cni(
        cni_path,
        container_id=unique("ctr", 24),
        netns=janitor.netns("sfce"),
        args=cni.args,  # same pod UID and ifname: the same host-side name
    )
    out = other("ADD", conf)
    assert out.code == 101
    assert host_of(cni) in out.body["msg"]
    assert len(leases(data_dir)) == 1  # the second lease was released
    assert link("eth1", other.netns) is None
    first = link("eth1", cni.netns)
    host = link(host_of(cni))
    assert first is not None and host is not None and first["link_index"] == host["ifindex"]


def test_failure_after_veth_rolls_back(cni: Cni, data_dir: Path) -> None:
    conf = l3_conf("1.0.0", data_dir)
    conf["ipam"]["routes"] = [{"dst": "10.90.0.0/16", "gw": "192.168.250.1"}]  # not on-link
    out = cni("ADD", conf)
    assert out.code == 100
    assert "add route" in out.body["msg"]
    assert link(host_of(cni)) is None
    assert link("eth1", cni.netns) is None
    assert leases(data_dir) == []


def test_del_after_netns_is_gone(cni: Cni, data_dir: Path) -> None:
    conf = l3_conf("1.0.0", data_dir)
    cni.ok("ADD", conf)
    run("ip", "netns", "del", cni.netns)
    cni.ok("DEL", conf)
    assert leases(data_dir) == []
    cni.ok("DEL", conf, drop=("CNI_NETNS",))
    assert link(host_of(cni)) is None


def test_check_reports_every_difference(cni: Cni, janitor: Janitor, data_dir: Path) -> None:
    conf = l3_conf("1.1.0", data_dir, macSeed="check")
    janitor.add(lambda: cni("DEL", conf))
    result = cni.ok("ADD", conf)
    check = {**conf, "prevResult": result}
    cni.ok("CHECK", check)

    address = result["ips"][0]["address"]
    run("ip", "addr", "del", address, "dev", "eth1", netns=cni.netns)
    run("ip", "link", "set", "eth1", "address", "02:00:00:00:00:99", netns=cni.netns)
    out = cni("CHECK", check)
    assert out.code == 103
    msg = out.body["msg"]
    assert "MAC 02:00:00:00:00:99" in msg
    assert f"address {address} is missing" in msg
    assert "route 10.78.0.0/16" in msg

    run("ip", "link", "del", "eth1", netns=cni.netns)
    out = cni("CHECK", check)
    assert out.code == 103
    assert "'eth1' is missing" in out.body["msg"]
    cni.ok("DEL", conf)
    assert leases(data_dir) == []


def test_ipam_plugin_that_cannot_run(cni: Cni, data_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "bin"
    broken.mkdir()
    (broken / "broken-ipam").write_bytes(b"\x7fELF this is not a program")
    (broken / "broken-ipam").chmod(0o755)
    conf = l3_conf("1.0.0", data_dir)
    conf["ipam"]["type"] = "broken-ipam"
    out = cni("ADD", conf, env={"CNI_PATH": f"{broken}:{cni.cni_path}"})
    assert out.code == 5
    assert "broken-ipam" in out.body["msg"]
    assert link(host_of(cni)) is None
