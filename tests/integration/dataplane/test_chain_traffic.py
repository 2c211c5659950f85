"""Real traffic through client -> link 1 -> 3 L2-transparent NF replicas -> link 2 -> server.

Behaviours covered:
- ping (ARP crossing the chain), TCP and UDP reach the server through 3 replicas and come back;
- IPv6: ping -6 (neighbour discovery crossing the chain) and TCP over IPv6, sessions keyed by
  the IPv6 addresses;
- 60 UDP flows spread over the 3 replicas, each replica getting a fair share within a bound
  derived from the binomial distribution (see ``fair_share_bounds``);
- both directions of every flow cross the same replica: the session of link 1 and the session
  of link 2 name the same replica, and each replica's per-endpoint counters add up exactly to
  the datagrams of the flows it carries, in both directions, on both links.
"""

from __future__ import annotations

from collections import Counter
from math import comb

import pytest

from sfc_k8s.dataplane import Dataplane
from tests.fixtures.flows import Server, run_flows
from tests.fixtures.topology import Chain, ChainLinks
from tests.integration.dataplane.tracking import counters, flow_paths
from tests.nettools import Janitor, run

pytestmark = pytest.mark.root

TCP = 6
UDP = 17


def fair_share_bounds(flows: int, replicas: int, false_alarm: float = 1e-4) -> tuple[int, int]:
    """The range [lo, hi] of flows per replica that a correct spreading stays in.

    A new flow lands on a given replica with probability 1/replicas (Maglev gives each replica
    an equal share of its lookup table, and the flow hash is uniform), so a replica's count is
    Binomial(flows, 1/replicas). lo and hi are the tightest bounds whose tails each stay under
    ``false_alarm / (2 * replicas)``: by the union bound a correct data plane fails the check
    less than once in ``1 / false_alarm`` runs. For 60 flows over 3 replicas (fair share 20,
    standard deviation 3.65) this gives [6, 36]; a data plane that sends every flow to one
    replica, or ignores one, fails it.
    """
    p = 1 / replicas
    pmf = [comb(flows, k) * p**k * (1 - p) ** (flows - k) for k in range(flows + 1)]
    budget = false_alarm / (2 * replicas)
    lo = 0
    while sum(pmf[: lo + 1]) < budget:
        lo += 1
    hi = flows
    while sum(pmf[hi:]) < budget:
        hi -= 1
    return lo, hi


def test_fair_share_bounds_for_60_flows_over_3() -> None:
    assert fair_share_bounds(60, 3) == (6, 36)


def _assert_tcp_ok(report: dict[str, object]) -> None:
    flows = report["flows"]
    assert isinstance(flows, list)
    assert [f["error"] for f in flows] == [None] * len(flows), flows
    assert all(f["exchanges"] > 0 for f in flows), flows
    assert report["retrans"] == 0, report


def test_ping_tcp_udp_cross_three_replicas(janitor: Janitor, dataplane: Dataplane) -> None:
    chain = Chain.build(janitor, replicas=3, ipv6=False)
    links = ChainLinks.create(dataplane, chain)
    a = chain.addressing

    ping = run("ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", a.server_ip,
               netns=chain.client_ns, check=False)  # fmt: skip
    assert ping.returncode == 0, ping.stdout + ping.stderr

    Server.start(janitor, chain.server_ns, "tcp-echo", 7000)
    tcp = run_flows(chain.client_ns, "tcp-flows", "--server", a.server_ip, "--port", "7000",
                    "--flows", "6", "--duration", "1")  # fmt: skip
    _assert_tcp_ok(tcp)

    udp_server = Server.start(janitor, chain.server_ns, "udp-echo", 7001)
    udp = run_flows(chain.client_ns, "udp-flows", "--server", a.server_ip, "--port", "7001",
                    "--flows", "6", "--base", "5")  # fmt: skip
    assert udp["bad"] == 0
    assert [f["echoed"] for f in udp["flows"]] == [f["sent"] for f in udp["flows"]]
    assert udp_server.stop()["datagrams"] == sum(f["sent"] for f in udp["flows"])

    for path in flow_paths(links, TCP, 7000).values():
        assert path.via_link1 and path.via_link1 == path.via_link2
    status = dataplane.status(links.link1)
    assert status.sessions > 0
    assert not any(status.drops.values()), status.drops


def test_ipv6_ping_and_tcp_cross_the_chain(janitor: Janitor, dataplane: Dataplane) -> None:
    chain = Chain.build(janitor, replicas=3, ipv6=True)
    links = ChainLinks.create(dataplane, chain)
    a = chain.addressing

    ping = run("ping", "-6", "-n", "-c", "3", "-i", "0.2", "-W", "2", a.server_ip6,
               netns=chain.client_ns, check=False)  # fmt: skip
    assert ping.returncode == 0, ping.stdout + ping.stderr

    Server.start(janitor, chain.server_ns, "tcp-echo", 7000, ipv6=True)
    tcp = run_flows(chain.client_ns, "tcp-flows", "--server", a.server_ip6, "--port", "7000",
                    "--flows", "4", "--duration", "1")  # fmt: skip
    _assert_tcp_ok(tcp)

    paths = flow_paths(links, TCP, 7000)
    assert len(paths) == 4
    for path in paths.values():
        assert path.via_link1 and path.via_link1 == path.via_link2
    sessions = dataplane.sessions(links.link1)
    v6 = [s for s in sessions if s.proto == TCP]
    assert {s.kind for s in v6} == {"l4-v6"}
    assert {s.addr_lo for s in v6} | {s.addr_hi for s in v6} == {a.client_ip6, a.server_ip6}
    assert "nd" in {s.kind for s in sessions}, "neighbour discovery crossed without a session"


def test_sixty_flows_spread_fairly_and_keep_both_directions_on_one_replica(
    janitor: Janitor, dataplane: Dataplane
) -> None:
    """Flow i sends i + 1 datagrams and gets each echoed: 1,830 each way over 60 flows.

    Neighbours are static and IPv6 is off, so these datagrams are the only packets crossing the
    links and the counters can be checked exactly: on every replica, what entered it from the
    client side equals what left it towards the server, and both equal the datagrams of the
    flows the sessions put on it; the same holds for the echoes in the other direction. A reply
    that crossed another replica than its request would break these sums.
    """
    chain = Chain.build(janitor, replicas=3, ipv6=False)
    chain.set_static_neighbours()
    links = ChainLinks.create(dataplane, chain)
    port = 7002
    server = Server.start(janitor, chain.server_ns, "udp-echo", port)
    report = run_flows(chain.client_ns, "udp-flows", "--server", chain.addressing.server_ip,
                       "--port", str(port), "--flows", "60", "--base", "1",
                       "--sport-base", "31000")  # fmt: skip
    assert report["bad"] == 0
    sent = {f["sport"]: f["sent"] for f in report["flows"]}
    assert [f["echoed"] for f in report["flows"]] == list(sent.values())
    total = sum(sent.values())
    assert total == 1830
    assert server.stop()["datagrams"] == total

    paths = flow_paths(links, UDP, port)
    assert sorted(paths) == sorted(sent)
    for sport, path in paths.items():
        assert path.via_link1, f"flow from port {sport} has no session on link 1"
        assert path.via_link1 == path.via_link2, f"flow from port {sport}: {path}"

    lo, hi = fair_share_bounds(60, 3)
    per_replica = Counter(path.via_link1 for path in paths.values())
    assert set(per_replica) == {r.name for r in chain.replicas}, per_replica
    assert all(lo <= n <= hi for n in per_replica.values()), (per_replica, lo, hi)

    c1, c2 = counters(dataplane, links.link1), counters(dataplane, links.link2)
    for replica in chain.replicas:
        carried = sum(sent[p] for p, path in paths.items() if path.via_link1 == replica.name)
        into, out_of = c1[replica.eth1_host], c2[replica.eth2_host]
        assert (into.tx_packets, out_of.rx_packets) == (carried, carried), replica
        assert (out_of.tx_packets, into.rx_packets) == (carried, carried), replica
        assert into.tx_bytes == out_of.rx_bytes
        assert out_of.tx_bytes == into.rx_bytes
    client, server_end = c1[chain.client_host], c2[chain.server_host]
    assert (client.rx_packets, client.tx_packets) == (total, total)
    assert (server_end.rx_packets, server_end.tx_packets) == (total, total)
