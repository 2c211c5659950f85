"""Metrics pipeline benchmark: how long a traffic change takes to reach the custom metrics API.

Run (root): ``.venv/bin/python bench/metrics_pipeline.py [--rounds N] [--windows 5,2]
[--requests N] [--rate PPS]``. Not a test: it asserts nothing; it prints tables and writes
``bench/results/metrics_pipeline.json``.

Set-up, all real: the local API server (in this process, no controllers), a node agent (Kopf in
a thread) programming one link between a client and an NF pod (network namespaces and veths),
``sfc-k8s metrics-provider`` as its own process, registered by an APIService. Two measurements:

1. Request cost, interleaved round by round: one ``packets_per_second`` read of the pod (a)
   from the agent (``/traffic/pods``, the baseline), (b) from the provider over HTTPS (it lists
   the pods and nodes from the API server, then asks the agent), (c) through the API server's
   aggregation layer, as the HPA and ``kubectl get --raw`` read it. Median and p90 (ms), ratios
   to (a).
2. Step response, per averaging window (the agent's ``--traffic-window``): from the first
   packet of a paced UDP stream of ``--rate`` packets/s (seen in the data plane's counter,
   polled every 5 ms) to the first read showing at least 90 % of the rate, for the agent (a)
   and through the aggregation layer (c), polled every 50 ms; median over ``--rounds``. The
   rate averages over the window, so a step shows once ~90 % of the window has passed: the
   window, not the transport, is the pipeline's delay.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import contextlib
import json
import socket
import ssl
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fixtures.apiserver import LocalAPIServer
from tests.fixtures.topology import PYTHON, TRAFFIC
from tests.integration.operator.test_agent_programming import (
    Api,
    Pod,
    new_bpffs_root,
    running_agent,
    wait_programmed,
)
from tests.integration.operator.test_agent_traffic import (
    PORT,
    SERVER_IP,
    Topology,
    _spawn,
    build,
)
from tests.integration.operator.test_metrics_provider import (
    _quantity,
    nf_pod,
    register_node,
    registration,
)
from tests.nettools import Janitor, unique

from sfc_k8s.dataplane import Dataplane
from sfc_k8s.local.apiserver import APIServer
from sfc_k8s.operator.agent_reconcile import link_name

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "metrics_pipeline.json"
METRIC = "namespaces/default/pods/{pod}/packets_per_second"


def _get(url: str, context: ssl.SSLContext | None = None) -> Any:
    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        return json.loads(response.read())


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Readers:
    """The three ways to read the pod's packets/s: agent, provider, aggregation layer."""

    def __init__(self, agent_port: int, provider_port: int, api_url: str, pod: str) -> None:
        self.pod = pod
        self._agent = f"http://127.0.0.1:{agent_port}/traffic/pods?namespace=default"
        path = "/apis/custom.metrics.k8s.io/v1beta2/" + METRIC.format(pod=pod)
        self._provider = f"https://127.0.0.1:{provider_port}{path}"
        self._api = api_url + path
        self._insecure = ssl.create_default_context()
        self._insecure.check_hostname = False
        self._insecure.verify_mode = ssl.CERT_NONE

    def agent(self) -> float:
        pods = _get(self._agent)["pods"]
        return float(next((p["packetsPerSecond"] for p in pods if p["name"] == self.pod), 0.0))

    def provider(self) -> float:
        return _quantity(_get(self._provider, self._insecure)["items"][0]["value"])

    def api(self) -> float:
        return _quantity(_get(self._api)["items"][0]["value"])


def request_costs(readers: Readers, count: int) -> dict[str, dict[str, float]]:
    ways: dict[str, Callable[[], float]] = {
        "agent": readers.agent,
        "provider": readers.provider,
        "aggregated": readers.api,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(count):
        for name, read in ways.items():
            started = time.perf_counter()
            read()
            times[name].append((time.perf_counter() - started) * 1000)
    return {
        name: {"p50_ms": statistics.median(values), "p90_ms": _percentile(values, 0.9)}
        for name, values in times.items()
    }


def _delivered(dataplane: Dataplane, link: str, host: str) -> int:
    return next(e.counters.tx_packets for e in dataplane.endpoints(link) if e.ifname == host)


@contextlib.contextmanager
def provider_process(kubeconfig: Path, janitor: Janitor) -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    argv = [
        sys.executable, "-m", "sfc_k8s.cli", "metrics-provider", "--kubeconfig", str(kubeconfig),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    janitor.add(lambda: (proc.terminate(), proc.wait(10)))
    for _ in range(200):
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        time.sleep(0.05)
    yield port


@dataclass
class Bench:
    """What every measurement shares: the cluster, the pods and the provider."""

    args: argparse.Namespace
    janitor: Janitor
    cluster: LocalAPIServer
    api: Api
    topo: Topology
    nf: Pod
    root: str
    provider_port: int = 0

    def step_response(
        self, readers: Readers, counter: Callable[[], int], window: float
    ) -> dict[str, float]:
        """One step: seconds from the first packet to >= 90 % of the rate at the agent and
        through the aggregation layer."""
        rate = self.args.rate
        deadline = time.monotonic() + 4 * window + 10
        while readers.agent() > 0.05 * rate:  # the previous step has left the window
            if time.monotonic() > deadline:
                raise RuntimeError("the rate never fell back after the previous step")
            time.sleep(0.2)
        argv = [
            "ip", "netns", "exec", self.topo.client.netns, PYTHON, TRAFFIC, "udp-stream",
            "--server", SERVER_IP, "--port", str(PORT), "--flows", "4",
            "--rate", f"{rate:g}", "--tag", "fw", "--duration", "120",
        ]  # fmt: skip
        before = counter()
        stream = _spawn(self.janitor, argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        while counter() == before:
            time.sleep(0.005)
        first = time.monotonic()
        seen: dict[str, float] = {}
        deadline = first + 4 * window + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            for name, read in (("agent", readers.agent), ("aggregated", readers.api)):
                if name not in seen and read() >= 0.9 * rate:
                    seen[name] = time.monotonic() - first
            time.sleep(0.05)
        assert stream.stdin is not None
        stream.stdin.write("stop\n")
        stream.stdin.flush()
        stream.wait(timeout=20)
        return seen

    def one_window(self, window: float, *, costs: bool) -> dict[str, Any]:
        node = "bench-node"
        name = unique("xc-bench", 30)
        self.janitor.add(lambda: self.api.force_delete_xc(name))
        with running_agent(self.cluster, self.root, node, traffic_window=window) as agent:
            assert agent.metrics.port is not None
            register_node(self.cluster, node, agent.metrics.port)
            client = self.topo.client.endpoint(node)
            self.api.create_xc(name, [client], [self.nf.endpoint(node)])
            wait_programmed(self.api, name, node)
            time.sleep(1.2)  # a first sample of the endpoints
            port = agent.metrics.port
            readers = Readers(port, self.provider_port, self.cluster.url, self.nf.name)
            link = link_name("default", name)
            with contextlib.closing(Dataplane(self.root, session_table_size=65536)) as dataplane:
                counter = lambda: _delivered(dataplane, link, self.nf.host)  # noqa: E731
                steps = [
                    self.step_response(readers, counter, window) for _ in range(self.args.rounds)
                ]
                measured = request_costs(readers, self.args.requests) if costs else {}
            self.api.force_delete_xc(name)
        summary = {
            way: statistics.median(s[way] for s in steps if way in s)
            for way in ("agent", "aggregated")
            if any(way in s for s in steps)
        }
        return {"steps": steps, "step_p50_s": summary, "request_costs": measured}


def run(args: argparse.Namespace, janitor: Janitor, state: Path) -> dict[str, Any]:
    server = APIServer(state_dir=state, controllers=False)
    server.start()
    janitor.add(server.stop)
    cluster = LocalAPIServer(
        server=server, kubeconfig=server.write_kubeconfig(state / "kubeconfig"), cache_dir=state
    )
    cluster.apply_crds()
    api = Api(cluster.url)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "nf-0", "labels": {"app": "nf"}},
        "spec": {"nodeName": "bench-node", "containers": [{"name": "nf", "image": "nf"}]},
    }
    cluster.kubectl("apply", "-f", "-", check=True, input=json.dumps(pod))
    stored = json.loads(cluster.kubectl("get", "pod", "nf-0", "-o", "json", check=True).stdout)
    topo = build(janitor, replicas=0)
    nf = nf_pod(janitor, topo, stored)  # the API's pod: its name and uid, a real netns
    results: dict[str, Any] = {"rate": args.rate, "windows": {}}
    bench = Bench(args, janitor, cluster, api, topo, nf, new_bpffs_root(janitor))
    with provider_process(cluster.kubeconfig, janitor) as bench.provider_port:
        cluster.kubectl("apply", "-f", "-", input=registration(bench.provider_port), check=True)
        for window in args.windows:
            costs = window == args.windows[0]
            results["windows"][str(window)] = bench.one_window(window, costs=costs)
    return results


def report(results: dict[str, Any]) -> None:
    for window, data in results["windows"].items():
        costs = data["request_costs"]
        if costs:
            base = costs["agent"]["p50_ms"]
            print("\nrequest cost (one packets_per_second read), ms")
            print(f"{'path':<12}{'p50':>8}{'p90':>8}{'x agent':>9}")
            for way, figures in costs.items():
                ratio = figures["p50_ms"] / base
                print(f"{way:<12}{figures['p50_ms']:>8.2f}{figures['p90_ms']:>8.2f}{ratio:>9.2f}")
        step = data["step_p50_s"]
        print(
            f"\nwindow {window} s: step to 90 % of {results['rate']:g} pps, p50 over"
            f" {len(data['steps'])}: agent {step.get('agent', float('nan')):.2f} s, through the"
            f" aggregation layer {step.get('aggregated', float('nan')):.2f} s"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--rate", type=float, default=400.0)
    parser.add_argument(
        "--windows", type=lambda s: [float(w) for w in s.split(",")], default=[5.0, 2.0]
    )
    args = parser.parse_args()
    janitor = Janitor()
    try:
        with tempfile.TemporaryDirectory(prefix="sfc-bench-metrics-") as state:
            results = run(args, janitor, Path(state))
    finally:
        janitor.close()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    report(results)
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
