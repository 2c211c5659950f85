"""Autoscaling benchmark: how fast the HPA follows a load step on the firewall, and back.

Run (root): ``.venv/bin/python bench/autoscale.py [--rounds N] [--nodes N] [--rate PPS]``.
Not a test: it asserts nothing; it prints a table and writes ``bench/results/autoscale.json``.

Set-up, all real: ``sfc-k8s local up`` (API server with its HPA controller, node runtimes,
controller, agents, the built-in metrics provider behind its APIService),
``examples/transparent-firewall`` applied and its firewall at 1 replica. Each round, paired:

1. baseline, ``kubectl scale``: under a steady UDP load from the client (once its packets reach
   the firewall), the firewall is scaled 1 -> 2 by hand; measured: from the command to the
   first packet the new replica carries (its eth1 endpoint's counter, polled from the agents
   every 50 ms). This is what any scale-out
   costs (pod start, CNI, endpoint programming) with no autoscaler in the loop;
2. HPA: the chain's firewall gets an ``autoscaling`` block (the controller's HPA: packets/s,
   target ``--rate``/2.5 per replica, 1 to 2 replicas, the demo's behavior: no scale-up
   stabilization, 2 s scale-down window) and the same load starts as a step; measured from the
   step (its first packets in the data plane's counter), all polled at once: (a) the metrics
   pipeline, the first custom metrics API read (``kubectl get --raw``'s path) showing at least
   90 % of the step; (b) the HPA's decision, its
   ``desiredReplicas`` at 2; (c) the first packet the new replica carries. Then the load stops;
   measured from its end: (d) the removed replica starting to drain (the HPA's scale-in taking
   effect), (e) back to one programmed replica (drained and gone: the firewall's 5 s drain).

HPA settings: the local cluster's HPA sync period (1 s, ``custom_metrics.HPA_SYNC_SECONDS``),
the agents' 5 s rate window, the behavior above. Medians (p50) over ``--rounds`` (default 5).
The metrics pipeline's own cost per read is ``bench/metrics_pipeline.py``'s.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sfc_k8s.local import cli as local_cli
from sfc_k8s.local import netns
from sfc_k8s.local.custom_metrics import HPA_SYNC_SECONDS
from sfc_k8s.local.demo_autoscale import BEHAVIOR, HPA, quantity
from sfc_k8s.local.kube import KubeError, SyncKube, load_kubeconfig
from sfc_k8s.local.layout import Layout, node_name
from sfc_k8s.local.paths import examples_dir
from sfc_k8s.local.processes import Progress
from sfc_k8s.local.traffic import Ramp, ramp_argv, scrape_agent

NS = "sfc-demo"
XC_IN = "transparent-firewall-client-firewall"
METRIC = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/sfc-demo/pods/*/packets_per_second"
TIMEOUT = 90.0


class Cluster:
    """The local cluster of the bench and what it reads from it."""

    def __init__(self, layout: Layout, nodes: int) -> None:
        self.layout, self.nodes = layout, nodes

    @property
    def kube(self) -> SyncKube:
        return SyncKube(load_kubeconfig(self.layout.kubeconfig))

    def kubectl(self, *args: str) -> str:
        proc = subprocess.run(
            [local_cli.KUBECTL, "--kubeconfig", str(self.layout.kubeconfig), *args],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return proc.stdout

    def endpoints(self) -> dict[str, tuple[float, str]]:
        """Firewall eth1 endpoints (local to their node): host ifname -> (packets, state)."""
        found = {}
        for i in range(1, self.nodes + 1):
            snap = scrape_agent(self.layout.node_netns(node_name(i)), 9469)
            for (xc, iface), ep in snap.endpoints.items():
                if xc == XC_IN and ep.side == "b" and not ep.remote:
                    found[iface] = (ep.packets, ep.state)
        return found

    def client_netns(self) -> str:
        pods = self.kube.get(f"/api/v1/namespaces/{NS}/pods", labelSelector="app=client")
        return self.layout.pod_netns(pods["items"][0]["metadata"]["uid"])

    def metric(self) -> float:
        items = self.kube.get(METRIC, labelSelector="app=firewall").get("items")
        return sum(quantity(i["value"]) for i in items or [])

    def desired(self) -> int:
        path = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{HPA}"
        try:
            return int((self.kube.get(path).get("status") or {}).get("desiredReplicas", 0))
        except KubeError:
            return 0

    def autoscaling(self, target: float | None) -> None:
        """Give the firewall function its autoscaling block (None: take it away)."""
        op: dict[str, Any] = {"op": "remove", "path": "/spec/functions/1/autoscaling"}
        if target is not None:
            block = {"minReplicas": 1, "maxReplicas": 2, "metric": "packetsPerSecond",
                     "targetAverageValue": f"{target:.0f}", "behavior": BEHAVIOR}  # fmt: skip
            op = {"op": "add", "path": "/spec/functions/1/autoscaling", "value": block}
        self.kubectl("patch", "sfc", "transparent-firewall", "-n", NS, "--type=json",
                     "-p", json.dumps([op]))  # fmt: skip


def wait_for(what: str, check: Callable[[], bool], period: float = 0.05) -> float:
    """Poll ``check`` until it holds; returns the monotonic time it first did."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            if check():
                return time.monotonic()
        except (KubeError, OSError, ValueError):
            pass
        time.sleep(period)
    raise TimeoutError(f"timed out waiting for {what}")


def new_carrying(cluster: Cluster, before: set[str]) -> Callable[[], bool]:
    return lambda: any(i not in before and pk > 0 for i, (pk, _) in cluster.endpoints().items())


def one_replica(cluster: Cluster) -> Callable[[], bool]:
    def check() -> bool:
        eps = cluster.endpoints()
        return len(eps) == 1 and all(st == "active" for _, st in eps.values())

    return check


def load(cluster: Cluster, rate: float, seconds: float) -> subprocess.Popen[str]:
    argv = ramp_argv("192.168.100.20", 9, Ramp(rate, 0.0, seconds, 0.0))
    return subprocess.Popen(netns.exec_argv(cluster.client_netns(), argv), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def stop(proc: subprocess.Popen[str]) -> float:
    proc.kill()
    proc.wait()
    return time.monotonic()


def manual_round(cluster: Cluster, rate: float) -> float:
    before = set(cluster.endpoints())
    proc = load(cluster, rate, 600)
    try:
        load_started(cluster, rate)
        t0 = time.monotonic()
        cluster.kubectl("scale", "deployment/firewall", "-n", NS, "--replicas=2")
        carried = wait_for("the new replica to carry traffic", new_carrying(cluster, before))
    finally:
        stop(proc)
    cluster.kubectl("scale", "deployment/firewall", "-n", NS, "--replicas=1")
    wait_for("one replica", one_replica(cluster), 0.2)
    return carried - t0


def first_times(checks: dict[str, Callable[[], bool]], period: float = 0.05) -> dict[str, float]:
    """Poll every check in turn until each has held once; when each first did (monotonic)."""
    found: dict[str, float] = {}
    deadline = time.monotonic() + TIMEOUT
    while len(found) < len(checks):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {sorted(set(checks) - set(found))}")
        for name, check in checks.items():
            try:
                if name not in found and check():
                    found[name] = time.monotonic()
            except (KubeError, OSError, ValueError):
                pass
        time.sleep(period)
    return found


def load_started(cluster: Cluster, rate: float) -> float:
    """Start the load; returns when its packets reach the firewall (the data plane's counter
    moved by a tenth of a second's worth), not when the process was spawned (~1 s earlier)."""
    before = sum(pk for pk, _ in cluster.endpoints().values())
    return wait_for(
        "the load to reach the firewall",
        lambda: sum(pk for pk, _ in cluster.endpoints().values()) - before >= rate / 10,
        0.02,
    )


def hpa_round(cluster: Cluster, rate: float) -> dict[str, float]:
    target = rate / 2.5
    time.sleep(5.5)  # the agents' window: no load of the previous step left in the metric
    cluster.autoscaling(target)
    try:
        wait_for("the HPA", lambda: cluster.desired() == 1, 0.2)
        before = set(cluster.endpoints())
        proc = load(cluster, rate, 600)
        try:
            t0 = load_started(cluster, rate)
            seen = first_times(
                {
                    "metric_90pct_s": lambda: cluster.metric() >= 0.9 * rate,
                    "hpa_decision_s": lambda: cluster.desired() == 2,
                    "new_replica_carries_s": new_carrying(cluster, before),
                }
            )
            time.sleep(2.0)
        finally:
            t1 = stop(proc)
        after = first_times(
            {
                "scale_in_drain_starts_s": lambda: any(
                    st == "draining" for _, st in cluster.endpoints().values()
                ),
                "scale_in_done_s": one_replica(cluster),
            }
        )
    finally:
        cluster.autoscaling(None)
    return {
        **{k: t - t0 for k, t in seen.items()},
        **{k: t - t1 for k, t in after.items()},
    }


def setup(cluster: Cluster, nodes: int) -> None:
    local_cli.up(cluster.layout, nodes=nodes, progress=Progress(quiet=True))
    cluster.kubectl("apply", "-f", str(examples_dir() / "transparent-firewall"))
    cluster.kubectl("wait", "-n", NS, "--for=condition=Ready", "sfc/transparent-firewall",
                    "--timeout=90s")  # fmt: skip
    cluster.kubectl("scale", "deployment/firewall", "-n", NS, "--replicas=1")
    wait_for("one replica", one_replica(cluster), 0.2)


def run(args: argparse.Namespace, layout: Layout) -> dict[str, Any]:
    cluster = Cluster(layout, args.nodes)
    setup(cluster, args.nodes)
    manual: list[float] = []
    hpa: list[dict[str, float]] = []
    for index in range(args.rounds):
        manual.append(manual_round(cluster, args.rate))
        hpa.append(hpa_round(cluster, args.rate))
        print(f"round {index + 1}/{args.rounds}: kubectl scale {manual[-1]:.2f}s; HPA "
              + ", ".join(f"{k} {v:.2f}" for k, v in hpa[-1].items()), flush=True)  # fmt: skip
    keys = list(hpa[0])
    p50 = {k: statistics.median(r[k] for r in hpa) for k in keys}
    baseline = statistics.median(manual)
    return {
        "settings": {
            "rounds": args.rounds,
            "nodes": args.nodes,
            "load_packets_per_second": args.rate,
            "target_per_replica": args.rate / 2.5,
            "replicas": "1..2",
            "hpa_sync_seconds": HPA_SYNC_SECONDS,
            "metric_window_seconds": 5,
            "behavior": BEHAVIOR,
            "drain_seconds": 5,
        },
        "kubectl_scale_new_replica_carries_s": {"p50": baseline, "runs": manual},
        "hpa": {"p50": p50, "runs": hpa},
        "ratio_hpa_to_kubectl_scale": p50["new_replica_carries_s"] / baseline,
        "load_average": os.getloadavg()[0],
    }


def report(results: dict[str, Any]) -> None:
    s = results["settings"]
    print(
        f"\nAutoscaling reaction, p50 of {s['rounds']} rounds ({s['nodes']} node(s); load"
        f" {s['load_packets_per_second']:g} packets/s, target {s['target_per_replica']:g} per"
        f" replica, HPA sync {s['hpa_sync_seconds']:g}s, metric window 5s, scale-down"
        f" stabilization {s['behavior']['scaleDown']['stabilizationWindowSeconds']}s):"
    )
    base = results["kubectl_scale_new_replica_carries_s"]["p50"]
    print(f"  {'kubectl scale 1->2: new replica carries traffic (baseline)':<58} {base:6.2f} s")
    labels = {
        "metric_90pct_s": "load step -> custom metrics API at 90 %",
        "hpa_decision_s": "load step -> HPA desiredReplicas 2",
        "new_replica_carries_s": "load step -> new replica carries traffic",
        "scale_in_drain_starts_s": "load end -> removed replica draining",
        "scale_in_done_s": "load end -> back to 1 replica (drained, gone)",
    }
    for key, label in labels.items():
        print(f"  {label:<58} {results['hpa']['p50'][key]:6.2f} s")
    print(f"  ratio HPA / kubectl scale (new replica carrying): "
          f"{results['ratio_hpa_to_kubectl_scale']:.2f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--rate", type=float, default=2500.0, help="the step, packets/s")
    parser.add_argument("--out", type=Path, default=Path("bench/results/autoscale.json"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/autoscale.py: needs root", file=sys.stderr)
        return 1
    state = Path(tempfile.mkdtemp(prefix="sfc-bench-autoscale-"))
    layout = Layout(state)
    try:
        results = run(args, layout)
    finally:
        local_cli.down(layout, progress=Progress(quiet=True))
    report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
