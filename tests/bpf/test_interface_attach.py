"""Interfaces attached when they appear (``Dataplane.attach_interface``), with real packets:

- an attached interface in no link passes traffic through unchanged (a ping to an address of
  the host end is answered) and starts forwarding the moment a link's maps name it;
- creating, changing and deleting a link then attaches and detaches nothing: the kernel's TCX
  links of every interface (``bpftool link``) are the same objects before, during and after,
  and no attachment is pinned under the link; the interface passes through again afterwards;
- an interface that was never attached is still attached by the link that takes it (and
  detached with it), as before;
- ``sync_interfaces``: attaches the interfaces present, unpins those of deleted interfaces
  (whose kernel link is then freed), and leaves nothing pinned; ``destroy`` removes the rest;
- an upgrade swaps the program of interfaces attached this way (in a link or not).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from sfc_k8s.dataplane import Dataplane, Side, loader
from sfc_k8s.dataplane import _libbpf as bpf
from tests.bpf.conftest import SESSIONS, private_root
from tests.bpf.test_attach import Pair
from tests.nettools import Janitor, run, unique


@pytest.fixture
def root(janitor: Janitor) -> Iterator[str]:
    path = private_root()

    def teardown() -> None:
        if os.path.exists(path):
            with Dataplane(path) as dp:
                dp.destroy()

    janitor.add(teardown)  # registered first: runs after the interfaces are gone
    yield path


def tcx_links(ifname: str) -> dict[int, int]:
    """The kernel's TCX links on ``ifname``: link id -> program id."""
    return bpf.tcx_links(socket.if_nametoindex(ifname))


def tcx_of(names: Iterable[str]) -> dict[str, dict[int, int]]:
    """``tcx_links`` of several interfaces, in one walk of the system's BPF links."""
    found = bpf.all_tcx_links()
    return {name: found.get(socket.if_nametoindex(name), {}) for name in names}


def link_exists(link_id: int) -> bool:
    return run("bpftool", "link", "show", "id", str(link_id), check=False).returncode == 0


class HostAddress:
    """An address pair from 100.64.0.0/10 (CGNAT space, unused here): the pod end and the host
    end of the left pair, so that a ping shows what the host receives (pass-through)."""

    def __init__(self, janitor: Janitor, pair: Pair) -> None:
        net = f"100.{64 + secrets.randbelow(64)}.{secrets.randbelow(256)}"
        self.pod, self.host = f"{net}.1", f"{net}.2"
        self.netns = pair.left
        run("ip", "addr", "add", f"{self.pod}/30", "dev", "eth1", netns=pair.left)
        run("ip", "addr", "add", f"{self.host}/30", "dev", pair.host_left)
        janitor.add(lambda: run("ip", "addr", "del", f"{self.host}/30", "dev", pair.host_left,
                                check=False))  # fmt: skip

    def answered(self) -> bool:
        argv = ("ping", "-c", "1", "-w", "3", self.host)
        return run(*argv, netns=self.netns, check=False).returncode == 0


def test_attached_interface_passes_through_then_forwards_with_no_attach(
    janitor: Janitor, root: str
) -> None:
    pair = Pair(janitor)
    host = HostAddress(janitor, pair)
    with Dataplane(root, session_table_size=SESSIONS) as dp:
        assert dp.attach_interface(pair.host_left)
        assert dp.attach_interface(pair.host_right)
        assert not dp.attach_interface(pair.host_left)  # idempotent
        attached = tcx_of((pair.host_left, pair.host_right))
        assert all(len(links) == 1 for links in attached.values())
        # Before any link: the program runs and lets everything through.
        assert host.answered()
        assert pair.unreachable()

        dp.create_link("p", side_a=[pair.host_left], side_b=[pair.host_right])
        assert tcx_of(attached) == attached  # no attach: maps only
        assert not loader.tcx_pins(dp.pins.link_dir("p"))
        assert pair.ping()  # forwarding from the first packet after the maps were written
        dp.remove_endpoint("p", Side.B, pair.host_right)
        dp.add_endpoint("p", Side.B, pair.host_right)
        assert tcx_of(attached) == attached
        assert pair.ping()

        dp.delete_link("p")
        assert tcx_of(attached) == attached  # still attached...
        assert host.answered()  # ...and passing through again
        assert pair.unreachable()


def test_interface_never_attached_is_attached_by_its_link(janitor: Janitor, root: str) -> None:
    pair = Pair(janitor)
    with Dataplane(root, session_table_size=SESSIONS) as dp:
        dp.create_link("p", side_a=[pair.host_left], side_b=[pair.host_right])
        assert len(tcx_links(pair.host_left)) == 1
        assert pair.ping()
        dp.delete_link("p")
        assert tcx_links(pair.host_left) == {}
        assert not os.path.exists(dp.pins.ifaces_dir)


def test_sync_attaches_present_and_unpins_deleted_interfaces(janitor: Janitor, root: str) -> None:
    keep = janitor.veth(unique("xk"), unique("yk"))[0]
    gone = janitor.veth(unique("xg"), unique("yg"))[0]
    names = {int(Path(f"/sys/class/net/{n}/ifindex").read_text()): n for n in (keep, gone)}
    with Dataplane(root, session_table_size=SESSIONS) as dp:
        attached, removed = dp.sync_interfaces(names)
        assert (sorted(attached), removed) == (sorted(names.values()), [])
        assert dp.sync_interfaces(names) == ([], [])  # nothing to do the second time
        (gone_link,) = tcx_links(gone)
        gone_index = next(i for i, n in names.items() if n == gone)
        run("ip", "link", "del", gone)  # the pod's interface deleted (CNI DEL)
        assert dp.interface_attachments()[gone_index] == 0  # defunct, still pinned
        assert dp.sync_interfaces({i: n for i, n in names.items() if n == keep}) == (
            [],
            [gone_index],
        )
        assert list(dp.interface_attachments()) == [i for i in names if i != gone_index]
        assert not link_exists(gone_link)  # the kernel freed it with its pin
        keep_link = next(iter(tcx_links(keep)))
        dp.destroy()
    assert not link_exists(keep_link)
    assert tcx_links(keep) == {}
    assert not os.path.exists(root)
