"""Attachment and adoption with real packets between network namespaces:

- TCX (default) and the clsact fallback ("tc" mode) both forward ping through a link;
- a kernel refusing TCX (EINVAL or EOPNOTSUPP from bpf_link_create) gets the clsact fallback
  end to end: a link created with tc filters that forwards, an endpoint removed with its
  filter, a restarted manager adopting the link, and the link deleted with every filter;
- the program stays attached and forwarding when the managing process has closed, and a new
  Dataplane adopts the pinned state (same link id, same counters, no reload);
- a VLAN tag moved into skb metadata by the stack (the real path, which BPF_PROG_TEST_RUN
  cannot show) is part of the flow key;
- an endpoint whose interface was deleted can still be removed, and its link deleted.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from sfc_k8s.dataplane import Dataplane, Side, loader
from sfc_k8s.dataplane import _libbpf as bpf
from tests.bpf.conftest import SESSIONS, private_root
from tests.fixtures import frames as f
from tests.nettools import Janitor, run, unique


class Pair:
    """Namespaces ``left`` and ``right`` (10.77.0.1 and .2 on eth1) behind host veths."""

    def __init__(self, janitor: Janitor) -> None:
        self.left, self.right = janitor.netns(), janitor.netns()
        self.host_left = janitor.veth(unique("xl"), "eth1", b_netns=self.left)[0]
        self.host_right = janitor.veth(unique("xr"), "eth1", b_netns=self.right)[0]
        for ns, addr in ((self.left, "10.77.0.1/24"), (self.right, "10.77.0.2/24")):
            run("ip", "addr", "add", addr, "dev", "eth1", netns=ns)

    def ping(self) -> bool:
        """One echo answered within 3 s (ARP included)."""
        argv = ("ping", "-c", "1", "-w", "3", "10.77.0.2")
        return run(*argv, netns=self.left, check=False).returncode == 0

    def unreachable(self) -> bool:
        """No answer within a second; forgets the failed neighbour so a later ping starts over."""
        done = run("ping", "-c", "1", "-W", "1", "10.77.0.2", netns=self.left, check=False)
        run("ip", "neigh", "flush", "all", netns=self.left)
        return done.returncode != 0


@pytest.fixture
def root(janitor: Janitor) -> Iterator[str]:
    path = private_root()

    def teardown() -> None:
        if os.path.exists(path):
            with Dataplane(path) as dp:
                dp.destroy()

    janitor.add(teardown)  # registered first: runs after the namespaces are gone
    yield path


@pytest.mark.parametrize("mode", ["tcx", "tc"])
def test_ping_crosses_the_link(janitor: Janitor, root: str, mode: str) -> None:
    pair = Pair(janitor)
    assert pair.unreachable()  # nothing joins the two host veths yet
    with Dataplane(root, session_table_size=SESSIONS, attach_mode=mode) as dp:
        dp.create_link("p", side_a=[pair.host_left], side_b=[pair.host_right])
        assert pair.ping()
        status = dp.status("p")
        assert all(e.counters.tx_packets >= 1 for e in status.endpoints)
        kinds = {s.kind for s in dp.sessions("p")}
        assert {"l3-v4", "arp"} <= kinds
        filters = run("tc", "filter", "show", "dev", pair.host_left, "ingress").stdout
        assert ("sfc_xc_ingress" in filters) == (mode == "tc")
        dp.delete_link("p")
        assert run("tc", "filter", "show", "dev", pair.host_left, "ingress").stdout.strip() == ""
    assert pair.unreachable()


def test_traffic_outlives_the_manager_and_is_adopted(janitor: Janitor, root: str) -> None:
    pair = Pair(janitor)
    with Dataplane(root, session_table_size=SESSIONS) as dp:
        link_id = dp.create_link("p", side_a=[pair.host_left], side_b=[pair.host_right]).link_id
        program = os.stat(loader.Pins(root).program).st_ino
    # No process holds anything now: only the pins.
    assert pair.ping()
    with Dataplane(root) as again:
        status = again.status("p")
        assert status.link_id == link_id
        assert status.side(Side.B)[0].counters.tx_packets >= 1
        assert os.stat(loader.Pins(root).program).st_ino == program  # adopted, not reloaded


SEND_RAW = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth1", 0))
s.send(bytes.fromhex(sys.argv[1]))
"""


def test_offloaded_vlan_tag_is_in_the_key(janitor: Janitor, root: str) -> None:
    pair = Pair(janitor)
    udp = f.ipv4("10.77.0.1", "10.77.0.2", f.UDP, f.l4(4000, 5000))
    frame = f.eth(f.ETH_VLAN, f.vlan(100, f.ETH_IP, udp))
    with Dataplane(root, session_table_size=SESSIONS) as dp:
        dp.create_link("p", side_a=[pair.host_left], side_b=[pair.host_right])
        # The receiving veth moves the tag into the skb before TC ingress runs.
        run(sys.executable, "-c", SEND_RAW, frame.hex(), netns=pair.left)
        sessions = [s for s in dp.sessions("p") if s.kind == "l4-v4"]
        assert [(s.vlan, s.port_lo, s.port_hi) for s in sessions] == [(100, 4000, 5000)]
        assert dp.status("p").side(Side.B)[0].counters.tx_packets >= 1


def test_endpoint_of_a_deleted_interface_can_be_removed(janitor: Janitor, root: str) -> None:
    pair = Pair(janitor)
    extra = janitor.veth(unique("xe"), unique("xp"))[0]
    with Dataplane(root, session_table_size=SESSIONS) as dp:
        dp.create_link("p", side_a=[pair.host_left], side_b=[pair.host_right, extra])
        subprocess.run(["ip", "link", "del", extra], check=True)
        dp.remove_endpoint("p", Side.B, extra)
        assert [e.ifname for e in dp.status("p").side(Side.B)] == [pair.host_right]
        assert pair.ping()
        subprocess.run(["ip", "link", "del", pair.host_right], check=True)
        dp.delete_link("p")
        assert dp.links() == []


@pytest.mark.parametrize("refusal", [errno.EINVAL, errno.EOPNOTSUPP])
def test_tcx_refused_falls_back_to_clsact_end_to_end(
    janitor: Janitor, root: str, monkeypatch: pytest.MonkeyPatch, refusal: int
) -> None:
    # A kernel without TCX, at the libbpf boundary: bpf_link_create refuses TCX attachments
    # with the errno such a kernel gives (libbpf returns -errno); everything else is real.
    real = bpf._link_create

    def no_tcx(prog_fd: int, target: int, attach_type: int, opts: object) -> int:
        if attach_type == bpf.BPF_TCX_INGRESS:
            return -refusal
        return int(real(prog_fd, target, attach_type, opts))

    monkeypatch.setattr(bpf, "_link_create", no_tcx)
    pair = Pair(janitor)
    extra = janitor.veth(unique("xe"), unique("xp"))[0]

    def filters(dev: str) -> str:
        return str(run("tc", "filter", "show", "dev", dev, "ingress").stdout)

    with Dataplane(root, session_table_size=SESSIONS) as dp:  # attach_mode "auto"
        link_id = dp.create_link(
            "p", side_a=[pair.host_left], side_b=[pair.host_right, extra]
        ).link_id
        for dev in (pair.host_left, pair.host_right, extra):
            assert "sfc_xc_ingress" in filters(dev), dev
        assert not [p for p in os.listdir(loader.Pins(root).link_dir("p")) if "tcx_" in p]
        dp.remove_endpoint("p", Side.B, extra)  # (it has no pod: flows must not pick it)
        assert filters(extra).strip() == ""
        assert pair.ping()
    # A restarted manager (TCX still refused) adopts the link and its tc filters.
    with Dataplane(root) as again:
        assert again.status("p").link_id == link_id
        assert [e.ifname for e in again.status("p").side(Side.B)] == [pair.host_right]
        assert pair.ping()
        again.delete_link("p")
        assert again.links() == []
    for dev in (pair.host_left, pair.host_right):
        assert filters(dev).strip() == "", dev
    assert pair.unreachable()
