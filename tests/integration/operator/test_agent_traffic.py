"""Real traffic through links the node agent programs from CrossConnections.

A client namespace and server replica namespaces (same IP and MAC on every replica's eth1, as the
CNI plugin gives them), joined only by the link the agent programs; each replica's UDP echo
server tags its answers with its name. Covers:
- scaling follows the spec: a new replica endpoint gets new flows while existing flows stay on
  their replica; a draining replica keeps its flows and gets no new ones; a removed replica's
  flows move to the remaining ones;
- agent restart: the new agent adopts the pinned state (same link and endpoint ids, every
  interface keeping the TCX link it got when it appeared, no duplicate, nothing
  re-created), a UDP sequence running across the restart loses nothing, and a link whose xc was
  deleted while the agent was down (finalizer stripped) is garbage-collected.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from sfc_k8s.api.naming import mac_from_seed
from sfc_k8s.dataplane import Dataplane, LinkStatus
from sfc_k8s.dataplane import _libbpf as bpf
from sfc_k8s.operator.agent_reconcile import link_name
from tests.fixtures.topology import PYTHON, TRAFFIC
from tests.integration.operator.test_agent_programming import (
    NAMESPACE,
    Api,
    Pod,
    link_state,
    make_pod,
    plug,
    running_agent,
    wait_for,
    wait_programmed,
)
from tests.nettools import Janitor, run, unique

CLIENT_IP, SERVER_IP, PORT = "10.231.0.1", "10.231.0.2", 7000
CLIENT_MAC = mac_from_seed("agent-test/client")
SERVER_MAC = mac_from_seed("agent-test/server")

# One datagram per source port, answered by whichever replica the link chose.
PROBE = r"""
import json, socket, sys
server, port, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
answers = {}
for sport in range(first, first + count):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", sport))
    sock.settimeout(0.5)
    answers[sport] = None
    for _ in range(3):
        sock.sendto(b"|probe", (server, port))
        try:
            answers[sport] = sock.recv(2048).split(b"|")[0].decode()
            break
        except socket.timeout:
            continue
    sock.close()
print(json.dumps(answers))
"""


@dataclass
class Topology:
    client: Pod
    replicas: dict[str, Pod]


def _spawn(janitor: Janitor, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, text=True, **kwargs)

    def stop() -> None:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)

    janitor.add(stop)
    return proc


def build(janitor: Janitor, replicas: int) -> Topology:
    client = make_pod(janitor, "client")
    plug(janitor, client, mac=CLIENT_MAC, ip=f"{CLIENT_IP}/24")
    run(
        "ip", "neigh", "replace", SERVER_IP, "lladdr", SERVER_MAC, "dev", "eth1", netns=client.netns
    )
    topo = Topology(client, {})
    for index in range(replicas):
        add_replica(janitor, topo, f"r{index + 1}")
    return topo


def add_replica(janitor: Janitor, topo: Topology, tag: str) -> Pod:
    pod = make_pod(janitor, tag)
    plug(janitor, pod, mac=SERVER_MAC, ip=f"{SERVER_IP}/24")
    run("ip", "neigh", "replace", CLIENT_IP, "lladdr", CLIENT_MAC, "dev", "eth1", netns=pod.netns)
    server = _spawn(
        janitor,
        ["ip", "netns", "exec", pod.netns, PYTHON, TRAFFIC, "udp-echo", str(PORT), "--tag", tag],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert server.stdout is not None
    assert "listening" in server.stdout.readline()
    topo.replicas[tag] = pod
    return pod


def probe(topo: Topology, first: int, count: int) -> dict[int, str | None]:
    out = run(
        PYTHON, "-c", PROBE, SERVER_IP, str(PORT), str(first), str(count), netns=topo.client.netns
    )
    return {int(port): tag for port, tag in json.loads(out.stdout).items()}


def endpoints(topo: Topology, node: str, **states: str) -> list[dict[str, Any]]:
    return [topo.replicas[tag].endpoint(node, state) for tag, state in sorted(states.items())]


def test_traffic_follows_scale_out_drain_and_scale_in(
    apiserver: Any, api: Api, janitor: Janitor, bpffs_root: str, dataplane: Dataplane
) -> None:
    node = unique("node")
    topo = build(janitor, replicas=2)
    name = unique("xc-scale", 30)
    link = link_name(NAMESPACE, name)
    janitor.add(lambda: api.force_delete_xc(name))
    a = [topo.client.endpoint(node)]
    api.create_xc(name, a, endpoints(topo, node, r1="active"))

    r1, r2 = topo.replicas["r1"].host, topo.replicas["r2"].host
    with running_agent(apiserver, bpffs_root, node):
        # The agent's report is the sync point: it is written once every operation is applied.
        wait_programmed(api, name, node)
        old = probe(topo, 30000, 16)
        assert set(old.values()) == {"r1"}

        # Scale-out: new flows spread over both replicas, existing ones stay where they are.
        api.set_endpoints(name, a, endpoints(topo, node, r1="active", r2="active"))
        wait_programmed(api, name, node)
        assert (link_state(dataplane, link) or {}).get(r2) == ("b", "active")
        new = probe(topo, 31000, 64)
        assert set(new.values()) == {"r1", "r2"}, new
        assert probe(topo, 30000, 16) == old

        # r1 terminating: drains (keeps its flows, no new ones).
        api.set_endpoints(name, a, endpoints(topo, node, r1="draining", r2="active"))
        wait_programmed(api, name, node)
        assert (link_state(dataplane, link) or {}).get(r1) == ("b", "draining")
        assert set(probe(topo, 32000, 32).values()) == {"r2"}
        assert probe(topo, 30000, 16) == old

        # r1 gone: its sessions are purged and its flows land on r2.
        api.set_endpoints(name, a, endpoints(topo, node, r2="active"))
        wait_programmed(api, name, node)
        assert r1 not in (link_state(dataplane, link) or {})
        assert set(probe(topo, 30000, 16).values()) == {"r2"}


def _rx_of(status: LinkStatus, topo: Topology) -> int:
    """Packets the link took in from the client so far."""
    return next(e.counters.rx_packets for e in status.endpoints if e.ifname == topo.client.host)


def _rx(dataplane: Dataplane, link: str, topo: Topology) -> int:
    return _rx_of(dataplane.status(link), topo)


def test_restart_adopts_pinned_state_and_keeps_traffic_flowing(
    apiserver: Any, api: Api, janitor: Janitor, bpffs_root: str, dataplane: Dataplane
) -> None:
    node = unique("node")
    topo = build(janitor, replicas=1)
    spare = [make_pod(janitor, p) for p in ("spare-a", "spare-b")]
    for pod in spare:
        plug(janitor, pod)
    name, gone = unique("xc-keep", 30), unique("xc-gone", 30)
    link, gone_link = link_name(NAMESPACE, name), link_name(NAMESPACE, gone)
    for xc in (name, gone):
        janitor.add(lambda xc=xc: api.force_delete_xc(xc))
    api.create_xc(name, [topo.client.endpoint(node)], endpoints(topo, node, r1="active"))
    api.create_xc(gone, [spare[0].endpoint(node)], [spare[1].endpoint(node)])

    argv = [
        "ip", "netns", "exec", topo.client.netns, PYTHON, TRAFFIC, "udp-stream",
        "--server", SERVER_IP, "--port", str(PORT), "--flows", "4", "--rate", "500",
        "--tag", "r1", "--duration", "60",
    ]  # fmt: skip
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    # The agent attaches this test's interfaces as they appear (others on this host are not
    # this node's: tests run several nodes in one namespace).
    pods = [topo.client, *topo.replicas.values(), *spare]
    watch = {"attach_interfaces": True, "attach_only": frozenset(p.host for p in pods)}
    with running_agent(apiserver, bpffs_root, node, **watch):
        wait_programmed(api, name, node)
        wait_programmed(api, gone, node)
        stream = _spawn(janitor, argv, **pipes)
        assert stream.stdout is not None
        assert stream.stdout.readline().strip() == "READY"
        before = dataplane.status(link)
        tcx = bpf.all_tcx_links()
        attached = {e.ifname: tcx.get(e.ifindex) for e in before.endpoints}
        assert all(links and len(links) == 1 for links in attached.values())  # once each

    # The agent is down: traffic keeps flowing through the pinned state, and an xc vanishes.
    api.force_delete_xc(gone)
    wait_for("the stripped xc gone", lambda: api.get_xc(gone) is None)
    assert set(dataplane.links()) == {link, gone_link}
    # Packets cross while no agent runs (an event, whatever the machine's load).
    start = _rx_of(before, topo)
    wait_for("traffic with no agent", lambda: _rx(dataplane, link, topo) > start)
    down = _rx(dataplane, link, topo)

    with running_agent(apiserver, bpffs_root, node, **watch):
        wait_for("the stale link collected", lambda: gone_link not in dataplane.links())
        time.sleep(0.5)  # the resume pass has run by now; traffic keeps going meanwhile
        after = dataplane.status(link)
        wait_for("traffic after the restart", lambda: _rx(dataplane, link, topo) > down)
        assert dataplane.links() == [link]
        assert after.link_id == before.link_id  # adopted, not re-created
        assert [(e.side, e.ifname, e.state, e.id) for e in after.endpoints] == [
            (e.side, e.ifname, e.state, e.id) for e in before.endpoints
        ]
        # The interfaces keep the very TCX links they had: nothing detached or attached again.
        tcx = bpf.all_tcx_links()
        assert {e.ifname: tcx.get(e.ifindex) for e in after.endpoints} == attached

    out, err = stream.communicate("stop\n", timeout=20)
    result = json.loads(out.splitlines()[-1])
    assert result["bad"] == 0, err
    for flow in result["flows"]:
        assert flow["sent"] > 0
        assert flow["missing"] == [], flow
