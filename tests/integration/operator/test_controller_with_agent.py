"""The controller and a node agent together: a chain becomes Ready only once it is programmed.

Real pieces end to end on one emulated node: the local API server, the controller and the node
agent both run by Kopf, pods created through the API whose data-plane veths exist on this host
under the names the CNI plugin gives them (``host_ifname(pod UID, interface)``), and a data plane
pinned under a private bpffs root. The test plays the kubelet (pod readiness, confirming
terminations). Covers:
- chain + pods -> CrossConnections -> programmed links -> the agent's report -> chain Ready;
- a new Ready replica reaches the data plane and the chain is Ready again afterwards;
- a replica deleted gracefully is draining in the data plane, then removed;
- deleting the chain removes its CrossConnections and the agent's links.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from sfc_k8s.api.naming import host_ifname
from sfc_k8s.operator.agent_reconcile import link_name
from sfc_k8s.operator.controller import Controller
from tests.fixtures.controller import (
    Cluster,
    chain_body,
    condition,
    controller_config,
    eventually,
    running,
)
from tests.integration.operator.test_agent_programming import (
    link_state,
    open_dataplane,
    running_agent,
)
from tests.nettools import Janitor, run

NODE = "node-1"
INTERFACES = {"client": ["eth1"], "firewall": ["eth1", "eth2"], "server": ["eth1"]}


def start_pod(cluster: Cluster, janitor: Janitor, name: str, app: str) -> dict[str, Any]:
    """Create the pod in the API, then its veths as the CNI plugin would, then mark it Ready."""
    pod = cluster.create_pod(name, app, node=NODE, ready=False)
    netns = janitor.netns("sfctc")
    for ifname in INTERFACES[app]:
        host = host_ifname(pod["metadata"]["uid"], ifname)
        run("ip", "link", "add", host, "type", "veth", "peer", "name", ifname, "netns", netns)
        janitor.add(lambda host=host: run("ip", "link", "del", host, check=False))
        run("ip", "link", "set", host, "up")
        run("ip", "link", "set", ifname, "up", netns=netns)
    cluster.set_ready(name, True)
    return pod


def test_chain_is_ready_once_programmed_and_follows_scaling(
    cluster: Cluster, janitor: Janitor, bpffs_root: str
) -> None:
    pods = {name: start_pod(cluster, janitor, name, app) for name, app in [
        ("client-0", "client"), ("fw-0", "firewall"), ("server-0", "server")
    ]}  # fmt: skip
    body = chain_body()
    cluster.create_chain(body)
    link = link_name(cluster.ns, "web-client-firewall")

    def host(pod: str, ifname: str) -> str:
        return host_ifname(pods[pod]["metadata"]["uid"], ifname)

    controller = Controller(controller_config(cluster.apiserver, cluster.ns))
    with (
        contextmanager(open_dataplane)(bpffs_root) as dp,
        running(controller),
        running_agent(cluster.apiserver, bpffs_root, NODE),
    ):
        eventually(lambda: condition(cluster.chain("web"), "Ready") == ("True", "ChainReady"))
        assert link_state(dp, link) == {
            host("client-0", "eth1"): ("a", "active"),
            host("fw-0", "eth1"): ("b", "active"),
        }
        # scale the firewall up: the new replica is programmed, the chain is Ready again
        pods["fw-1"] = start_pod(cluster, janitor, "fw-1", "firewall")
        eventually(lambda: host("fw-1", "eth1") in (link_state(dp, link) or {}))
        eventually(lambda: condition(cluster.chain("web"), "Ready") == ("True", "ChainReady"))
        # scale down: draining while terminating, removed when gone
        cluster.delete_pod("fw-0")
        eventually(lambda: (link_state(dp, link) or {}).get(host("fw-0", "eth1")) == (
            "b", "draining"
        ))  # fmt: skip
        cluster.delete_pod("fw-0", grace=0)
        eventually(lambda: host("fw-0", "eth1") not in (link_state(dp, link) or {}))
        eventually(lambda: condition(cluster.chain("web"), "Ready") == ("True", "ChainReady"))
        # chain deletion: CrossConnections collected, links released by the agent
        cluster.request("DELETE", cluster.chain_path("web"))
        eventually(lambda: not cluster.xcs(), timeout=20)
        eventually(lambda: link_state(dp, link) is None)
