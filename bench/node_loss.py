"""Node-loss reaction: from a Node's loss in the API to its endpoints leaving the other nodes'
tables, measured on the local cluster (``sfc-k8s local up --nodes 3``) with the real agents.

Run as root: ``.venv/bin/python bench/node_loss.py [--runs 5] [--grace 3]
[--losses notready,deleted] [--controller running,paused]``. Not a test: it prints every run
and p50/p99 per kind of loss, and writes ``bench/results/node_loss.json``. Method and measured
numbers: ``docs/benchmarks.md``.

The cluster (its own state directory, removed at the end): three nodes, a chain client ->
firewall -> server with the client on node-1, the server on node-3 and one firewall replica on
each node (pods placed by ``nodeName``), so that node-1's and node-3's agents each hold both
links with node-2's two endpoints (its replica's eth1 and eth2) programmed as remote ones.

One run: node-2 is crashed (``local node stop node-2``: its runtime, agent and pods killed, its
underlay link down) and, for a ``deleted`` loss, its Node deleted at once. A watch of the Node
(opened before the crash) gives the moment the API shows the loss: the Ready condition turning
not True (``notready``: after the grace period without heartbeat) or the DELETED event
(``deleted``). From then, node-1's and node-3's pinned endpoint tables are read every few
milliseconds until no endpoint of node-2's address is left on either. The figure is that
interval: the agents' Node watch delivering the event, their re-plan, and the data-plane update
on both nodes (plus up to one poll, ``--poll``). It does not include the grace period itself
(a setting: ``--grace``). With ``--controller paused`` the controller is frozen (SIGSTOP)
through the run, so that only the agents' own Node watch can react (as when the controller ran
on the lost node); ``running`` measures whichever of the controller and the agents acts first.
Then node-2 is started again, its pods re-created if a deletion took them, and the next run
waits until both other nodes program its endpoints again. The kinds of run alternate.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import contextlib
import http.client
import io
import json
import queue
import signal
import socket
import statistics
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.dataplane import REPO

from sfc_k8s.api.conditions import object_condition
from sfc_k8s.dataplane import Dataplane, LinkNotFound
from sfc_k8s.kube import auth_headers, ssl_context
from sfc_k8s.local import cli as local_cli
from sfc_k8s.local import operator_pods
from sfc_k8s.local.kube import KubeError, NotFoundError, SyncKube, load_kubeconfig
from sfc_k8s.local.layout import Layout

RESULTS = REPO / "bench" / "results" / "node_loss.json"
NS = "sfc-nodeloss"
LOST, OTHERS = "node-2", ("node-1", "node-3")
PODS = {  # name -> (app, node, networks)
    "client": ("client", "node-1", "client-net@eth1"),
    "server": ("server", "node-3", "server-net@eth1"),
    **{f"fw-{i}": ("firewall", f"node-{i}", "fw-in@eth1,fw-out@eth2") for i in (1, 2, 3)},
}
NADS = {  # name -> static address ("" : none)
    "client-net": "192.168.100.10/24",
    "server-net": "192.168.100.20/24",
    "fw-in": "",
    "fw-out": "",
}
TUNNEL_MTU = 1450


# --- the cluster and its chain -----------------------------------------------------------------
def _nad(name: str, address: str) -> dict[str, Any]:
    config: dict[str, Any] = {"cniVersion": "1.0.0", "name": name, "type": "sfc-cni",
                              "macSeed": f"{NS}/{name}", "mtu": TUNNEL_MTU}  # fmt: skip
    if address:
        config["ipam"] = {"type": "static", "addresses": [{"address": address}]}
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"config": json.dumps(config)},
    }


def _pod(name: str) -> dict[str, Any]:
    app, node, networks = PODS[name]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": app},
                     "annotations": {"k8s.v1.cni.cncf.io/networks": networks}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "main", "image": "ignored.example/none:0",
                                 "command": ["sleep", "1000000"]}]},
    }  # fmt: skip


def _chain() -> dict[str, Any]:
    functions = [("client", ["eth1"]), ("firewall", ["eth1", "eth2"]), ("server", ["eth1"])]
    links = [("client-firewall", "client", "firewall"), ("firewall-server", "firewall", "server")]
    return {
        "apiVersion": "sfc-k8s.io/v1alpha1",
        "kind": "ServiceFunctionChain",
        "metadata": {"name": "loss", "namespace": NS},
        "spec": {
            "functions": [{"name": n, "selector": {"matchLabels": {"app": n}}, "interfaces": i}
                          for n, i in functions],
            "links": [{"name": name,
                       "a": {"function": a, "interface": "eth1" if a == "client" else "eth2"},
                       "b": {"function": b, "interface": "eth1"}} for name, a, b in links],
        },
    }  # fmt: skip


def deploy(kube: SyncKube) -> None:
    kube.request("POST", "/api/v1/namespaces", body={"kind": "Namespace", "metadata": {"name": NS}})
    for name, address in NADS.items():
        path = f"/apis/k8s.cni.cncf.io/v1/namespaces/{NS}/network-attachment-definitions"
        kube.request("POST", path, body=_nad(name, address))
    ensure_pods(kube)
    path = f"/apis/sfc-k8s.io/v1alpha1/namespaces/{NS}/servicefunctionchains"
    kube.request("POST", path, body=_chain())


def ensure_pods(kube: SyncKube) -> None:
    """Create every pod that is missing (a deleted Node's pods may have been removed)."""
    for name in PODS:
        try:
            kube.get(f"/api/v1/namespaces/{NS}/pods/{name}")
        except NotFoundError:
            kube.request("POST", f"/api/v1/namespaces/{NS}/pods", body=_pod(name))


def wait_for(what: str, check: Callable[[], bool], timeout: float, pause: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(pause)


def node_address(kube: SyncKube, name: str) -> str:
    node = kube.get(f"/api/v1/nodes/{name}")
    return str(next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"))


def node_ready(kube: SyncKube, name: str) -> bool:
    try:
        node = kube.get(f"/api/v1/nodes/{name}")
    except NotFoundError:
        return False
    return (object_condition(node, "Ready") or {}).get("status") == "True"


def _holds(dp: Dataplane, address: str) -> bool:
    for link in dp.links():
        try:
            if any(e.node == address for e in dp.endpoints(link)):
                return True
        except LinkNotFound:  # removed by the agent meanwhile
            continue
    return False


def holds_remote(dataplanes: dict[str, Dataplane], address: str) -> dict[str, bool]:
    """Per node: whether any of its links still holds an endpoint on ``address``."""
    return {node: _holds(dp, address) for node, dp in dataplanes.items()}


# --- one run -----------------------------------------------------------------------------------
class NodeWatch:
    """A watch of one Node in a thread: puts (monotonic time, event type, Ready status) on a
    queue as each event arrives."""

    def __init__(self, kube: SyncKube, name: str) -> None:
        rv = kube.get("/api/v1/nodes")["metadata"]["resourceVersion"]
        url = urllib.parse.urlsplit(kube.conn.server)
        path = (f"/api/v1/nodes?watch=1&resourceVersion={rv}"
                f"&fieldSelector=metadata.name%3D{name}&timeoutSeconds=600")  # fmt: skip
        if url.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                url.netloc, context=ssl_context(kube.conn)
            )
        else:
            conn = http.client.HTTPConnection(url.netloc)
        conn.request("GET", path, headers=auth_headers(kube.conn))
        self._socket = conn.sock  # shut down by ``close``: closing the response would wait
        self._response = conn.getresponse()  # for the reader thread's lock
        self.events: queue.Queue[tuple[float, str, str]] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # the socket shut down by ``close``
            for line in self._response:
                event = json.loads(line)
                ready = (object_condition(event["object"], "Ready") or {}).get("status", "")
                self.events.put((time.monotonic(), event["type"], str(ready)))

    def lost_at(self, timeout: float) -> float:
        """When the API first showed the Node deleted or not Ready."""
        deadline = time.monotonic() + timeout
        while True:
            at, kind, ready = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            if kind == "DELETED" or ready != "True":
                return at

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
        self._response.close()
        self._socket.close()


@contextlib.contextmanager
def controller_frozen(layout: Layout, frozen: bool) -> Iterator[None]:
    """SIGSTOP the controller for the block (if ``frozen``; both replicas of deploy/'s
    Deployment): only the agents' watch reacts."""
    pids = operator_pods.container_pids(layout, "controller") if frozen else []
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # on the lost node, killed with it
                os.kill(pid, signal.SIGCONT)


def local(layout: Layout, *args: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = local_cli.main([*args, "--state-dir", str(layout.state_dir)])
    if code != 0:
        raise RuntimeError(f"sfc-k8s local {' '.join(args)} failed: {out.getvalue()}")


def measure(layout: Layout, kube: SyncKube, address: str, *, loss: str, frozen: bool,
            args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """One node loss and return; the interval per other node (ms) and their maximum."""
    dataplanes = {node: Dataplane(layout.bpffs_root(node)) for node in OTHERS}
    try:
        wait_for(f"{OTHERS} programming {LOST}'s endpoints",
                 lambda: all(holds_remote(dataplanes, address).values()), 120)  # fmt: skip
        with controller_frozen(layout, frozen):
            watch = NodeWatch(kube, LOST)
            try:
                local(layout, "node", "stop", LOST)
                if loss == "deleted":
                    kube.request("DELETE", f"/api/v1/nodes/{LOST}")
                shown = watch.lost_at(args.grace + 30)
            finally:
                watch.close()
            gone: dict[str, float] = {}
            while len(gone) < len(OTHERS):
                now = time.monotonic()
                if now - shown > args.give_up:
                    raise RuntimeError(f"{LOST}'s endpoints still programmed on {OTHERS}")
                for node, held in holds_remote(dataplanes, address).items():
                    if not held:
                        gone.setdefault(node, now)
                time.sleep(args.poll)
    finally:
        for dp in dataplanes.values():
            dp.close()
    local(layout, "node", "start", LOST)
    wait_for(f"{LOST} Ready", lambda: node_ready(kube, LOST), 90, pause=0.5)
    ensure_pods(kube)
    per_node = {node: round((at - shown) * 1000, 1) for node, at in gone.items()}
    return {"per_node_ms": per_node, "ms": max(per_node.values())}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- main ----------------------------------------------------------------------------------------
def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per kind of loss (default 5)")
    grace = "the local cluster's node monitor grace period (default 3 s)"
    parser.add_argument("--grace", type=float, default=3.0, help=grace)
    parser.add_argument("--losses", default="notready,deleted", help="notready, deleted or both")
    parser.add_argument("--controller", default="running,paused", help="running, paused or both")
    parser.add_argument("--poll", type=float, default=0.005, help="table poll period (s)")
    parser.add_argument("--give-up", type=float, default=60.0, help="per run bound (s)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.kinds = [(loss, ctl) for loss in args.losses.split(",")
                  for ctl in args.controller.split(",")]  # fmt: skip
    unknown = {k for k in args.kinds if k[0] not in ("notready", "deleted")
               or k[1] not in ("running", "paused")}  # fmt: skip
    if unknown:
        parser.error(f"unknown kinds of run {sorted(unknown)}: see --losses and --controller")
    return args


def run_all(layout: Layout, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    local_cli.up(layout, nodes=3, node_grace=args.grace, eviction_timeout=3600.0,
                 progress=local_cli.Progress(quiet=True), timeout=180)  # fmt: skip
    kube = SyncKube(load_kubeconfig(layout.kubeconfig))
    deploy(kube)
    address = node_address(kube, LOST)
    print(f"cluster up, chain deployed; {LOST} is {address}", flush=True)
    results: dict[str, list[dict[str, Any]]] = {f"{loss}/{ctl}": [] for loss, ctl in args.kinds}
    for run in range(args.runs):
        for loss, ctl in args.kinds:
            result = measure(layout, kube, address, loss=loss, frozen=ctl == "paused", args=args)
            results[f"{loss}/{ctl}"].append(result)
            print(f"run {run + 1}/{args.runs} {loss}/{ctl}: {result['ms']:.1f} ms "
                  f"{result['per_node_ms']}", flush=True)  # fmt: skip
    return results


def main(argv: list[str]) -> int:
    args = parse(argv)
    if os.geteuid() != 0:
        print("bench/node_loss.py needs root (the local cluster)", file=sys.stderr)
        return 2
    load_at_start = os.getloadavg()
    print(f"load average at start: {load_at_start[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="sfc-nodeloss-") as tmp:
        layout = Layout(Path(tmp) / "state")
        try:
            results = run_all(layout, args)
        except (KubeError, RuntimeError, queue.Empty) as err:
            print(f"bench/node_loss.py: {err or type(err).__name__}", file=sys.stderr)
            return 1
        finally:
            local_cli.down(layout, progress=local_cli.Progress(quiet=True))
    summary = {}
    for kind, runs in results.items():
        values = [r["ms"] for r in runs]
        summary[kind] = {
            "p50_ms": statistics.median(values),
            "p99_ms": percentile(values, 0.99),
            "min_ms": min(values),
            "max_ms": max(values),
            "runs": len(values),
        }
        print(f"{kind}: p50 {summary[kind]['p50_ms']:.1f} ms, p99 {summary[kind]['p99_ms']:.1f} ms"
              f" over {len(values)} runs")  # fmt: skip
    report = {
        "loadavg_at_start": load_at_start,
        "loadavg_at_end": os.getloadavg(),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": results,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
