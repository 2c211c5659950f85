"""The program on a pod's host interface from its creation to its deletion, through the real
``sfc-cni`` and the agent's interface watch (``agent_ifaces.InterfaceWatch``, rtnetlink events):

- ADD: the host end the plugin creates runs the node's program (one TCX link, pinned under
  ``ifaces/``) before any link names it, and a link made of it then attaches nothing more;
- DEL: its pin is removed as the interface goes, the kernel's link is freed, nothing is left
  pinned under ``ifaces/``;
- a watch started after interfaces came and went catches up (``resync``): the present ones are
  attached (one per turn of the event loop), a deleted one's pin removed, nothing attached twice.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sfc_k8s.api.naming import host_ifname
from sfc_k8s.dataplane import Dataplane
from sfc_k8s.dataplane import _libbpf as bpf
from sfc_k8s.operator.agent_ifaces import InterfaceWatch
from tests.fixtures.cni import Cni, l2_conf
from tests.nettools import Janitor, private_bpffs_root, run, unique

pytestmark = pytest.mark.root


@pytest.fixture
def dp(janitor: Janitor) -> Iterator[Dataplane]:
    root = private_bpffs_root()

    def destroy() -> None:
        if os.path.exists(root):
            with Dataplane(root) as fresh:
                fresh.destroy()

    janitor.add(destroy)
    with Dataplane(root, session_table_size=4096) as dataplane:
        yield dataplane


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def pod(cni_path: Path, janitor: Janitor) -> tuple[Cni, dict[str, object], str]:
    """A pod namespace and its ADD context; DEL'd by the janitor whatever happens."""
    netns = janitor.netns("sfcat")
    uid = unique("uid", 20)
    args = {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": netns}
    args["K8S_POD_UID"] = uid
    cni = Cni(cni_path, container_id=unique("ctr", 24), netns=netns, args=args)
    conf = l2_conf("1.1.0", macSeed=unique("nf", 20) + "/eth1")
    janitor.add(lambda: cni("DEL", conf))
    return cni, conf, host_ifname(uid, "eth1")


def run_until(loop: asyncio.AbstractEventLoop, what: str, probe: Callable[[], bool]) -> None:
    """Let the watch handle events until ``probe`` holds (5 s at most)."""
    for _ in range(500):
        if probe():
            return
        loop.run_until_complete(asyncio.sleep(0.01))
    pytest.fail(f"timed out waiting for {what}")


def test_pod_interface_runs_the_program_from_add_to_del(
    cni_path: Path, janitor: Janitor, dp: Dataplane, loop: asyncio.AbstractEventLoop
) -> None:
    cni, conf, host = pod(cni_path, janitor)
    watch = InterfaceWatch(dp, wanted=lambda name: name == host)  # this test's interface only
    watch.start(loop)
    janitor.add(watch.stop)

    cni.ok("ADD", conf)
    ifindex = socket.if_nametoindex(host)
    pin = dp.pins.interface_attachment(ifindex)
    run_until(loop, "the attach", lambda: os.path.exists(pin))
    (link_id,) = bpf.tcx_links(ifindex)
    assert watch.attached == 1

    peer = janitor.veth(unique("xp"), unique("yp"))[0]
    dp.create_link("p", side_a=[host], side_b=[peer])
    assert list(bpf.tcx_links(ifindex)) == [link_id]  # the link wrote maps, attached nothing
    dp.delete_link("p")

    cni.ok("DEL", conf)
    run_until(loop, "the pin removed", lambda: not os.path.exists(pin))
    assert dp.interface_attachments() == {}
    assert run("bpftool", "link", "show", "id", str(link_id), check=False).returncode != 0


def test_watch_catches_up_with_interfaces_that_came_and_went(
    cni_path: Path, janitor: Janitor, dp: Dataplane, loop: asyncio.AbstractEventLoop
) -> None:
    (cni_a, conf_a, host_a), (cni_b, conf_b, host_b) = (
        pod(cni_path, janitor),
        pod(cni_path, janitor),
    )
    cni_a.ok("ADD", conf_a)
    cni_b.ok("ADD", conf_b)
    mine = {host_a, host_b}
    first = InterfaceWatch(dp, wanted=mine.__contains__)
    first.start(loop)
    gone = socket.if_nametoindex(host_b)
    both = {socket.if_nametoindex(host_a), gone}
    run_until(loop, "both attached", lambda: set(dp.interface_attachments()) == both)
    assert first.attached == 2
    first.stop()  # the agent stops: both stay attached and pinned

    cni_b.ok("DEL", conf_b)  # while no agent runs
    assert dp.interface_attachments()[gone] == 0  # defunct, still pinned
    second = InterfaceWatch(dp, wanted=mine.__contains__)
    second.start(loop)
    janitor.add(second.stop)
    loop.run_until_complete(asyncio.sleep(0.05))  # whatever it scheduled has run
    assert dp.interface_attachments() == {
        socket.if_nametoindex(host_a): socket.if_nametoindex(host_a)
    }
    assert second.attached == 0  # nothing attached twice
