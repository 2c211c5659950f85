"""State that outlives the manager, and links that never see each other's traffic.

Behaviours covered:
- a manager restart during traffic: the Dataplane object is closed, traffic runs with no
  manager at all, the ``sfc-k8s dp`` CLI (new processes) shows the links and scales the chain
  out, then a new Dataplane adopts the pinned programs and maps; no datagram of the
  established flows is lost or reordered, and the counters carry on from where they were;
- two chains side by side, with identical addresses and MACs (so identical flow keys) on the
  same node: traffic on one never shows in the other's counters, sessions or server, and when
  both carry the same flows at once each client only ever gets its own server's echoes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from sfc_k8s.dataplane import Dataplane
from tests.fixtures.flows import LiveFlows, Server, run_flows
from tests.fixtures.topology import (
    REPO,
    TEST_SESSIONS,
    Addressing,
    Chain,
    ChainLinks,
    traffic_argv,
)
from tests.integration.dataplane.tracking import counters
from tests.nettools import Janitor

pytestmark = pytest.mark.root

UDP_PORT = 7200


def _cli(root: str, *args: str) -> str:
    """Run ``sfc-k8s`` in a new process against ``root``; its stdout."""
    env = {**os.environ, "SFC_K8S_BPFFS_ROOT": root}
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "sfc-k8s"), *args], env=env,
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert proc.returncode == 0, f"sfc-k8s {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def _destroy(root: str) -> None:
    with Dataplane(root) as dp:
        dp.destroy()


def test_manager_restart_loses_no_packet(janitor: Janitor, bpffs: str) -> None:
    chain = Chain.build(janitor, replicas=3, ipv6=False)
    janitor.add(lambda: _destroy(bpffs))  # runs before the namespaces go
    first = Dataplane(bpffs, session_table_size=TEST_SESSIONS)
    links = ChainLinks.create(first, chain)
    Server.start(janitor, chain.server_ns, "udp-echo", UDP_PORT)
    live = LiveFlows.start(janitor, chain.client_ns, "udp-stream", "--server",
                           chain.addressing.server_ip, "--port", str(UDP_PORT), "--flows", "6",
                           "--rate", "1000", "--sport-base", "34000")  # fmt: skip
    try:
        seen = counters(first, links.link1)[chain.client_host].rx_packets
        assert seen > 0
    finally:
        first.close()

    time.sleep(0.3)  # no manager at all: only the pinned programs and maps
    show = _cli(bpffs, "dp", "show", "--json")
    assert links.link1 in show and links.link2 in show
    json.loads(show)
    # Scale out from new processes (the stateless CLI), way out first, then way in.
    replica = chain.add_replica()
    _cli(bpffs, "dp", "endpoint", "add", links.link2, "a", replica.eth2_host)
    _cli(bpffs, "dp", "endpoint", "add", links.link1, "b", replica.eth1_host)

    with Dataplane(bpffs) as second:
        assert set(second.links()) >= {links.link1, links.link2}
        status = second.status(links.link1)
        assert status.sessions >= 6
        by_if = {e.ifname: e.counters for e in status.endpoints}
        # Strictly more: packets crossed while no manager ran (and the counters kept counting).
        assert by_if[chain.client_host].rx_packets > seen, "counters restarted from zero"
        assert replica.eth1_host in by_if
        time.sleep(0.3)
        report = live.stop()
        assert report["bad"] == 0
        for flow in report["flows"]:
            assert flow["sent"] > 0, flow
            assert flow["missing"] == [] and flow["echoed"] == flow["sent"], flow
            assert flow["reordered"] == 0, flow


def test_two_links_side_by_side_stay_isolated(janitor: Janitor, dataplane: Dataplane) -> None:
    shared = Addressing.random()
    chains = [Chain.build(janitor, replicas=2, ipv6=False, addressing=shared) for _ in "ab"]
    pairs = [ChainLinks.create(dataplane, chain, prefix="sfct" + n) for chain, n in
             zip(chains, "ab", strict=True)]  # fmt: skip
    servers = [Server.start(janitor, c.server_ns, "udp-echo", UDP_PORT, tag=n)
               for c, n in zip(chains, "ab", strict=True)]  # fmt: skip
    flows = ["--server", shared.server_ip, "--port", str(UDP_PORT), "--flows", "10", "--base",
             "2", "--sport-base", "35000"]  # fmt: skip

    # Traffic (ARP included) on chain a only: chain b sees nothing at all.
    only_a = run_flows(chains[0].client_ns, "udp-flows", *flows, "--tag", "a")
    assert only_a["bad"] == 0
    assert all(f["echoed"] == f["sent"] for f in only_a["flows"]), only_a
    for link in (pairs[1].link1, pairs[1].link2):
        assert dataplane.sessions(link) == []
        quiet = counters(dataplane, link)
        assert all(c.rx_packets == 0 and c.tx_packets == 0 for c in quiet.values()), quiet

    # The same flows on both chains at once: each client only hears its own server.
    clients = [
        subprocess.Popen(traffic_argv(c.client_ns, "udp-flows", *flows, "--tag", n),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c, n in zip(chains, "ab", strict=True)
    ]  # fmt: skip
    for client in clients:
        janitor.add(lambda c=client: (c.kill(), c.communicate()))  # reaped, even on failure
    reports = [json.loads(c.communicate(timeout=60)[0]) for c in clients]
    for report in reports:
        assert report["bad"] == 0, "a client got an echo from the other chain"
        assert all(f["echoed"] == f["sent"] for f in report["flows"]), report
    sent = sum(f["sent"] for f in only_a["flows"])
    summaries = [s.stop() for s in servers]
    assert [s["datagrams"] for s in summaries] == [2 * sent, sent]

    for pair, chain in zip(pairs, chains, strict=True):
        own = {chain.client_host, chain.server_host} | {
            name for r in chain.replicas for name in (r.eth1_host, r.eth2_host)
        }
        for link in (pair.link1, pair.link2):
            for session in dataplane.sessions(link):
                assert {session.a_ifname, session.b_ifname} <= own, session
