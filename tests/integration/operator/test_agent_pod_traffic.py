"""Per-pod traffic rates served by the node agent (``GET /traffic/pods``) from real traffic.

A client pod and a replica pod joined by a link the agent programs; the client sends a paced UDP
stream of a known rate (4 flows), the replica echoes every datagram. Covers:
- the replica's packets/s (delivered into it) and the client's (the echoes) are within 10 % of
  the sent rate, over the agent's averaging window;
- bits/s is within 10 % of the sent rate times the frame size on the wire (8 x 54 bytes:
  Ethernet, IPv4, UDP and the 12-byte sequence header; the kernel's own IPv6 chatter on the
  veths adds a little);
- the per-pod Prometheus counter (``sfc_k8s_pod_received_packets_total``) is the endpoint's
  delivered packets;
- sessions per pod equal the link's recorded sessions naming its endpoint (read through the data
  plane's own session listing), at least the stream's 4 flows;
- no rate before a sample holds the endpoints; ``?namespace=`` keeps only that namespace's pods;
- one-way traffic (datagrams to a closed port) counts for the pod it is delivered to, not for
  the pod that sends it.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from typing import Any

from sfc_k8s.dataplane import Dataplane
from sfc_k8s.operator.agent_reconcile import link_name
from tests.fixtures.topology import PYTHON, TRAFFIC
from tests.integration.operator.test_agent_programming import (
    NAMESPACE,
    Api,
    running_agent,
    scrape,
    wait_programmed,
)
from tests.integration.operator.test_agent_traffic import PORT, SERVER_IP, _spawn, build, endpoints
from tests.nettools import Janitor, run, unique

RATE = 400.0  # datagrams/s, all flows together: a pace Python keeps on a loaded machine
FLOWS = 4
FRAME = 14 + 20 + 8 + 12  # bytes on the veth: Ethernet, IPv4, UDP, the stream's sequence header
WINDOW = 3.0
ONE_WAY = 300  # datagrams sent to a closed port
BLAST = r"""
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    sock.sendto(b"x", (sys.argv[1], 9))
"""


def pod_traffic(port: int, namespace: str | None = None) -> dict[str, dict[str, Any]]:
    query = f"?namespace={namespace}" if namespace else ""
    url = f"http://127.0.0.1:{port}/traffic/pods{query}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
    return {p["name"]: p for p in body["pods"]}


def test_pod_rates_follow_a_paced_stream(
    apiserver: Any, api: Api, janitor: Janitor, bpffs_root: str, dataplane: Dataplane
) -> None:
    node = unique("node")
    topo = build(janitor, replicas=1)
    name = unique("xc-rate", 30)
    link = link_name(NAMESPACE, name)
    janitor.add(lambda: api.force_delete_xc(name))
    api.create_xc(name, [topo.client.endpoint(node)], endpoints(topo, node, r1="active"))
    argv = [
        "ip", "netns", "exec", topo.client.netns, PYTHON, TRAFFIC, "udp-stream",
        "--server", SERVER_IP, "--port", str(PORT), "--flows", str(FLOWS),
        "--rate", f"{RATE:g}", "--tag", "r1", "--duration", "60",
    ]  # fmt: skip
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with running_agent(apiserver, bpffs_root, node, traffic_window=WINDOW) as agent:
        wait_programmed(api, name, node)
        assert agent.metrics.port is not None
        assert pod_traffic(agent.metrics.port) == {}  # no sample holds the endpoints yet
        stream = _spawn(janitor, argv, **pipes)
        assert stream.stdout is not None
        assert stream.stdout.readline().strip() == "READY"
        time.sleep(WINDOW + 1.5)  # a whole window of steady traffic
        pods = pod_traffic(agent.metrics.port)
        replica, client = pods[topo.replicas["r1"].name], pods[topo.client.name]
        sessions = [s for s in dataplane.sessions(link) if s.b_ifname == topo.replicas["r1"].host]
        out, _ = stream.communicate("stop\n", timeout=20)
        before = _delivered(dataplane, link, topo.replicas["r1"].host)
        exported = _exported(scrape(agent), topo.replicas["r1"].name)
        after = _delivered(dataplane, link, topo.replicas["r1"].host)

    sent = json.loads(out.splitlines()[-1])
    assert all(flow["missing"] == [] for flow in sent["flows"]), sent
    for pod in (replica, client):
        assert abs(pod["packetsPerSecond"] - RATE) <= 0.1 * RATE, pod
        assert abs(pod["bitsPerSecond"] - RATE * FRAME * 8) <= 0.1 * RATE * FRAME * 8, pod
        assert WINDOW - 0.5 <= pod["windowSeconds"] <= WINDOW + 1.5, pod
    assert replica["uid"] == topo.replicas["r1"].uid
    assert replica["interfaces"] == [f"{link}/{topo.replicas['r1'].host}"]
    assert len([s for s in sessions if s.kind == "l4-v4"]) == FLOWS
    assert replica["sessions"] == len(sessions)
    assert before <= exported <= after  # Prometheus' per-pod counter: the endpoint's tx


def _delivered(dataplane: Dataplane, link: str, host: str) -> int:
    return next(e.counters.tx_packets for e in dataplane.endpoints(link) if e.ifname == host)


def _exported(metrics: str, pod: str) -> int:
    prefix = f'sfc_k8s_pod_received_packets_total{{namespace="{NAMESPACE}",pod="{pod}"}} '
    (line,) = [line for line in metrics.splitlines() if line.startswith(prefix)]
    return int(float(line.removeprefix(prefix)))


def test_namespace_filter_and_one_way_traffic(
    apiserver: Any, api: Api, janitor: Janitor, bpffs_root: str
) -> None:
    node = unique("node")
    topo = build(janitor, replicas=1)
    name = unique("xc-ns", 30)
    janitor.add(lambda: api.force_delete_xc(name))
    api.create_xc(name, [topo.client.endpoint(node)], endpoints(topo, node, r1="active"))
    with running_agent(apiserver, bpffs_root, node, traffic_window=WINDOW) as agent:
        wait_programmed(api, name, node)
        assert agent.metrics.port is not None
        port = agent.metrics.port
        agent.traffic.sample()  # a baseline now rather than at the next tick
        time.sleep(0.5)
        assert set(pod_traffic(port, NAMESPACE)) == {topo.client.name, topo.replicas["r1"].name}
        assert pod_traffic(port, "elsewhere") == {}

        # One-way traffic counts for the pod it is delivered to, not the one that sends it:
        # datagrams to a port nobody listens on (the replica's ICMP answers are rate-limited).
        client, replica = topo.client.name, topo.replicas["r1"].name
        before = {pod: _exported(scrape(agent), pod) for pod in (client, replica)}
        run(PYTHON, "-c", BLAST, SERVER_IP, str(ONE_WAY), netns=topo.client.netns)
        after = {pod: _exported(scrape(agent), pod) for pod in (client, replica)}
        assert after[replica] - before[replica] >= ONE_WAY
        assert after[client] - before[client] < ONE_WAY // 2
