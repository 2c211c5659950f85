"""Agent restart with many links programmed: time to re-adopt them all, and packets lost.

Run as root: ``.venv/bin/python bench/agent_restart.py [--links 1000] [--restarts 2]``. Not a
test: it prints a table and writes ``bench/results/agent_restart.json``. Numbers and their
meaning: ``docs/dataplane.md`` ("Attach at pod creation") and ``docs/benchmarks.md``.

A local API server (the tests' own), ``--links`` CrossConnections on one node, each of one
endpoint per side, whose host interfaces are veths named as ``sfc-cni`` names them (peers down,
no traffic), plus one link between a client pod and a UDP echo replica (the tests' topology)
through which a paced UDP stream (4 flows, 500 datagrams/s each) runs for the whole run. The
real ``NodeAgent`` (Kopf, ``KopfRunner``) programs them all (first start: its interface watch
attaches every interface, then the CrossConnections are programmed), then is stopped and started
again ``--restarts`` times. For each restart:

- **re-adopted**: from the new agent's start to every CrossConnection's resume handler done
  (the agent's reconcile count), i.e. every link checked against its spec;
- what it changed: data-plane operations (create/delete link, add/remove endpoint) made, TCX
  attaches made, and whether every link kept its id, endpoints (id, slot state) and interface
  TCX links;
- the stream's lost datagrams (the stream's own sequence numbers, both directions).

``PYTHONPATH=OTHER/src`` runs another tree's agent and data plane (e.g. a detached worktree of
main, its ``make bpf`` done) with this bench, for a baseline; ``--out`` names its JSON.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kopf.testing import KopfRunner
from tests.fixtures.apiserver import LocalAPIServer
from tests.fixtures.topology import PYTHON, TRAFFIC
from tests.integration.operator.test_agent_programming import Api
from tests.integration.operator.test_agent_traffic import PORT, SERVER_IP, build, endpoints
from tests.nettools import janitor, unique

import sfc_k8s
from sfc_k8s.api.naming import host_ifname
from sfc_k8s.dataplane import Dataplane
from sfc_k8s.dataplane import _libbpf as bpf
from sfc_k8s.local.apiserver import APIServer
from sfc_k8s.operator.agent import AgentConfig, NodeAgent

RESULTS = Path(__file__).resolve().parent / "results" / "agent_restart.json"


def endpoint(node: str, host: str, uid: str) -> dict[str, Any]:
    return {"pod": f"p{uid[:8]}", "podUID": uid, "node": node, "interface": "eth1",
            "hostInterface": host, "state": "active"}  # fmt: skip


def make_interfaces(count: int) -> list[tuple[str, str]]:
    """``count`` veths named as sfc-cni names host ends (peer down): (host end, pod UID)."""
    made = []
    lines = []
    for _ in range(count):
        uid = str(uuid.uuid4())
        host = host_ifname(uid, "eth1")
        made.append((host, uid))
        lines.append(f"link add {host} type veth peer name x{host[3:]}\nlink set {host} up\n")
    subprocess.run(["ip", "-batch", "-"], input="".join(lines), text=True, check=True)
    return made


def delete_interfaces(made: list[tuple[str, str]]) -> None:
    text = "".join(f"link del {host}\n" for host, _ in made)
    subprocess.run(["ip", "-force", "-batch", "-"], input=text, text=True, check=False)


def reconciles(agent: NodeAgent) -> int:
    """How many xc reconciles the agent finished (its histogram's count)."""
    for family in agent.metrics.reconcile_seconds.collect():
        for sample in family.samples:
            if sample.name.endswith("_count"):
                return int(sample.value)
    return 0


def operations(agent: NodeAgent) -> int:
    total = 0
    for family in agent.metrics.operations.collect():
        total += sum(int(s.value) for s in family.samples if s.name.endswith("_total"))
    return total


def attaches(agent: NodeAgent) -> int:
    """Attaches the agent's interface watch made (0 for a tree without one)."""
    watch = getattr(agent, "interfaces", None)
    return int(watch.attached) if watch is not None else 0


def snapshot(dp: Dataplane) -> dict[str, Any]:
    """Every link's id and endpoints (id, ifname, state), and each interface's TCX links."""
    links = {}
    ifindexes = []
    for name in dp.links():
        eps = dp.endpoints(name)
        links[name] = (
            dp._link_id(name),
            [(e.side.value, e.id, e.ifname, e.state.value) for e in eps],
        )
        ifindexes += [e.ifindex for e in eps]
    if not hasattr(bpf, "all_tcx_links"):  # a baseline tree (PYTHONPATH) without it
        return {"links": links}
    tcx = bpf.all_tcx_links()
    return {"links": links, "tcx": {i: sorted(tcx.get(i, {})) for i in ifindexes}}


def run_agent(
    server: LocalAPIServer, root: str, node: str, mine: set[str]
) -> tuple[NodeAgent, KopfRunner]:
    watch: dict[str, Any] = {"attach_interfaces": True, "attach_only": frozenset(mine)}
    if "attach_interfaces" not in AgentConfig.__dataclass_fields__:
        watch = {}  # a baseline tree (PYTHONPATH=OTHER/src): links attach their interfaces
    config = AgentConfig(node=node, kubeconfig=str(server.kubeconfig), bpffs_root=root,
                         metrics_port=None, retry_delay=0.2, session_table_size=65536,
                         **watch)  # fmt: skip
    agent = NodeAgent(config)
    runner = KopfRunner(["run", "--standalone", "--all-namespaces"], registry=agent.registry,
                        settings=agent.settings, timeout=120)  # fmt: skip
    runner.__enter__()
    return agent, runner


def wait(what: str, probe: Any, timeout: float) -> float:
    started = time.monotonic()
    while not probe():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=1000)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    node = unique("node")
    root = f"/sys/fs/bpf/sfcb-{uuid.uuid4().hex[:8]}"
    result: dict[str, Any] = {"links": args.links, "restarts": []}
    with tempfile.TemporaryDirectory() as state, janitor() as j:
        server = APIServer(host="127.0.0.1", port=0, state_dir=Path(state))
        server.start()
        j.add(server.stop)
        kubeconfig = server.write_kubeconfig(Path(state) / "kubeconfig")
        local = LocalAPIServer(server=server, kubeconfig=kubeconfig, cache_dir=Path(state) / "c")
        local.apply_crds()
        api = Api(local.url)
        j.add(lambda: Dataplane(root, session_table_size=65536).destroy())

        topo = build(j, replicas=1)
        api.create_xc("traffic", [topo.client.endpoint(node)], endpoints(topo, node, r1="active"))
        made = make_interfaces(2 * args.links)
        j.add(lambda: delete_interfaces(made))
        for i in range(args.links):
            (ha, ua), (hb, ub) = made[2 * i], made[2 * i + 1]
            api.create_xc(f"xc{i}", [endpoint(node, ha, ua)], [endpoint(node, hb, ub)])
        total = args.links + 1
        mine = {host for host, _ in made} | {topo.client.host, topo.replicas["r1"].host}
        dp = Dataplane(root, session_table_size=65536)
        j.add(dp.close)
        under_test = Node(local, root, node, mine, dp, total)
        first_start(result, under_test)
        stream = start_stream(topo.client.netns)
        j.add(lambda: stream.poll() is None and stream.kill())
        for _ in range(args.restarts):
            result["restarts"].append(restart(under_test))
        out, _ = stream.communicate("stop\n", timeout=60)
        stats = json.loads(out.splitlines()[-1])
        sent = sum(f["sent"] for f in stats["flows"])
        lost = sum(len(f["missing"]) for f in stats["flows"])
        result["stream"] = {"sent": sent, "lost": lost, "bad": stats["bad"]}
        print(f"stream across {args.restarts} restarts: {lost} lost of {sent} sent")
    result["tree"] = str(Path(sfc_k8s.__file__).parent)
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


@dataclass(frozen=True)
class Node:
    """The node under test: API server, bpffs root, name, its interfaces, the data plane."""

    local: LocalAPIServer
    root: str
    name: str
    mine: set[str]
    dp: Dataplane
    total: int  # xcs, hence links

    def agent(self) -> tuple[NodeAgent, KopfRunner]:
        return run_agent(self.local, self.root, self.name, self.mine)


def first_start(result: dict[str, Any], node: Node) -> None:
    """The agent's first start: every interface attached, every xc programmed."""
    started = time.monotonic()
    agent, runner = node.agent()
    try:
        first = wait("every link programmed", lambda: len(node.dp.links()) == node.total, 900)
        wait("every reconcile", lambda: reconciles(agent) >= node.total, 300)
        result["first_start_seconds"] = time.monotonic() - started
        result["first_start_attaches"] = attaches(agent)
    finally:
        runner.__exit__(None, None, None)
    # After the runner: while it runs, click's runner holds sys.stdout.
    print(f"first start: {node.total} links programmed in {first:.1f} s")


def start_stream(netns: str) -> subprocess.Popen[str]:
    """The paced UDP stream through the traffic link, until told to stop."""
    argv = ["ip", "netns", "exec", netns, PYTHON, TRAFFIC, "udp-stream", "--server", SERVER_IP,
            "--port", str(PORT), "--flows", "4", "--rate", "500", "--tag", "r1",
            "--duration", "600"]  # fmt: skip
    stream = subprocess.Popen(argv, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)  # fmt: skip
    assert stream.stdout is not None and stream.stdout.readline().strip() == "READY"
    return stream


def restart(node: Node) -> dict[str, Any]:
    """One agent start over the programmed node: how long until every xc was resumed, and
    what it changed."""
    before = snapshot(node.dp)
    agent, runner = node.agent()
    try:
        adopted = wait("every xc resumed", lambda: reconciles(agent) >= node.total, 300)
        time.sleep(1.0)  # anything the resume pass would still do shows up here
        figures = {
            "readopt_seconds": adopted,
            "operations": operations(agent),
            "attaches": attaches(agent),
            "unchanged": snapshot(node.dp) == before,
        }
    finally:
        runner.__exit__(None, None, None)
    print(f"restart: {node.total} links re-adopted in {adopted:.2f} s; {figures}")
    return figures


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
