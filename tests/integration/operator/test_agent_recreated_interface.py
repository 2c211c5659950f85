"""A pod's host interface deleted and created again under the same name, the CrossConnection
unchanged: what a node restart does (the runtime makes every pod's sandbox again, the CNI
plugin names the new veths as before, and no pod ever left the API, so the controller has
nothing to change). The data plane's endpoint must follow the new interface, else the peers'
flows hashed to it are sent to an ifindex that no longer exists.

The agent runs for real (Kopf via KopfRunner, interfaces attached as they appear) against the
local API server, with real veths and a private bpffs root. Covers:
- re-created while the agent runs: the interface's appearance re-plans the link at once
  (``NodeAgent._interface_attached``), the endpoint is programmed on the new ifindex and the
  xc's generation never moved;
- re-created while the agent was down: its resume pass finds the endpoint programmed on the
  old ifindex (``LinkEndpoint.defunct``) and programs it on the new one;
- in both, a frame sent from the client pod arrives on the firewall pod's new interface;
- gone when the agent starts, with the pod's network-status (from its old sandbox) saying it
  was attached: reported as awaited, not as an interface the pod will never have, so the
  node is ready again soon after the interface is back (a short back-off, not the long
  re-check of interfaces that never come).
"""

from __future__ import annotations

import itertools
import socket
from typing import Any

from sfc_k8s.dataplane import Dataplane
from sfc_k8s.operator.agent_reconcile import link_name
from tests.fixtures import frames as f
from tests.integration.operator.test_agent_missing_interface import running_pod
from tests.integration.operator.test_agent_programming import (
    NAMESPACE,
    Api,
    Pod,
    make_pod,
    node_report,
    plug,
    running_agent,
    send_frames,
    wait_for,
    wait_programmed,
)
from tests.nettools import Janitor, run, unique


def _ifindex_of(dp: Dataplane, link: str, ifname: str) -> int:
    return next((ep.ifindex for ep in dp.endpoints(link) if ep.ifname == ifname), 0)


def _replug(janitor: Janitor, pod: Pod) -> int:
    """Delete the pod's veth and make it again as CNI ADD would (same host name); its new
    ifindex."""
    old = socket.if_nametoindex(pod.host)
    run("ip", "link", "del", pod.host)
    plug(janitor, pod)
    new = socket.if_nametoindex(pod.host)
    assert new != old  # the kernel hands out ifindexes cyclically
    return new


def _frames_reach(client: Pod, fw: Pod) -> bool:
    """Whether 5 frames sent on the client's eth1 all come out of the firewall's eth1 (a
    new port each call: a new flow, balanced afresh)."""
    udp = f.l4(next(_PORTS), 7000)
    frame = f.eth(f.ETH_IP, f.ipv4("10.77.0.1", "10.77.0.2", f.UDP, udp))
    before = _rx_packets(fw)
    send_frames(client, frame, 5)
    return _rx_packets(fw) - before >= 5


_PORTS = itertools.count(40000)


def _rx_packets(pod: Pod) -> int:
    out = run("cat", "/sys/class/net/eth1/statistics/rx_packets", netns=pod.netns)
    return int(out.stdout.strip())


def test_endpoint_follows_its_interface_made_again_under_the_same_name(
    apiserver: Any, api: Api, janitor: Janitor, bpffs_root: str, dataplane: Dataplane
) -> None:
    node = unique("node")
    client = make_pod(janitor, "client")
    fw_name = unique("fw", 20)  # a Pod object whose network-status says eth1 is attached
    fw = Pod(fw_name, running_pod(api, janitor, fw_name, node, "eth1"), janitor.netns("sfcta"))
    for pod in (client, fw):
        plug(janitor, pod)
    name = unique("xc-recreate", 30)
    link = link_name(NAMESPACE, name)
    janitor.add(lambda: api.force_delete_xc(name))
    api.create_xc(name, [client.endpoint(node)], [fw.endpoint(node)])
    watch = {
        "attach_interfaces": True,
        "attach_only": frozenset({client.host, fw.host}),
        "max_retry_delay": 120.0,  # the re-check of an interface that never comes
    }

    with running_agent(apiserver, bpffs_root, node, **watch):
        wait_programmed(api, name, node)
        assert _ifindex_of(dataplane, link, fw.host) == socket.if_nametoindex(fw.host)
        generation = (api.get_xc(name) or {})["metadata"]["generation"]

        new = _replug(janitor, fw)
        wait_for(
            "the endpoint on the new interface (agent running)",
            lambda: _ifindex_of(dataplane, link, fw.host) == new,
        )
        assert (api.get_xc(name) or {})["metadata"]["generation"] == generation
        wait_for("frames reaching the new interface", lambda: _frames_reach(client, fw), 5)

    new = _replug(janitor, fw)  # while no agent runs: nothing sees it happen
    assert _ifindex_of(dataplane, link, fw.host) != new
    with running_agent(apiserver, bpffs_root, node, **watch):
        wait_for(
            "the endpoint on the new interface (agent restarted)",
            lambda: _ifindex_of(dataplane, link, fw.host) == new,
        )
        wait_for("frames reaching the new interface", lambda: _frames_reach(client, fw), 5)

    run("ip", "link", "del", fw.host)  # the sandbox is being made again when the agent starts
    with running_agent(apiserver, bpffs_root, node, **watch):
        report = wait_for(
            "the interface reported as awaited",
            lambda: (r := node_report(api, name, node)) and fw.host in r.get("waiting", "") and r,
        )
        assert report["message"] == "" and report["ready"] is False
        plug(janitor, fw)
        new = socket.if_nametoindex(fw.host)
        wait_for("ready again", lambda: (r := node_report(api, name, node)) and r["ready"])
        assert _ifindex_of(dataplane, link, fw.host) == new
