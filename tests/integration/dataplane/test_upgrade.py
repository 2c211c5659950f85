"""Program upgrade in place: a data plane opened with another build of the eBPF object replaces
the pinned programs on every attached interface, under traffic, keeping the state.

The "other build" is the shipped source compiled with test-only switches
(``tests/fixtures/builds.py``): ``SFC_TEST_COUNT`` makes both programs count their packets in a
map of their own, so the tests prove by traffic that the new code is what runs.

Behaviours covered:
- with TCX links and with the clsact fallback: the pinned state is built by the shipped
  object; 8 established TCP flows (every byte echoed), a paced UDP stream and batches of new
  UDP flows run; a manager with the counting build opens the root: every one of the chain's
  8 interfaces runs the new program (the kernel's program id on each TCX link / tc filter),
  the new program counts packets, no TCP flow breaks, no datagram of the stream or of the
  new flows is lost, and the established flows keep their sessions (same replica, same
  session table);
- a layout change is refused: a build with one more field in ``struct sfc_session`` gets an
  error naming both session tables and the size change; the old program stays on every
  interface, the pins are untouched and the stream loses nothing;
- migrations: a build whose IPv4 flow cache and known-nodes map are twice as large: the cache
  is a new, empty map, the nodes map a new map holding the old entries, the session table the
  same map as before; the stream loses nothing;
- a swap failing half-way (on the last interface: its TCX link made to run another program,
  so the kernel's replace-if-still-running check fails, or its clsact filter made again for
  IPv4 only, which the kernel refuses to replace with one for every protocol) undoes the
  swaps already made: every other interface runs the old program again, nothing of the new
  build stays pinned;
- the tunnel's receive program is upgraded too: three nodes, a UDP stream crossing them, each
  node's manager re-opened with the counting build in turn: no datagram lost, every tunnel
  device runs the new receive program and it counts the packets it receives;
- ``sfc-k8s dp`` (a new process, the shipped build) opening pins of the counting build
  replaces them, says so in one line on stderr, and adopts silently the next time; pins with
  no recorded identity (made by the release before identities) count as another build.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sfc_k8s.dataplane import Dataplane, structs
from sfc_k8s.dataplane import _libbpf as bpf
from sfc_k8s.dataplane.errors import BpfError
from sfc_k8s.dataplane.loader import Pins
from sfc_k8s.dataplane.upgrade import MapAction, UpgradeRefusedError, recorded_identity
from tests.fixtures import builds
from tests.fixtures.flows import LiveFlows, Server, run_flows
from tests.fixtures.topology import REPO, TEST_SESSIONS, Chain, ChainLinks
from tests.integration.dataplane.multinode import Cluster
from tests.integration.dataplane.tracking import flow_paths
from tests.nettools import Janitor, unique

pytestmark = pytest.mark.root

TCP, UDP = 6, 17
TCP_PORT, STREAM_PORT, NEW_FLOWS_PORT = 7300, 7301, 7302


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("builds")


def _destroy(root: str) -> None:
    with Dataplane(root, upgrade=False) as dp:
        dp.destroy()


def _interfaces(chain: Chain) -> list[str]:
    ends = [chain.client_host, chain.server_host]
    return ends + [name for r in chain.replicas for name in (r.eth1_host, r.eth2_host)]


def _tc_program(ifname: str) -> int:
    out = subprocess.run(["tc", "-j", "filter", "show", "dev", ifname, "ingress"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    ids = [f["options"]["prog"]["id"] for f in json.loads(out) if "prog" in f.get("options", {})]
    assert len(ids) == 1, out
    return int(ids[0])


def _tcx_programs(folder: str) -> dict[int, int]:
    """ifindex -> program id, of every TCX link pinned under ``folder``."""
    found = {}
    for path, _, files in os.walk(folder):
        for name in (n for n in files if n.startswith("tcx_")):
            fd = bpf.obj_get(os.path.join(path, name))
            try:
                found[int(name[4:])] = int(bpf.link_info(fd).prog_id)
            finally:
                os.close(fd)
    return found


def running(root: str, chain: Chain, mode: str) -> dict[str, int]:
    """Interface -> id of the program at its ingress, as the kernel says."""
    if mode == "tc":
        return {name: _tc_program(name) for name in _interfaces(chain)}
    return {
        socket.if_indextoname(i): p for i, p in _tcx_programs(os.path.join(root, "links")).items()
    }


def _pins(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(p, n), root)
                  for p, dirs, files in os.walk(root) for n in files + dirs)  # fmt: skip


class NewFlows(threading.Thread):
    """Batches of 20 new UDP flows (3 datagrams each, every one echoed) one after another."""

    def __init__(self, netns: str, server: str) -> None:
        super().__init__(daemon=True)
        self.netns, self.server = netns, server
        self.reports: list[dict[str, Any]] = []
        self.error: Exception | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        sport = 40000
        try:
            while not self.stopping.is_set():
                self.reports.append(run_flows(
                    self.netns, "udp-flows", "--server", self.server, "--port",
                    str(NEW_FLOWS_PORT), "--flows", "20", "--base", "3", "--sport-base",
                    str(sport)))  # fmt: skip
                sport += 20
        except Exception as err:  # reported by finish()
            self.error = err

    def wait_for(self, batches: int) -> None:
        deadline = time.monotonic() + 30
        while len(self.reports) < batches and self.error is None and time.monotonic() < deadline:
            time.sleep(0.05)

    def finish(self) -> list[dict[str, Any]]:
        self.stopping.set()
        self.join(timeout=30)
        if self.error is not None:
            raise self.error
        return self.reports


def _assert_stream_lossless(report: dict[str, Any]) -> None:
    assert report["bad"] == 0
    for flow in report["flows"]:
        assert flow["sent"] > 0, flow
        assert flow["missing"] == [] and flow["echoed"] == flow["sent"], flow


def _stream(janitor: Janitor, chain: Chain) -> LiveFlows:
    return LiveFlows.start(janitor, chain.client_ns, "udp-stream", "--server",
                           chain.addressing.server_ip, "--port", str(STREAM_PORT), "--flows", "4",
                           "--rate", "1000", "--sport-base", "34000")  # fmt: skip


@pytest.mark.parametrize("mode", ["tcx", "tc"])
def test_upgrade_under_traffic_runs_the_new_code_everywhere_and_breaks_no_flow(
    janitor: Janitor, bpffs: str, build_dir: Path, mode: str
) -> None:
    counting = builds.build(build_dir, builds.COUNT)
    chain = Chain.build(janitor, replicas=3, ipv6=False)
    chain.set_static_neighbours()
    janitor.add(lambda: _destroy(bpffs))  # runs before the namespaces go
    a = chain.addressing
    for mode_, port in (("tcp-echo", TCP_PORT), ("udp-echo", STREAM_PORT),
                        ("udp-echo", NEW_FLOWS_PORT)):  # fmt: skip
        Server.start(janitor, chain.server_ns, mode_, port)
    with Dataplane(bpffs, session_table_size=TEST_SESSIONS, attach_mode=mode) as old:
        links = ChainLinks.create(old, chain)
        old_prog = builds.prog_id(old.pins.program)
        sessions_map = bpf.map_info(old.map_fd(structs.MAP_SESSIONS4)).id
        assert builds.COUNTER_MAP not in builds.program_maps(old.program_fd)
        tcp = LiveFlows.start(janitor, chain.client_ns, "tcp-flows", "--server", a.server_ip,
                              "--port", str(TCP_PORT), "--flows", "8", "--interval", "20",
                              "--sport-base", "36000")  # fmt: skip
        stream = _stream(janitor, chain)
        new_flows = NewFlows(chain.client_ns, a.server_ip)
        new_flows.start()
        new_flows.wait_for(1)
        tcp_paths = flow_paths(links, TCP, TCP_PORT)
    before = running(bpffs, chain, mode)
    assert sorted(before) == sorted(_interfaces(chain))
    assert set(before.values()) == {old_prog}

    with Dataplane(bpffs, object_path=counting, attach_mode=mode) as new:
        assert new.opened.action == "upgraded", new.opened
        assert new.opened.interfaces == 8
        assert set(new.opened.maps.values()) == {MapAction.REUSE}
        new_prog = builds.prog_id(new.pins.program)
        counted = builds.counted_packets(new.pins.program)[0]
        new_flows.wait_for(len(new_flows.reports) + 2)  # batches wholly after the upgrade
        assert builds.counted_packets(new.pins.program)[0] > counted
        assert set(running(bpffs, chain, mode).values()) == {new_prog} != {old_prog}
        assert bpf.map_info(new.map_fd(structs.MAP_SESSIONS4)).id == sessions_map
        # The established flows kept their sessions: each on the replica it had.
        assert flow_paths(ChainLinks(new, chain, links.link1, links.link2), TCP, TCP_PORT) == (
            tcp_paths
        )

    for flow in tcp.stop()["flows"]:
        assert flow["error"] is None and flow["exchanges"] > 0, flow
    _assert_stream_lossless(stream.stop())
    reports = new_flows.finish()
    assert len(reports) >= 3
    for report in reports:
        _assert_stream_lossless(report)


def test_a_session_layout_change_is_refused_and_the_old_program_keeps_forwarding(
    janitor: Janitor, bpffs: str, build_dir: Path
) -> None:
    padded = builds.build(build_dir, builds.SESSION_PAD)
    chain = Chain.build(janitor, replicas=2, ipv6=False)
    janitor.add(lambda: _destroy(bpffs))
    Server.start(janitor, chain.server_ns, "udp-echo", STREAM_PORT)
    with Dataplane(bpffs, session_table_size=TEST_SESSIONS) as old:
        ChainLinks.create(old, chain)
        old_prog = builds.prog_id(old.pins.program)
        identity = recorded_identity(old.pins)
    stream = _stream(janitor, chain)
    pins = _pins(bpffs)

    with pytest.raises(UpgradeRefusedError) as refused:
        Dataplane(bpffs, object_path=padded)
    message = str(refused.value)
    assert "\n" not in message
    for table in (structs.MAP_SESSIONS4, structs.MAP_SESSIONS):
        assert f"{table} (struct sfc_session): value size 16 -> 20" in message
    assert "keep running" in message

    assert set(running(bpffs, chain, "tcx").values()) == {old_prog}
    assert _pins(bpffs) == pins
    with Dataplane(bpffs) as same:  # the shipped build: adopted as it is
        assert same.opened.action == "adopted"
        assert recorded_identity(same.pins) == identity
        assert builds.prog_id(same.pins.program) == old_prog
    _assert_stream_lossless(stream.stop())


def test_a_grown_cache_is_rebuilt_and_a_grown_user_map_copied(
    janitor: Janitor, bpffs: str, build_dir: Path
) -> None:
    migrating = builds.build(build_dir, builds.MIGRATING)
    chain = Chain.build(janitor, replicas=2, ipv6=False)
    janitor.add(lambda: _destroy(bpffs))
    Server.start(janitor, chain.server_ns, "udp-echo", STREAM_PORT)
    node = socket.inet_aton("10.9.8.7")
    with Dataplane(bpffs, session_table_size=TEST_SESSIONS) as old:
        ChainLinks.create(old, chain)
        # An entry as the manager writes one per remote endpoint's node (its count of them).
        nodes_fd = old.map_fd(structs.MAP_NODES)
        bpf.map_update(
            nodes_fd, ctypes.c_uint32(int.from_bytes(node, "little")), ctypes.c_uint32(3)
        )
        ids = {n: bpf.map_info(old.map_fd(n)).id for n in structs.NODE_MAPS}
    stream = _stream(janitor, chain)

    with Dataplane(bpffs, object_path=migrating) as new:
        changed = {n: a for n, a in new.opened.maps.items() if a != MapAction.REUSE}
        assert changed == {
            structs.MAP_FLOW_CACHE4: MapAction.FRESH,
            structs.MAP_NODES: MapAction.COPY,
        }
        for name in structs.NODE_MAPS:
            info = bpf.map_info(new.map_fd(name))
            assert (info.id == ids[name]) == (name not in changed), name
        cache = bpf.map_info(new.map_fd(structs.MAP_FLOW_CACHE4))
        assert cache.max_entries == 2 * structs.FLOW_CACHE_SIZE
        nodes = new.map_fd(structs.MAP_NODES)
        assert bpf.map_info(nodes).max_entries == 2 * structs.MAX_IFACES
        count = ctypes.c_uint32()
        assert bpf.map_lookup(nodes, ctypes.c_uint32(int.from_bytes(node, "little")), count)
        assert count.value == 3
        time.sleep(0.3)
        assert builds.counted_packets(new.pins.program)[0] > 0
    _assert_stream_lossless(stream.stop())


def _tamper(dp: Dataplane, links: ChainLinks, ifname: str, mode: str) -> None:
    """Make the swap fail on ``ifname``: its TCX link made to run another program (the
    tunnel's), so the kernel's replace-if-still-running check fails; or its clsact filter
    made again for IPv4 only (the same program), which a replacement for every protocol at
    its priority is refused ("Protocol mismatch")."""
    if mode == "tcx":
        fd = bpf.obj_get(dp.pins.attachment(links.link2, socket.if_nametoindex(ifname)))
        try:
            bpf.link_update(fd, dp.tunnel_program_fd, old_prog_fd=dp.program_fd)
        finally:
            os.close(fd)
        return
    where = ["dev", ifname, "ingress", "pref", "49152"]
    subprocess.run(["tc", "filter", "del", *where], check=True)
    subprocess.run(["tc", "filter", "add", *where, "protocol", "ip", "handle", "1", "bpf", "da",
                    "pinned", dp.pins.program], check=True)  # fmt: skip


@pytest.mark.parametrize("mode", ["tcx", "tc"])
def test_a_swap_failing_half_way_is_undone(
    janitor: Janitor, bpffs: str, build_dir: Path, mode: str
) -> None:
    counting = builds.build(build_dir, builds.COUNT)
    chain = Chain.build(janitor, replicas=2, ipv6=False)
    janitor.add(lambda: _destroy(bpffs))
    # The fault on the interface swapped last (attachments go by ifindex), so that swaps
    # made before it have to be undone.
    last = max(_interfaces(chain), key=socket.if_nametoindex)
    with Dataplane(bpffs, session_table_size=TEST_SESSIONS, attach_mode=mode) as old:
        links = ChainLinks.create(old, chain)
        old_prog = builds.prog_id(old.pins.program)
        identity = recorded_identity(old.pins)
        tunnel_prog = builds.prog_id(old.pins.tunnel_program)
        _tamper(old, links, last, mode)
    pins = _pins(bpffs)

    with pytest.raises(BpfError) as failed:
        Dataplane(bpffs, object_path=counting, attach_mode=mode)
    if mode == "tcx":
        assert failed.value.errno == errno.EPERM
        after = running(bpffs, chain, mode)
        assert after.pop(last) == tunnel_prog
    else:
        assert f"failed to replace the tc filter of {last!r}" in str(failed.value)
        after = running(bpffs, chain, mode)
        assert after.pop(last) == old_prog  # the tampered filter, untouched
    assert len(after) == 5
    assert set(after.values()) == {old_prog}
    assert _pins(bpffs) == pins
    assert recorded_identity(Pins(bpffs)) == identity
    assert builds.prog_id(Pins(bpffs).program) == old_prog


def test_the_tunnel_receive_program_is_upgraded_on_every_node(
    janitor: Janitor, build_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = builds.build(build_dir, builds.COUNT)
    cluster = Cluster.build(janitor, ipv6=False)
    cluster.set_static_neighbours()
    cluster.program()
    assert cluster.client is not None and cluster.server is not None
    Server.start(janitor, cluster.server.netns, "udp-echo", STREAM_PORT)
    stream = LiveFlows.start(janitor, cluster.client.netns, "udp-stream", "--server",
                             cluster.addressing.server_ip, "--port", str(STREAM_PORT), "--flows",
                             "6", "--rate", "1000", "--sport-base", "34000")  # fmt: skip
    old = {n.root: builds.prog_id(os.path.join(n.root, structs.PROG_TUNNEL)) for n in cluster.nodes}
    monkeypatch.setenv("SFC_TEST_OBJECT", str(counting))
    for node in cluster.nodes:
        node.dp("report")  # a new process with the new build opens the node's root
    time.sleep(0.5)
    report = stream.stop()
    _assert_stream_lossless(report)
    received = 0
    for node in cluster.nodes:
        tunnel_prog = os.path.join(node.root, structs.PROG_TUNNEL)
        new = builds.prog_id(tunnel_prog)
        assert new != old[node.root]
        assert set(_tcx_programs(os.path.join(node.root, "tunnel")).values()) == {new}
        received += builds.counted_packets(tunnel_prog)[1]
    assert received > 0  # replies and requests crossed nodes through the new receive program


def test_a_dp_call_of_another_build_upgrades_the_node_and_says_so(
    janitor: Janitor, bpffs: str, build_dir: Path
) -> None:
    """The pins are made by the counting build; ``sfc-k8s dp show`` (the shipped build, a new
    process) replaces the programs before it reads, and says so on stderr."""
    counting = builds.build(build_dir, builds.COUNT)
    chain = Chain.build(janitor, replicas=1, ipv6=False)
    janitor.add(lambda: _destroy(bpffs))
    with Dataplane(bpffs, session_table_size=TEST_SESSIONS, object_path=counting) as first:
        ChainLinks.create(first, chain)
        counting_prog = builds.prog_id(first.pins.program)
    env = {**os.environ, "SFC_K8S_BPFFS_ROOT": bpffs}
    show = [str(REPO / ".venv" / "bin" / "sfc-k8s"), "dp", "show"]
    done = subprocess.run(show, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("sfc-k8s dp: upgraded the programs on 4 interface(s) in "), (
        done.stderr
    )
    shipped_prog = builds.prog_id(Pins(bpffs).program)
    assert shipped_prog != counting_prog
    assert set(running(bpffs, chain, "tcx").values()) == {shipped_prog}
    with pytest.raises(KeyError):  # the shipped build counts nothing
        builds.counted_packets(Pins(bpffs).program)
    again = subprocess.run(show, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0 and again.stderr == ""  # the same build: adopted
    # Pins made before build identities were recorded (the release before this one): another build.
    os.unlink(os.path.join(bpffs, structs.BUILD_MAP))
    older = subprocess.run(show, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert older.returncode == 0 and "upgraded the programs on 4 interface(s)" in older.stderr
    assert recorded_identity(Pins(bpffs)) != b""


def test_interfaces_attached_at_appearance_are_upgraded_in_a_link_or_not(
    janitor: Janitor, bpffs: str, build_dir: Path
) -> None:
    """Interfaces attached when they appeared (``ifaces/`` pins), two of them in a link and one
    in none, run the new build's program after an upgrade, through the same TCX links (the
    link holds no attachment of its own)."""
    counting = builds.build(build_dir, builds.COUNT)
    chain = Chain.build(janitor, replicas=1, ipv6=False)
    spare = janitor.veth(unique("xu"), unique("yu"), up=False)[0]
    janitor.add(lambda: _destroy(bpffs))
    ends = [chain.client_host, chain.replicas[0].eth1_host, spare]
    with Dataplane(bpffs, session_table_size=TEST_SESSIONS, object_path=counting) as first:
        for name in ends:
            assert first.attach_interface(name)
        first.create_link("l", side_a=ends[:1], side_b=ends[1:2])
        links_before = {name: sorted(bpf.tcx_links(socket.if_nametoindex(name))) for name in ends}
    ifaces = os.path.join(bpffs, "ifaces")
    with Dataplane(bpffs, session_table_size=TEST_SESSIONS) as shipped:
        assert shipped.opened.action == "upgraded"
        assert shipped.opened.interfaces == 3
        new_prog = builds.prog_id(shipped.pins.program)
        by_name = {socket.if_indextoname(i): p for i, p in _tcx_programs(ifaces).items()}
        assert by_name == dict.fromkeys(ends, new_prog)
        assert {n: sorted(bpf.tcx_links(socket.if_nametoindex(n))) for n in ends} == links_before
        assert os.listdir(shipped.pins.link_dir("l")) == ["info"]
