"""Real traffic through a chain whose replicas live on three nodes (``multinode.py``).

Three node namespaces on an underlay bridge, each with its own bpffs root and data plane
(programmed as a node agent would: local endpoints by interface, the others by node address
and stable id) and its tunnel device; the client on node 1, an L2-transparent NF replica on
every node, the server on node 3. Behaviours covered:
- ping (ARP crossing nodes), ping -6 (neighbour discovery), TCP over IPv4 and IPv6, all
  through the tunnel both ways, with no drop on any node;
- 60 UDP flows spread fairly over the local and the two remote replicas, run twice with every
  node's sessions and flow caches lost in between (LRU evictions); for each flow the
  entry node's link-1 session and the server node's link-2 session name the same replica
  (as a local interface or as ``#ID@NODE``); on every node the per-endpoint counters add up
  exactly to the datagrams of the flows each replica carries, in both directions (so every
  reply came back through the replica of its request, encapsulated to the exact endpoint):
  a local endpoint counts what entered and left its pod, a remote one what the node sent to
  it and received from it;
- scaling across nodes: a replica added on every node (local on its own, remote elsewhere)
  gets new flows and moves no old one; a draining remote replica keeps its flows and gets no
  new ones; a removed replica's flows move, the others' stay, both nodes' sessions agreeing;
- every node's manager restarting (adopting the pinned state and the tunnel device, applying
  its plan again) under cross-node UDP streams loses no packet (outer UDP checksums off);
- the outer UDP checksum is set, or zero when the tunnel is configured without;
- forged tunnel packets reaching node 2 are dropped and counted by reason, never delivered:
  from an underlay address that is no node (TUNNEL_UNKNOWN_NODE), without the GBP option
  (TUNNEL_NO_KEY), naming no link of the node (TUNNEL_UNKNOWN_LINK), with a source endpoint
  on another node than the sender, a source on the destination's side, a destination that
  is not local, or ids of another link (TUNNEL_BAD_ENDPOINT); the same packet crafted right
  is delivered, so the drops are the checks' doing.
"""

from __future__ import annotations

import struct
import subprocess
from collections import Counter
from typing import Any

import pytest

from tests.fixtures import frames as f
from tests.fixtures.flows import LiveFlows, Server, run_flows
from tests.fixtures.topology import PYTHON
from tests.integration.dataplane.multinode import (
    CID1,
    CID2,
    CLIENT_ID,
    LINK1,
    LINK2,
    SERVER_ID,
    Cluster,
)
from tests.integration.dataplane.test_chain_traffic import fair_share_bounds
from tests.nettools import Janitor, run

pytestmark = pytest.mark.root

TCP = 6
UDP = 17
PORT = 4792  # the tunnel's default UDP port


def _assert_tcp_ok(report: dict[str, Any]) -> None:
    flows = report["flows"]
    assert [f["error"] for f in flows] == [None] * len(flows), flows
    assert all(f["exchanges"] > 0 for f in flows), flows


def _drops(cluster: Cluster) -> list[dict[str, dict[str, int]]]:
    """Per node: the node-wide tunnel drops and each link's drops."""
    result = []
    for node in cluster.nodes:
        data = node.report()
        drops = {name: link["drops"] for name, link in data["links"].items()}
        result.append({"tunnel": data["tunnel_drops"], **drops})
    return result


def test_ping_tcp_and_ipv6_cross_three_nodes(janitor: Janitor) -> None:
    cluster = Cluster.build(janitor, ipv6=True, served=True)
    cluster.program()
    assert cluster.client is not None and cluster.server is not None
    # Counted from here: a node programmed before the others may drop what the pods sent
    # meanwhile (IPv6 router solicitations and the like), as a real node would.
    drops = _drops(cluster)
    a = cluster.addressing
    for family, address in (("-4", a.server_ip), ("-6", a.server_ip6)):
        ping = run("ping", family, "-n", "-c", "3", "-i", "0.2", "-W", "2", address,
                   netns=cluster.client.netns, check=False)  # fmt: skip
        assert ping.returncode == 0, ping.stdout + ping.stderr

    Server.start(janitor, cluster.server.netns, "tcp-echo", 7000)
    _assert_tcp_ok(run_flows(cluster.client.netns, "tcp-flows", "--server", a.server_ip,
                             "--port", "7000", "--flows", "6", "--duration", "1"))  # fmt: skip
    Server.start(janitor, cluster.server.netns, "tcp-echo", 7001, ipv6=True)
    _assert_tcp_ok(run_flows(cluster.client.netns, "tcp-flows", "--server", a.server_ip6,
                             "--port", "7001", "--flows", "4", "--duration", "1"))  # fmt: skip
    entry = cluster.nodes[0].report()["links"][LINK1]["sessions"]
    assert {s["kind"] for s in entry if s["proto"] == TCP} == {"l4-v4", "l4-v6"}
    assert _drops(cluster) == drops


def _counters(cluster: Cluster) -> list[dict[str, dict[tuple[int, str], dict[str, int]]]]:
    """Per node, per link: (endpoint id, node address) -> counters."""
    result = []
    for node in cluster.nodes:
        links = node.report()["links"]
        result.append(
            {
                name: {(e["id"], e["node"]): e["counters"] for e in link["status"]["endpoints"]}
                for name, link in links.items()
            }
        )
    return result


def _paths(cluster: Cluster, link: str, node: int, side: str, port: int) -> dict[int, str]:
    """Client port -> replica, from node ``node``'s sessions of ``link`` (endpoint on ``side``)."""
    out = {}
    for s in cluster.nodes[node].report()["links"][link]["sessions"]:
        ports = {s["port_lo"], s["port_hi"]}
        if s["proto"] != UDP or port not in ports or len(ports) != 2:
            continue
        (client_port,) = ports - {port}
        out[client_port] = cluster.replica_by_endpoint(link, s[f"{side}_ifname"])
    return out


def _udp_round(cluster: Cluster, port: int) -> dict[int, int]:
    """60 UDP flows from ports 31000-31059, flow i sending i + 1 datagrams, all echoed."""
    assert cluster.client is not None
    report = run_flows(cluster.client.netns, "udp-flows", "--server",
                       cluster.addressing.server_ip, "--port", str(port), "--flows", "60",
                       "--base", "1", "--sport-base", "31000")  # fmt: skip
    assert report["bad"] == 0
    sent = {fl["sport"]: fl["sent"] for fl in report["flows"]}
    assert [fl["echoed"] for fl in report["flows"]] == list(sent.values())
    return sent


def test_flows_spread_over_nodes_and_keep_both_directions_on_one_replica(
    janitor: Janitor,
) -> None:
    """Flow i sends i + 1 datagrams and gets each echoed: 1,830 each way over 60 flows, twice:
    between the rounds every node loses every session (as LRU evictions would) and its flow
    caches, and each flow must stay on its replica, both ways."""
    cluster = Cluster.build(janitor, ipv6=False, served=True)
    cluster.set_static_neighbours()
    cluster.program()
    assert cluster.client is not None and cluster.server is not None
    before, drops = _counters(cluster), _drops(cluster)
    port = 7002
    server = Server.start(janitor, cluster.server.netns, "udp-echo", port)
    sent = _udp_round(cluster, port)
    total = sum(sent.values())
    assert total == 1830

    last = len(cluster.nodes) - 1
    via1 = _paths(cluster, LINK1, 0, "b", port)  # where the client's node sent each flow
    via2 = _paths(cluster, LINK2, last, "a", port)  # where the server's node sent replies
    assert sorted(via1) == sorted(via2) == sorted(sent)
    assert via1 == via2
    lo, hi = fair_share_bounds(60, 3)
    per_replica = Counter(via1.values())
    assert set(per_replica) == {r.name for r in cluster.replicas}, per_replica
    assert all(lo <= n <= hi for n in per_replica.values()), (per_replica, lo, hi)

    for node in cluster.nodes:
        node.call("evict")
    assert _udp_round(cluster, port) == sent
    assert server.stop()["datagrams"] == 2 * total
    assert _paths(cluster, LINK1, 0, "b", port) == via1
    assert _paths(cluster, LINK2, last, "a", port) == via1

    after = _counters(cluster)

    def delta(node: int, link: str, ep_id: int, where: int) -> tuple[int, int]:
        address = "" if where == node else cluster.nodes[where].address
        b, a = before[node][link][(ep_id, address)], after[node][link][(ep_id, address)]
        return a["tx_packets"] - b["tx_packets"], a["rx_packets"] - b["rx_packets"]

    for r in cluster.replicas:
        carried = 2 * sum(sent[p] for p, name in via1.items() if name == r.name)
        # On the replica's node: into and out of its pod, both links, both directions.
        assert delta(r.node, LINK1, r.in_id, r.node) == (carried, carried), r
        assert delta(r.node, LINK2, r.out_id, r.node) == (carried, carried), r
        # On the client's and the server's nodes: sent to it and received from it.
        assert delta(0, LINK1, r.in_id, r.node) == (carried, carried), r
        assert delta(last, LINK2, r.out_id, r.node) == (carried, carried), r
    assert delta(0, LINK1, CLIENT_ID, 0) == (2 * total, 2 * total)
    assert _drops(cluster) == drops


def _round(cluster: Cluster, port: int, base: int) -> dict[int, str]:
    """30 UDP flows from ports base..base+29, all echoed; client port -> its replica, as the
    client's node and the server's node both record it (they must agree)."""
    assert cluster.client is not None
    report = run_flows(cluster.client.netns, "udp-flows", "--server",
                       cluster.addressing.server_ip, "--port", str(port), "--flows", "30",
                       "--base", "2", "--sport-base", str(base))  # fmt: skip
    assert report["bad"] == 0
    assert all(fl["echoed"] == fl["sent"] for fl in report["flows"]), report["flows"]
    ports = range(base, base + 30)
    via1 = _paths(cluster, LINK1, 0, "b", port)
    via2 = _paths(cluster, LINK2, len(cluster.nodes) - 1, "a", port)
    paths = {p: via1[p] for p in ports}
    assert paths == {p: via2[p] for p in ports}
    return paths


def test_scaling_across_nodes_moves_only_what_it_must(janitor: Janitor) -> None:
    """A replica added on every node gets new flows and takes none of the old ones; a
    draining remote replica keeps its flows and gets no new ones; a removed one's flows move
    (to the only active replica left), the others' stay."""
    cluster = Cluster.build(janitor, ipv6=False, served=True)
    cluster.set_static_neighbours()
    r1, r2, r3 = cluster.replicas
    cluster.program([r1, r2])
    assert cluster.server is not None
    port = 7003
    Server.start(janitor, cluster.server.netns, "udp-echo", port)
    old = _round(cluster, port, 31000)
    assert set(old.values()) == {r1.name, r2.name}

    cluster.change("add", r3)  # on node 3: local; elsewhere: remote
    assert _round(cluster, port, 31000) == old
    assert r3.name in set(_round(cluster, port, 32000).values())

    cluster.change("drain", r2)  # remote from the client's node
    assert _round(cluster, port, 31000) == old
    assert r2.name not in set(_round(cluster, port, 33000).values())

    cluster.change("remove", r1)  # local on the client's node
    moved = _round(cluster, port, 31000)
    assert moved == {p: (r3.name if name == r1.name else name) for p, name in old.items()}


def test_restarted_node_managers_lose_no_packet_of_cross_node_flows(janitor: Janitor) -> None:
    """Each node's manager starts again (a fresh process adopting the pinned state, the
    tunnel device included, and applying its whole plan again) under 6 UDP streams. The
    tunnel here sends without outer UDP checksums."""
    cluster = Cluster.build(janitor, ipv6=False, udp_csum=False, served=True)
    cluster.set_static_neighbours()
    cluster.program()
    assert cluster.client is not None and cluster.server is not None
    Server.start(janitor, cluster.server.netns, "udp-echo", 7004)
    live = LiveFlows.start(janitor, cluster.client.netns, "udp-stream", "--server",
                           cluster.addressing.server_ip, "--port", "7004", "--flows", "6",
                           "--rate", "1000", "--sport-base", "34000")  # fmt: skip
    for index, node in enumerate(cluster.nodes):
        node.dp("apply", cluster.plan(index))
    report = live.stop()
    assert report["bad"] == 0
    for flow in report["flows"]:
        assert flow["sent"] > 50, flow  # ~170/s per flow while three managers restarted
        assert flow["missing"] == [] and flow["echoed"] == flow["sent"], flow
    assert set(_paths(cluster, LINK1, 0, "b", 7004).values()) <= {r.name for r in cluster.replicas}


_SNIFF = """
import socket, struct, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # every frame, every port
s.settimeout(0.2)
print("READY", flush=True)
sums, end = [], time.monotonic() + 5
while time.monotonic() < end and len(sums) < 4:
    try:
        frame = s.recv(4096)
    except TimeoutError:
        continue
    if frame[12:14] != b"\\x08\\x00" or frame[23] != 17:
        continue
    udp = 14 + (frame[14] & 15) * 4
    if struct.unpack("!H", frame[udp + 2 : udp + 4])[0] == {port}:
        sums.append(struct.unpack("!H", frame[udp + 6 : udp + 8])[0])
print(sums)
"""


def _tunnel_checksums(cluster: Cluster, janitor: Janitor) -> list[int]:
    """The outer UDP checksums of the tunnel datagrams four pings make on the underlay."""
    assert cluster.client is not None
    sniffer = subprocess.Popen(
        ["ip", "netns", "exec", cluster.underlay_ns, PYTHON, "-c", _SNIFF.format(port=PORT)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    janitor.add(sniffer.kill)
    assert sniffer.stdout is not None and sniffer.stdout.readline().strip() == "READY"
    ping = run("ping", "-n", "-c", "4", "-i", "0.2", "-W", "2", cluster.addressing.server_ip,
               netns=cluster.client.netns, check=False)  # fmt: skip
    assert ping.returncode == 0, ping.stdout
    out, _ = sniffer.communicate(timeout=10)
    sums = [int(x) for x in out.strip().strip("[]").split(",") if x.strip()]
    assert len(sums) == 4
    return sums


def test_outer_udp_checksum_is_configurable(janitor: Janitor) -> None:
    """The tunnel's UDP datagrams on the underlay carry a checksum, or zero once the tunnel is
    configured without (the same nodes, their tunnels set again: one cluster for both)."""
    cluster = Cluster.build(janitor, ipv6=False, udp_csum=True, served=True)
    cluster.program()
    sums = _tunnel_checksums(cluster, janitor)
    assert all(sums), sums
    cluster.udp_csum = False
    cluster.program()
    sums = _tunnel_checksums(cluster, janitor)
    assert not any(sums), sums


# --- forged tunnel packets -----------------------------------------------------------------

_SEND = """
import socket, sys
data = bytes.fromhex(sys.argv[2])
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    for _ in range(int(sys.argv[3])):
        s.sendto(data, (sys.argv[1], {port}))
"""


def _vxlan(cluster: Cluster, *, dst: int, src: int, gbp: int | None) -> bytes:
    """A VXLAN payload: header (with the GBP extension unless ``gbp`` is None), then a UDP
    datagram from the client to the server."""
    a = cluster.addressing
    flags = 0x08 | (0x80 if gbp is not None else 0)
    header = struct.pack("!BBHI", flags, 0, gbp or 0, (dst << 12 | src) << 8)
    inner = f.eth(f.ETH_IP, f.ipv4(a.client_ip, a.server_ip, UDP, f.l4(40000, 9)),
                  src=a.client_mac, dst=a.server_mac)  # fmt: skip
    return header + inner


def _send(netns: str, target: str, payload: bytes, count: int) -> None:
    subprocess.run(
        ["ip", "netns", "exec", netns, PYTHON, "-c", _SEND.format(port=PORT), target,
         payload.hex(), str(count)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


def test_forged_tunnel_packets_are_dropped_and_counted(janitor: Janitor) -> None:
    cluster = Cluster.build(janitor, ipv6=False, served=True)
    cluster.program()
    rogue_ns, _ = cluster.rogue()
    node1, node2 = cluster.nodes[0], cluster.nodes[1]
    r2 = cluster.replicas[1]  # on node 2: link 1 id 12, link 2 id 22
    assert r2.node == 1

    def snapshot() -> tuple[dict[str, int], dict[str, int], dict[str, int], int]:
        data = node2.report()
        l1 = data["links"][LINK1]
        delivered = next(e for e in l1["status"]["endpoints"] if e["id"] == r2.in_id)
        return (data["tunnel_drops"], l1["drops"], data["links"][LINK2]["drops"],
                delivered["counters"]["tx_packets"])  # fmt: skip

    bad, v = "TUNNEL_BAD_ENDPOINT", _vxlan
    cases = [
        # (sender, payload, where the drop is counted, reason)
        (rogue_ns, v(cluster, dst=12, src=CLIENT_ID, gbp=CID1), "node", "TUNNEL_UNKNOWN_NODE"),
        (node1.netns, v(cluster, dst=12, src=CLIENT_ID, gbp=None), "node", "TUNNEL_NO_KEY"),
        (node1.netns, v(cluster, dst=12, src=CLIENT_ID, gbp=999), "node", "TUNNEL_UNKNOWN_LINK"),
        # The source endpoint (the server) is on node 3, not on the sender.
        (node1.netns, v(cluster, dst=22, src=SERVER_ID, gbp=CID2), LINK2, bad),
        # The source (on the sender) is on the destination's side.
        (node1.netns, v(cluster, dst=12, src=11, gbp=CID1), LINK1, bad),
        # The destination is not on node 2.
        (node1.netns, v(cluster, dst=13, src=CLIENT_ID, gbp=CID1), LINK1, bad),
        # Link 1's ids in link 2's key (no endpoint 12 there).
        (node1.netns, v(cluster, dst=12, src=CLIENT_ID, gbp=CID2), LINK2, bad),
    ]  # fmt: skip
    count = 5
    for sender, payload, where, reason in cases:
        tunnel0, l1_0, l2_0, delivered0 = snapshot()
        _send(sender, node2.address, payload, count)
        tunnel1, l1_1, l2_1, delivered1 = snapshot()
        got = {"node": (tunnel0, tunnel1), LINK1: (l1_0, l1_1), LINK2: (l2_0, l2_1)}
        for place, (b, a) in got.items():
            moved = {r: a[r] - b[r] for r in a if a[r] != b[r]}
            assert moved == ({reason: count} if place == where else {}), (reason, place, moved)
        assert delivered1 == delivered0, reason

    # The same packet, crafted right, from the client's node: delivered to replica r2.
    _, _, _, delivered0 = snapshot()
    _send(node1.netns, node2.address, _vxlan(cluster, dst=12, src=CLIENT_ID, gbp=CID1), count)
    assert snapshot()[3] == delivered0 + count
