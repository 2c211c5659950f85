"""Scaling the NF of a chain while long-lived TCP flows cross it.

Behaviours covered:
- scale out 3 -> 5 replicas during 50 live TCP flows: no flow resets or stalls, the program
  drops no packet, each flow stays on the replica it had (on both links), and new flows also
  reach the new replicas;
- drain a replica: it keeps its flows and gets no new ones; then remove it: its sessions are
  purged and its flows move to the other replicas and keep going, while every other flow stays
  on its replica and the program drops none of their packets.

The TCP flows are request/echo loops every 20 ms that check every byte (``traffic.py
tcp-flows``). What is asserted are events, not timings: the program's drop counters (a packet
lost on a table change is counted there) and where each flow goes. A "stall" is a flow without
an echo for five seconds: a lost path never comes back by itself (the flow sits in TCP's
backed-off retransmissions), while a loaded machine can delay a healthy flow by a second or
two. TCP retransmissions are reported by the traffic tool but not asserted: on a loaded
machine a delayed ACK past the 200 ms minimum RTO makes a spurious one.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from sfc_k8s.dataplane import Dataplane, DropReason
from tests.fixtures.flows import LiveFlows, Server, run_flows
from tests.fixtures.topology import Chain, ChainLinks
from tests.integration.dataplane.tracking import flow_paths
from tests.nettools import Janitor

pytestmark = pytest.mark.root

TCP = 6
UDP = 17
STALL = 5.0  # seconds without an echo that count as a stall
TCP_PORT = 7100
UDP_PORT = 7101


def _start(janitor: Janitor, chain: Chain, flows: int, sport_base: int) -> LiveFlows:
    return LiveFlows.start(janitor, chain.client_ns, "tcp-flows", "--server",
                           chain.addressing.server_ip, "--port", str(TCP_PORT), "--flows",
                           str(flows), "--sport-base", str(sport_base), "--interval", "20",
                           max_seconds=60)  # fmt: skip


def _by_sport(report: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {f["sport"]: f for f in report["flows"]}


def _drops(dataplane: Dataplane, links: ChainLinks) -> dict[DropReason, int]:
    """Packets the program dropped on either link of the chain, by reason (zeros left out)."""
    out: dict[DropReason, int] = {}
    for link in (links.link1, links.link2):
        for reason, count in dataplane.status(link).drops.items():
            if count:
                out[reason] = out.get(reason, 0) + count
    return out


def _new_udp_flows(janitor: Janitor, links: ChainLinks, sport_base: int) -> dict[int, str]:
    """Start 20 short new UDP flows; return source port -> replica they crossed (link 1)."""
    chain = links.chain
    server = Server.start(janitor, chain.server_ns, "udp-echo", UDP_PORT)
    report = run_flows(chain.client_ns, "udp-flows", "--server", chain.addressing.server_ip,
                       "--port", str(UDP_PORT), "--flows", "20", "--base", "3",
                       "--sport-base", str(sport_base))  # fmt: skip
    server.stop()
    assert all(f["echoed"] == f["sent"] for f in report["flows"]), report
    paths = flow_paths(links, UDP, UDP_PORT)
    return {port: paths[port].via_link1 for port in range(sport_base, sport_base + 20)}


def test_scale_out_during_50_tcp_flows(janitor: Janitor, dataplane: Dataplane) -> None:
    chain = Chain.build(janitor, replicas=3, ipv6=False)
    links = ChainLinks.create(dataplane, chain)
    server = Server.start(janitor, chain.server_ns, "tcp-echo", TCP_PORT)
    live = _start(janitor, chain, 50, 32000)

    before = flow_paths(links, TCP, TCP_PORT)
    assert len(before) == 50
    assert all(p.via_link1 and p.via_link1 == p.via_link2 for p in before.values()), before
    added = {r.name for r in links.scale_out(2)}
    time.sleep(0.5)  # ~25 exchanges per flow across the change
    new_flows = _new_udp_flows(janitor, links, 33000)
    after = flow_paths(links, TCP, TCP_PORT)
    report = live.stop()
    server.stop()

    assert after == before, "a live flow changed replica when the NF scaled out"
    for flow in _by_sport(report).values():
        assert flow["error"] is None, flow
        assert flow["max_gap"] < STALL, flow
    assert _drops(dataplane, links) == {}, "the program dropped packets during the scale-out"
    # 2 of the 5 replicas are new: all 20 new flows missing them has probability (3/5)**20.
    assert added & set(new_flows.values()), new_flows
    assert len(chain.replicas) == 5


def test_drain_then_remove_moves_only_that_replicas_flows(
    janitor: Janitor, dataplane: Dataplane
) -> None:
    chain = Chain.build(janitor, replicas=3, ipv6=False)
    links = ChainLinks.create(dataplane, chain)
    server = Server.start(janitor, chain.server_ns, "tcp-echo", TCP_PORT)
    live = _start(janitor, chain, 30, 32000)

    before = flow_paths(links, TCP, TCP_PORT)
    assert len(before) == 30
    busiest, _ = Counter(p.via_link1 for p in before.values()).most_common(1)[0]
    victim = next(r for r in chain.replicas if r.name == busiest)
    its_flows = {port for port, p in before.items() if p.via_link1 == victim.name}

    links.drain(victim)
    new_flows = _new_udp_flows(janitor, links, 33000)
    assert victim.name not in new_flows.values(), "a draining replica got a new flow"
    assert flow_paths(links, TCP, TCP_PORT) == before, "draining moved a live flow"

    links.scale_in(victim)
    # The moved flows re-pick a replica with their next packet (TCP retransmits what was in
    # flight to the removed one): wait for that event, not for a guessed time.
    deadline = time.monotonic() + 3 * STALL
    while True:
        after = flow_paths(links, TCP, TCP_PORT)
        moved = [after.get(p) for p in its_flows]
        if all(m and m.via_link1 and m.via_link2 for m in moved):
            break
        assert time.monotonic() < deadline, f"moved flows did not re-pick: {moved}"
        time.sleep(0.1)
    report = live.stop()
    server.stop()

    flows = _by_sport(report)
    for port, path in before.items():
        flow = flows[port]
        assert flow["error"] is None, flow  # no flow reset, moved or not
        if port in its_flows:
            assert after[port].via_link1 not in ("", victim.name), (port, after[port])
            assert after[port].via_link2 not in ("", victim.name), (port, after[port])
            assert flow["max_gap"] < 2 * STALL, flow
        else:
            assert after[port] == path, f"flow from port {port} moved: {path} -> {after[port]}"
            assert flow["max_gap"] < STALL, flow
    # The removed replica's in-flight packets may meet a purged session (STALE_ENDPOINT) or a
    # vanished interface; nothing else may be dropped.
    allowed = {DropReason.STALE_ENDPOINT, DropReason.REDIRECT_FAILED}
    assert set(_drops(dataplane, links)) <= allowed, _drops(dataplane, links)
    leftovers = [
        s
        for link in (links.link1, links.link2)
        for s in dataplane.sessions(link)
        if {s.a_ifname, s.b_ifname} & {victim.eth1_host, victim.eth2_host}
    ]
    assert leftovers == [], "sessions of the removed replica were not purged"
