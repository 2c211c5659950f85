"""``sfc-k8s dp reset`` removes this node's data plane: attachments, pins, folders.

Behaviours covered:
- a root with two links attached by TCX on real veths and the node's tunnel device: reset
  detaches every attachment (the kernel no longer lists the BPF links), deletes the tunnel
  device, removes every pin and the root, names the links it removed, and a second reset says
  there is nothing to reset (exit 0 both times);
- half-created state (the program pin gone, a link's attachment still pinned): reset still
  detaches the attachment and removes the pins it finds, listing them;
- interfaces that are not attached stay untouched (the veths still exist afterwards).
"""

from __future__ import annotations

import json
import os
import secrets
import time

import pytest

from sfc_k8s.dataplane import Dataplane
from sfc_k8s.dataplane import _libbpf as bpf
from sfc_k8s.dataplane.cli import main
from sfc_k8s.dataplane.loader import Pins
from tests.fixtures.topology import TEST_SESSIONS
from tests.nettools import Janitor, run, unique

pytestmark = pytest.mark.root


def _attachment_ids(root: str) -> set[int]:
    """The kernel ids of the BPF links pinned under ``root``'s link folders."""
    ids = set()
    links_dir = Pins(root).links_dir
    for link in os.listdir(links_dir):
        for entry in os.listdir(os.path.join(links_dir, link)):
            if entry.startswith("tcx_"):
                fd = bpf.obj_get(os.path.join(links_dir, link, entry))
                try:
                    ids.add(bpf.link_info(fd).id)
                finally:
                    os.close(fd)
    return ids


def _kernel_link_ids() -> set[int]:
    return {link["id"] for link in json.loads(run("bpftool", "-j", "link", "show").stdout)}


def _gone(ids: set[int], timeout: float = 5.0) -> set[int]:
    """``ids`` still listed by the kernel after waiting up to ``timeout`` (links free by RCU)."""
    deadline = time.monotonic() + timeout
    while (left := ids & _kernel_link_ids()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _veths(janitor: Janitor, count: int) -> list[str]:
    names = []
    for _ in range(count):
        host = unique("sfcrst")
        janitor.veth(host, unique("sfcrsp"))
        names.append(host)
    return names


def test_reset_removes_links_attachments_and_pins(
    janitor: Janitor, bpffs: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ifs = _veths(janitor, 5)
    tunnel = unique("sfcrtun")
    janitor.add(lambda: run("ip", "link", "del", tunnel, check=False))
    with Dataplane(bpffs, session_table_size=TEST_SESSIONS) as dp:
        dp.create_link("l1", side_a=[ifs[0]], side_b=[ifs[1]])
        dp.create_link("l2", side_a=[ifs[2]], side_b=[ifs[3]])
        dp.ensure_tunnel(ifname=tunnel, port=secrets.randbelow(20000) + 30000)
    assert os.path.exists(f"/sys/class/net/{tunnel}")
    attached = _attachment_ids(bpffs)
    assert len(attached) == 4
    assert attached <= _kernel_link_ids()

    assert main(["--bpffs-root", bpffs, "reset"]) == 0
    out = capsys.readouterr().out
    assert "removed 2 link(s): l1, l2" in out
    assert f"{bpffs} removed" in out
    assert not os.path.exists(bpffs)
    assert not _gone(attached)
    assert not os.path.exists(f"/sys/class/net/{tunnel}")
    assert all(os.path.exists(f"/sys/class/net/{name}") for name in ifs)

    assert main(["--bpffs-root", bpffs, "reset"]) == 0
    assert capsys.readouterr().out == f"nothing to reset: {bpffs} does not exist\n"


def test_reset_removes_half_created_state(
    janitor: Janitor, bpffs: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ifs = _veths(janitor, 2)
    with Dataplane(bpffs, session_table_size=TEST_SESSIONS) as dp:
        dp.create_link("l1", side_a=[ifs[0]], side_b=[ifs[1]])
    attached = _attachment_ids(bpffs)
    os.unlink(Pins(bpffs).program)  # as if a crash happened half-way through a teardown

    assert main(["--bpffs-root", bpffs, "reset"]) == 0
    out = capsys.readouterr().out
    assert "stray pin(s): " in out
    assert "links/l1/info" in out
    assert not os.path.exists(bpffs)
    assert not _gone(attached)
