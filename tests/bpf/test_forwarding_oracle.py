"""Where packets really go, against an independent oracle.

``test_forwarding.py`` reads the redirect target from the program's own tx counters and
predicts it with the builder that filled the Maglev table. Here neither is used: the program
is attached to real host veths whose pod ends sit in their own namespaces, frames are sent
from a pod end, and the target is the pod in whose namespace the frame arrives (an
``AF_PACKET`` socket on each pod end: the kernel's ``bpf_redirect_peer`` carried it out;
``BPF_PROG_TEST_RUN`` only returns the verdict, the target stays inside the kernel). The
expected pod comes from ``tests/maglev_reference.py`` (the paper's algorithm, written apart
from the product's builder) over the flow hash (MurmurHash3, checked against published
vectors in ``tests/unit/dataplane/test_flow.py``).

Covers: 24 new UDP flows each reach exactly the pod the reference names, and each reply
returns to the sender; a drained pod keeps its flows and new flows follow the reference
table of the active pods; a removed pod's flows and new flows follow the reference table of
those left.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sfc_k8s.dataplane import Dataplane, Side, flow, structs
from sfc_k8s.dataplane.flow import make_key
from sfc_k8s.dataplane.structs import FlowKind
from sfc_k8s.local.netns import run_in_netns
from tests import maglev_reference
from tests.fixtures import frames as f
from tests.nettools import janitor, private_bpffs_root, run, unique

pytestmark = pytest.mark.root

ETH_P_ALL = 0x0003
CLIENT, SERVER = "10.9.0.1", "10.9.0.2"
PORT = 5300


@dataclass
class Pod:
    host: str  # the host end: an endpoint of the link
    sock: socket.socket  # AF_PACKET on the pod end, inside the pod's namespace


@dataclass
class Bench:
    dp: Dataplane
    a: Pod
    b: dict[str, Pod]  # host ifname -> pod

    def send(self, pod: Pod, frame: bytes) -> None:
        pod.sock.send(frame)

    def arrivals(self, token: bytes, pods: list[Pod], timeout: float = 2.0) -> list[str]:
        """Host names of the pods in whose namespace a frame carrying ``token`` arrived."""
        deadline = time.monotonic() + timeout
        got: list[str] = []
        while time.monotonic() < deadline:
            for pod in pods:
                got += [pod.host for frame in _drain(pod.sock) if token in frame]
            if got:
                time.sleep(0.05)  # a copy sent to a second pod would be there by now
                got += [p.host for p in pods for frame in _drain(p.sock) if token in frame]
                return got
            time.sleep(0.01)
        return got


def _drain(sock: socket.socket) -> list[bytes]:
    frames = []
    while True:
        try:
            frames.append(sock.recv(65536))
        except BlockingIOError:
            return frames


def _pod(j: object, role: str) -> Pod:
    ns = j.netns("sfct-orc")  # type: ignore[attr-defined]
    run("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", netns=ns)
    run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", netns=ns)
    host, peer = j.veth(unique(f"o{role}"), unique(f"q{role}"), b_netns=ns)  # type: ignore[attr-defined]

    def bind() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind((peer, 0))
        sock.setblocking(False)
        return sock

    sock = run_in_netns(ns, bind)
    j.add(sock.close)  # type: ignore[attr-defined]
    return Pod(host, sock)


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    with janitor() as j:
        a = _pod(j, "a0")
        b = [_pod(j, f"b{i}") for i in range(3)]
        root = private_bpffs_root()
        dp = Dataplane(root, session_table_size=4096)

        def teardown() -> None:
            dp.close()
            with Dataplane(root) as fresh:
                fresh.destroy()

        j.add(teardown)
        dp.create_link("oracle", side_a=[a.host], side_b=[p.host for p in b])
        yield Bench(dp, a, {p.host: p for p in b})


def _frame(sport: int, token: bytes, *, reply: bool = False) -> bytes:
    if reply:
        ip = f.ipv4(SERVER, CLIENT, f.UDP, f.l4(PORT, sport, token))
        return f.eth(f.ETH_IP, ip, src=f.MAC_B, dst=f.MAC_A)
    return f.eth(f.ETH_IP, f.ipv4(CLIENT, SERVER, f.UDP, f.l4(sport, PORT, token)))


def _expected(bench: Bench, sport: int, active: list[str]) -> str:
    """The pod the reference gives a new flow among the ``active`` host interfaces: Maglev over
    the endpoints' stable names, hashed with the link's cluster-wide id."""
    status = bench.dp.status("oracle")
    named = {
        maglev_reference.name(status.cluster_id, e.id): e.ifname
        for e in status.side(Side.B)
        if e.ifname in active
    }
    key = make_key(
        status.link_id, FlowKind.L4_V4, CLIENT, SERVER, proto=f.UDP, sport=sport, dport=PORT
    )
    slot = flow.flow_hash(key, link_cid=status.cluster_id) % structs.MAGLEV_SIZE
    return named[maglev_reference.table(named, structs.MAGLEV_SIZE)[slot]]


def _open(bench: Bench, sport: int) -> list[str]:
    token = f"flow-{sport}-{time.monotonic_ns()}".encode()
    bench.send(bench.a, _frame(sport, token))
    return bench.arrivals(token, list(bench.b.values()))


def test_new_flows_reach_the_reference_pod_and_replies_return(bench: Bench) -> None:
    active = sorted(bench.b)
    placed = {}
    for sport in range(30000, 30024):
        assert _open(bench, sport) == [_expected(bench, sport, active)], sport
        placed[sport] = _expected(bench, sport, active)
    assert len(set(placed.values())) == 3, "24 flows over 3 pods all missed one: check the hash"
    for sport, host in placed.items():
        token = f"reply-{sport}".encode()
        bench.send(bench.b[host], _frame(sport, token, reply=True))
        assert bench.arrivals(token, [bench.a, *bench.b.values()]) == [bench.a.host], sport


def test_drained_pod_keeps_its_flows_new_ones_follow_the_active_table(bench: Bench) -> None:
    active = sorted(bench.b)
    before = {sport: _open(bench, sport) for sport in range(31000, 31018)}
    victim = active[0]
    bench.dp.drain_endpoint("oracle", Side.B, victim)
    try:
        for sport, hosts in before.items():
            assert _open(bench, sport) == hosts, sport  # sessions kept, drained pod included
        left = [h for h in active if h != victim]
        for sport in range(31100, 31118):
            assert _open(bench, sport) == [_expected(bench, sport, left)], sport
    finally:
        bench.dp.activate_endpoint("oracle", Side.B, victim)


def test_removed_pods_flows_follow_the_table_of_those_left(bench: Bench) -> None:
    active = sorted(bench.b)
    before = {sport: _open(bench, sport)[0] for sport in range(32000, 32018)}
    victim = active[1]
    bench.dp.remove_endpoint("oracle", Side.B, victim)
    left = [h for h in active if h != victim]
    try:
        for sport, host in before.items():
            want = host if host != victim else _expected(bench, sport, left)
            assert _open(bench, sport) == [want], sport
        for sport in range(32100, 32118):
            assert _open(bench, sport) == [_expected(bench, sport, left)], sport
    finally:
        bench.dp.add_endpoint("oracle", Side.B, victim)
