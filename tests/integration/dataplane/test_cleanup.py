"""The traffic tests' scaffolding leaves nothing behind, even when a test fails half-way.

Behaviours covered:
- a chain with its links, pins, an echo server and live flows, abandoned by a failing test, is
  fully removed by the janitor: no namespace, no host veth, no bpffs pin, no process.
"""

from __future__ import annotations

import os

import pytest

from sfc_k8s.dataplane import Dataplane
from tests.fixtures.flows import LiveFlows, Server
from tests.fixtures.topology import TEST_SESSIONS, Chain, ChainLinks, bpffs_root
from tests.nettools import Janitor, run

pytestmark = pytest.mark.root


class AbandonedTestError(Exception):
    """Stands for whatever made a test fail."""


def test_janitor_removes_a_half_done_chain() -> None:
    janitor = Janitor()
    with pytest.raises(AbandonedTestError):
        try:
            root = bpffs_root(janitor)
            chain = Chain.build(janitor, replicas=2)
            dataplane = Dataplane(root, session_table_size=TEST_SESSIONS)
            janitor.add(dataplane.close)
            janitor.add(dataplane.destroy)
            links = ChainLinks.create(dataplane, chain)
            links.scale_out(1)
            server = Server.start(janitor, chain.server_ns, "tcp-echo", 7300)
            live = LiveFlows.start(janitor, chain.client_ns, "tcp-flows", "--server",
                                   chain.addressing.server_ip, "--port", "7300",
                                   "--flows", "3")  # fmt: skip
            raise AbandonedTestError
        finally:
            janitor.close()

    namespaces = run("ip", "netns", "list").stdout
    netns_names = [chain.client_ns, chain.server_ns, *(r.netns for r in chain.replicas)]
    assert not [ns for ns in netns_names if ns in namespaces]
    host_ends = [chain.client_host, chain.server_host] + [
        name for r in chain.replicas for name in (r.eth1_host, r.eth2_host)
    ]
    assert not [i for i in host_ends if os.path.exists(f"/sys/class/net/{i}")]
    assert not os.path.exists(root)
    assert server.proc.poll() is not None
    assert live.proc.poll() is not None
