"""The tunnel's send path under BPF_PROG_TEST_RUN, and what the receive program refuses.

Send (a flow entering from a local endpoint whose Maglev choice is remote): the program sets
the tunnel key and redirects to the tunnel device (TC_ACT_REDIRECT), counts the packet on the
remote endpoint and records the session naming it; a new device without an MTU given is
sized for a 1500-byte underlay; with no tunnel configured the packet is
dropped as NO_TUNNEL, and one too large for the tunnel's MTU once encapsulated as TOO_BIG
(never redirected to be lost further on). New flows spread over local and remote endpoints as
Maglev over the stable ids says; a draining remote endpoint keeps its flows and gets no new
ones; a removed one's flows re-pick. The known nodes count the remote endpoints on each.
Local interfaces larger than the tunnel's MTU are reported for a link that spans nodes, also
by a process that entered a node's network namespace with the host's sysfs (as the local
cluster's agents run).

Receive: BPF_PROG_TEST_RUN cannot give a frame tunnel metadata (the kernel attaches it only to
a packet the VXLAN device decapsulated, as a metadata dst), so here only a frame without it is
checked (dropped, counted as TUNNEL_NO_KEY on the node); delivery, the reverse session and
the checks on forged keys (unknown node, unknown link, wrong ids) run on real traffic in
tests/integration/dataplane/test_multinode.py.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import random
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sfc_k8s.dataplane import (
    Dataplane,
    DropReason,
    EndpointExists,
    EndpointSpec,
    Side,
    maglev,
    maps,
    structs,
)
from sfc_k8s.dataplane import _libbpf as bpf
from sfc_k8s.dataplane.flow import flow_hash, make_key
from sfc_k8s.dataplane.structs import FlowKind
from sfc_k8s.operator.agent import config_from_args
from tests.bpf.conftest import SESSIONS, private_root
from tests.bpf.harness import SKB_IFINDEX_OFFSET, TC_ACT_REDIRECT, TC_ACT_SHOT
from tests.fixtures import frames as f
from tests.nettools import Janitor, unique
from tests.nettools import run as command

NODE2 = "10.250.0.2"
CID = 9


@dataclass
class Tunnel:
    dp: Dataplane
    ifs: dict[str, str]
    device: str
    port: int


@pytest.fixture
def tun(janitor: Janitor) -> Iterator[Tunnel]:
    root = private_root()
    ifs = {r: janitor.veth(unique(f"u{r}"), unique(f"w{r}"), up=False)[0] for r in ("a", "b")}
    dp = Dataplane(root, session_table_size=SESSIONS)

    def teardown() -> None:
        dp.close()
        with Dataplane(root) as fresh:
            fresh.destroy()

    janitor.add(teardown)
    dp.create_link(
        "x",
        side_a=[EndpointSpec(ifname=ifs["a"], id=1)],
        side_b=[EndpointSpec(ifname=ifs["b"], id=2), EndpointSpec(node=NODE2, id=3)],
        cluster_id=CID,
    )
    yield Tunnel(dp, ifs, unique("sfctvx"), random.randrange(20000, 60000))


def tcp(n: int, size: int = 16) -> bytes:
    return f.eth(f.ETH_IP, f.ipv4("10.1.0.1", "10.2.0.1", f.TCP, f.l4(n, 80, b"x" * size)))


def key(n: int) -> structs.FlowKey:
    return make_key(0, FlowKind.L4_V4, "10.1.0.1", "10.2.0.1", proto=f.TCP, sport=n, dport=80)


def run(dp: Dataplane, ifname: str, frame: bytes) -> int:
    ctx = bytearray(SKB_IFINDEX_OFFSET + 4)
    struct.pack_into("<I", ctx, SKB_IFINDEX_OFFSET, socket.if_nametoindex(ifname))
    return bpf.prog_test_run(dp.program_fd, frame, ctx=bytes(ctx)).retval


def tx(dp: Dataplane) -> dict[int, int]:
    return {e.id: e.counters.tx_packets for e in dp.status("x").side(Side.B)}


def expected(dp: Dataplane, n: int, ids: list[int]) -> int:
    table = maglev.build_table({maglev.endpoint_name(CID, i): i for i in ids})
    return table[flow_hash(key(n), link_cid=CID) % structs.MAGLEV_SIZE]


def remote_flow(dp: Dataplane, ids: list[int]) -> int:
    return next(n for n in range(1, 10000) if expected(dp, n, ids) == 3)


def test_remote_choice_is_encapsulated_and_recorded(tun: Tunnel) -> None:
    tun.dp.ensure_tunnel(ifname=tun.device, port=tun.port)
    picks = {2: 0, 3: 0}
    for n in range(1, 201):
        before = tx(tun.dp)
        assert run(tun.dp, tun.ifs["a"], tcp(n)) == TC_ACT_REDIRECT
        moved = [i for i, c in tx(tun.dp).items() if c != before[i]]
        assert moved == [expected(tun.dp, n, [2, 3])]
        picks[moved[0]] += 1
    assert min(picks.values()) > 60  # spread over the local and the remote endpoint
    # Each session names the endpoint its flow went to, the remote one as #ID@NODE.
    b_name = {2: tun.ifs["b"], 3: f"#3@{NODE2}"}
    sessions = {s.port_lo: s.b_ifname for s in tun.dp.sessions("x")}
    assert sessions == {n: b_name[expected(tun.dp, n, [2, 3])] for n in range(1, 201)}
    drops = tun.dp.status("x").drops
    assert drops[DropReason.NO_TUNNEL] == drops[DropReason.TOO_BIG] == 0


def test_without_a_tunnel_remote_choices_are_dropped(tun: Tunnel) -> None:
    n = remote_flow(tun.dp, [2, 3])
    assert run(tun.dp, tun.ifs["a"], tcp(n)) == TC_ACT_SHOT
    assert tun.dp.status("x").drops[DropReason.NO_TUNNEL] == 1
    assert tx(tun.dp)[3] == 0


def test_a_new_tunnel_fits_a_1500_byte_underlay(tun: Tunnel) -> None:
    """Without an MTU the device is sized for the common underlay (1500 - 50): the kernel
    would give a VXLAN device without a lower device 1500, and every full-size frame would
    then leave the node 50 bytes too large for the underlay, dropped where no counter of ours
    sees it. An adopted device keeps the MTU it has."""
    assert tun.dp.ensure_tunnel(ifname=tun.device, port=tun.port).mtu == 1450
    assert tun.dp.ensure_tunnel(ifname=tun.device, port=tun.port, mtu=8950).mtu == 8950
    assert tun.dp.ensure_tunnel(ifname=tun.device, port=tun.port).mtu == 8950


def test_the_agent_resizes_a_tunnel_an_older_agent_left_at_1500(
    tun: Tunnel, janitor: Janitor, caplog: pytest.LogCaptureFixture
) -> None:
    """Agents before the 1450 default created the device at the kernel's 1500: the agent's
    default configuration sets its tunnel MTU on the device it adopts, and logs the change."""
    command(
        "ip",
        "link",
        "add",
        tun.device,
        "type",
        "vxlan",
        "external",
        "gbp",
        "dstport",
        str(tun.port),
    )
    janitor.add(
        lambda: subprocess.run(["ip", "link", "del", tun.device], check=False, capture_output=True)
    )
    config = config_from_args(["--node", "n1"])
    with caplog.at_level(logging.INFO, logger="sfc_k8s.dataplane.tunnel"):
        status = tun.dp.ensure_tunnel(ifname=tun.device, port=tun.port, mtu=config.tunnel_mtu)
    assert status.mtu == 1450
    assert f"tunnel device {tun.device!r}: MTU 1500 -> 1450 (adopted)" in caplog.text


def test_frames_too_big_for_the_tunnel_are_counted(tun: Tunnel) -> None:
    status = tun.dp.ensure_tunnel(ifname=tun.device, port=tun.port, mtu=1000)
    assert status.mtu == 1000
    n = remote_flow(tun.dp, [2, 3])
    # 14 + 1000 bytes fit the device exactly; one more byte does not.
    fits = tcp(n, size=1000 - 20 - 20)
    assert len(fits) == 14 + 1000
    assert run(tun.dp, tun.ifs["a"], fits) == TC_ACT_REDIRECT
    assert run(tun.dp, tun.ifs["a"], tcp(n, size=1000 - 20 - 20 + 1)) == TC_ACT_SHOT
    assert tun.dp.status("x").drops[DropReason.TOO_BIG] == 1
    assert tx(tun.dp)[3] == 1


def test_draining_and_removed_remote_endpoints(tun: Tunnel) -> None:
    tun.dp.ensure_tunnel(ifname=tun.device, port=tun.port)
    pinned = remote_flow(tun.dp, [2, 3])
    assert run(tun.dp, tun.ifs["a"], tcp(pinned)) == TC_ACT_REDIRECT
    tun.dp.drain_endpoint("x", Side.B, endpoint_id=3)
    # The pinned flow stays; a new flow that would have gone to 3 goes to 2.
    before = tx(tun.dp)
    assert run(tun.dp, tun.ifs["a"], tcp(pinned)) == TC_ACT_REDIRECT
    other = next(n for n in range(pinned + 1, 10000) if expected(tun.dp, n, [2, 3]) == 3)
    assert run(tun.dp, tun.ifs["a"], tcp(other)) == TC_ACT_REDIRECT
    after = tx(tun.dp)
    assert (after[3] - before[3], after[2] - before[2]) == (1, 1)
    # Removed: its flows re-pick (the only one left is 2).
    tun.dp.remove_endpoint("x", Side.B, endpoint_id=3)
    before = tx(tun.dp)
    assert run(tun.dp, tun.ifs["a"], tcp(pinned)) == TC_ACT_REDIRECT
    assert tx(tun.dp)[2] == before[2] + 1


def test_receive_program_drops_frames_without_a_tunnel_key(tun: Tunnel) -> None:
    tun.dp.ensure_tunnel(ifname=tun.device, port=tun.port)
    result = bpf.prog_test_run(tun.dp.tunnel_program_fd, tcp(1))
    assert result.retval == TC_ACT_SHOT
    assert tun.dp.tunnel_drops()[DropReason.TUNNEL_NO_KEY] == 1
    assert tun.dp.status("x").sessions == 0


def test_tunnel_is_adopted_and_removed(tun: Tunnel) -> None:
    first = tun.dp.ensure_tunnel(ifname=tun.device, port=tun.port, udp_csum=False)
    with Dataplane(tun.dp.root) as again:
        assert again.tunnel() == first
        assert again.ensure_tunnel(ifname=tun.device, port=tun.port, udp_csum=False) == first
    assert not first.udp_csum
    tun.dp.remove_tunnel()
    assert tun.dp.tunnel() is None
    with pytest.raises(OSError):
        socket.if_nametoindex(tun.device)


def known_nodes(dp: Dataplane) -> dict[str, int]:
    fd = dp.map_fd(structs.MAP_NODES)
    return {
        socket.inet_ntoa(k.value.to_bytes(4, "little")): v.value
        for k, v in maps.walk(fd, ctypes.c_uint32, ctypes.c_uint32)
    }


def test_known_nodes_count_their_remote_endpoints(tun: Tunnel) -> None:
    """The receive path accepts a node's packets only while it holds a remote endpoint."""
    assert known_nodes(tun.dp) == {NODE2: 1}
    tun.dp.add_endpoint("x", Side.A, node=NODE2, endpoint_id=4)
    tun.dp.add_endpoint("x", Side.A, node="10.250.0.3", endpoint_id=5)
    assert known_nodes(tun.dp) == {NODE2: 2, "10.250.0.3": 1}
    with pytest.raises(EndpointExists):
        tun.dp.add_endpoint("x", Side.A, node="10.250.0.4", endpoint_id=5)
    tun.dp.remove_endpoint("x", Side.B, endpoint_id=3)
    tun.dp.remove_endpoint("x", Side.A, endpoint_id=5)
    assert known_nodes(tun.dp) == {NODE2: 1}
    tun.dp.delete_link("x")
    assert known_nodes(tun.dp) == {}


def test_interfaces_too_large_for_the_tunnel_are_reported(tun: Tunnel) -> None:
    tun.dp.ensure_tunnel(ifname=tun.device, port=tun.port, mtu=1450)
    assert tun.dp.oversized("x") == {tun.ifs["a"]: 1500, tun.ifs["b"]: 1500}
    command("ip", "link", "set", tun.ifs["a"], "mtu", "1450")
    assert tun.dp.oversized("x") == {tun.ifs["b"]: 1500}
    tun.dp.remove_endpoint("x", Side.B, endpoint_id=3)  # no longer spans nodes
    assert tun.dp.oversized("x") == {}


OVERSIZED_IN_NETNS = """
import json, sys
from sfc_k8s.dataplane import Dataplane, EndpointSpec
root, a, b, device, port = sys.argv[1:6]
with Dataplane(root) as dp:
    try:
        dp.create_link("x", side_a=[EndpointSpec(ifname=a, id=1)], cluster_id=9,
                       side_b=[EndpointSpec(ifname=b, id=2), EndpointSpec(node="10.250.0.2", id=3)])
        dp.ensure_tunnel(ifname=device, port=int(port), mtu=1450)
        print(json.dumps(dp.oversized("x")))
    finally:
        dp.destroy()
"""


def test_interfaces_too_large_are_reported_from_inside_a_network_namespace(
    janitor: Janitor,
) -> None:
    """``nsenter --net`` keeps the host's sysfs, whose /sys/class/net lists the host's
    interfaces: the MTUs must be read in the process's own namespace."""
    ns = janitor.netns()
    a = janitor.veth(unique("ua"), unique("wa"), a_netns=ns, b_netns=ns, up=False)[0]
    b = janitor.veth(unique("ub"), unique("wb"), a_netns=ns, b_netns=ns, up=False)[0]
    command("ip", "link", "set", b, "mtu", "1450", netns=ns)
    root = private_root()
    janitor.add(lambda: os.path.exists(root) and command("rm", "-rf", root))
    argv = [sys.executable, "-c", OVERSIZED_IN_NETNS, root, a, b, unique("sfctvx"),
            str(random.randrange(20000, 60000))]  # fmt: skip
    done = subprocess.run(
        ["nsenter", f"--net=/run/netns/{ns}", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {a: 1500}
