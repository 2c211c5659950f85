"""API-server benchmark: the cost of ServiceFunctionChain writes (CRD schema + CEL validation).

Run: ``.venv/bin/python bench/apiserver_writes.py [--writes N] [--pods N] [--baseline REV]``.
Not a test: it asserts nothing; it prints a table (median and p90 per request, milliseconds)
and writes ``bench/results/apiserver_writes.json``. With ``--baseline REV`` (a git revision) the
same measurement runs first on that revision's ``src/`` (extracted to a temporary directory,
in a child process) and both are shown side by side with their ratio.

It starts the local API server in this process (its own thread and loop), registers the
project's CRD (deploy/crds/servicefunctionchains.yaml), creates `--pods` pods in the namespace
(the controller's situation), then times over one keep-alive HTTP connection, as a client does:
chain creates, status merge patches (what the controller writes), label-only patches and spec
patches of the chains.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import http.client
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from tests.fixtures.chains import firewall_chain

from sfc_k8s.local.apiserver import APIServer

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "deploy" / "crds" / "servicefunctionchains.yaml"
BASE = "/apis/sfc-k8s.io/v1alpha1/namespaces/default/servicefunctionchains"


def request(
    conn: http.client.HTTPConnection, method: str, path: str, body: Any, ctype: str
) -> float:
    data = json.dumps(body).encode()
    start = time.perf_counter()
    conn.request(method, path, body=data, headers={"Content-Type": ctype})
    response = conn.getresponse()
    payload = response.read()
    elapsed = (time.perf_counter() - start) * 1000.0
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {payload[:300]!r}")
    return elapsed


def measure(writes: int, pods: int) -> dict[str, dict[str, float]]:
    merge = "application/merge-patch+json"
    with tempfile.TemporaryDirectory() as tmp, APIServer(state_dir=Path(tmp)) as server:
        conn = http.client.HTTPConnection(server.host, server.port)
        crd = yaml.safe_load(CRD.read_text())
        crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        request(conn, "POST", crds, crd, "application/json")
        for i in range(pods):
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"p{i}", "labels": {"app": "client"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            }
            request(conn, "POST", "/api/v1/namespaces/default/pods", pod, "application/json")
        samples: dict[str, list[float]] = {"create": [], "status": [], "label": [], "spec": []}
        for i in range(writes):
            samples["create"].append(
                request(conn, "POST", BASE, firewall_chain(f"c{i}"), "application/json")
            )
        for i in range(writes):
            status = {"status": {"observedGeneration": i, "readyFunctions": f"{i % 4}/3"}}
            samples["status"].append(request(conn, "PATCH", f"{BASE}/c{i}/status", status, merge))
        for i in range(writes):
            label = {"metadata": {"labels": {"round": str(i)}}}
            samples["label"].append(request(conn, "PATCH", f"{BASE}/c{i}", label, merge))
        for i in range(writes):
            spec = {"spec": {"dataplane": {"drainTimeoutSeconds": 10 + i}}}
            samples["spec"].append(request(conn, "PATCH", f"{BASE}/c{i}", spec, merge))
        conn.close()
    return {
        kind: {
            "median_ms": round(statistics.median(values), 2),
            "p90_ms": round(statistics.quantiles(values, n=10)[-1], 2),
            "n": len(values),
        }
        for kind, values in samples.items()
    }


def baseline(rev: str, writes: int, pods: int) -> dict[str, dict[str, float]]:
    """The same measurement on revision `rev`'s sources, in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        out = Path(tmp) / "result.json"
        env = {**os.environ, "PYTHONPATH": str(Path(tmp) / "src")}
        command = [sys.executable, __file__, "--writes", str(writes), "--pods", str(pods)]
        subprocess.run([*command, "--output", str(out)], env=env, check=True, capture_output=True)
        result: dict[str, dict[str, float]] = json.loads(out.read_text())["writes"]
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=40, help="writes of each kind")
    parser.add_argument("--pods", type=int, default=1200, help="pods in the namespace")
    parser.add_argument("--baseline", metavar="REV", help="also measure this git revision")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/apiserver_writes.json")
    args = parser.parse_args()
    base = baseline(args.baseline, args.writes, args.pods) if args.baseline else None
    result = measure(args.writes, args.pods)
    print(f"chain writes over HTTP, {args.pods} pods present, {args.writes} of each (ms)")
    header = f"{'write':<8} {'median':>8} {'p90':>8}"
    if base is not None:
        header += f" | {args.baseline[:12] + ' median':>20} {'p90':>8} {'ratio':>7}"
    print(header)
    for kind, row in result.items():
        line = f"{kind:<8} {row['median_ms']:>8.2f} {row['p90_ms']:>8.2f}"
        if base is not None:
            old = base[kind]
            ratio = old["median_ms"] / row["median_ms"] if row["median_ms"] else float("inf")
            line += f" | {old['median_ms']:>20.2f} {old['p90_ms']:>8.2f} {ratio:>6.1f}x"
        print(line)
    record = {"pods": args.pods, "writes": result, "baseline": args.baseline, "base": base}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
