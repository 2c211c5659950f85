"""CRD validation benchmark: the local API server's CPU per custom-object write spent in the
schema (prune, defaults, OpenAPI check, CEL rules), fast paths on and off, and a baseline.

Run: ``.venv/bin/python bench/crd_validation.py [--rounds N] [--iterations N] [--baseline REV]``.
Not a test: it asserts nothing; it prints a table and writes
``bench/results/crd_validation.json``.

What the store does for each write of a ServiceFunctionChain (deploy/crds), timed in this
process with no HTTP and no storage, per kind of write: ``create`` (the three-function,
two-link chain of tests/fixtures with an autoscaling block), ``spec update`` (one link's
interface changed: ratcheting re-checks what changed), ``status write`` (the status subresource
as the controller writes it), and ``invalid create`` (two rules fail: refused with their
messages). Variants, interleaved round by round so that a noisy machine slows them alike:
``fast`` (this tree: compiled CEL and OpenAPI checks, cel-python and jsonschema for what they
cannot answer), ``reference`` (this tree with ``fast_rules=False``: every rule on cel-python,
every value on jsonschema) and, with ``--baseline REV``, that revision's ``src/`` in a child
process. Each cell is the median over rounds of the mean time per write (microseconds); ratios
are to ``fast``.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import copy
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "deploy" / "crds" / "servicefunctionchains.yaml"


def chain() -> dict[str, Any]:
    """The fixture chain (as tests/fixtures/chains.firewall_chain), one function autoscaled."""
    functions = [
        {"name": n, "selector": {"matchLabels": {"app": n}}, "interfaces": ifs}
        for n, ifs in (("client", ["eth1"]), ("firewall", ["eth1", "eth2"]), ("server", ["eth1"]))
    ]
    functions[1]["autoscaling"] = {
        "maxReplicas": 8,
        "metric": "packetsPerSecond",
        "targetAverageValue": "100k",
    }
    links = [
        {
            "name": "client-firewall",
            "a": {"function": "client", "interface": "eth1"},
            "b": {"function": "firewall", "interface": "eth1"},
        },
        {
            "name": "firewall-server",
            "a": {"function": "firewall", "interface": "eth2"},
            "b": {"function": "server", "interface": "eth1"},
        },
    ]
    return {
        "apiVersion": "sfc-k8s.io/v1alpha1",
        "kind": "ServiceFunctionChain",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"functions": functions, "links": links},
    }


def status() -> dict[str, Any]:
    functions = {n: {"replicas": 4, "readyReplicas": 4} for n in ("client", "firewall", "server")}
    links = {
        n: {"endpointsA": 4, "endpointsB": 4, "crossConnection": f"web-{n}"}
        for n in ("client-firewall", "firewall-server")
    }
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "AllLinksReady",
        "message": "every link has endpoints on both sides",
        "lastTransitionTime": "2026-12-04T05:00:00Z",
        "observedGeneration": 1,
    }
    return {
        "observedGeneration": 1,
        "readyFunctions": "3/3",
        "readyLinks": "2/2",
        "functions": functions,
        "links": links,
        "conditions": [condition],
    }


def workloads(schema: Any) -> dict[str, Callable[[], Any]]:
    """Each kind of write as the store runs it: prune, apply defaults, validate."""

    def write(obj: dict[str, Any], old: dict[str, Any] | None, part: str | None = None) -> Any:
        pruned, _ = schema.prune(obj)
        return schema.validate(schema.apply_defaults(pruned), old, part=part)

    created = schema.apply_defaults(schema.prune(chain())[0])
    changed = copy.deepcopy(created)
    changed["spec"]["links"][1]["a"]["interface"] = "eth1"
    changed["spec"]["functions"][1]["interfaces"] = ["eth1"]
    with_status = {**created, "status": status()}
    written = copy.deepcopy(with_status)
    written["status"]["readyLinks"] = "1/2"
    invalid = copy.deepcopy(created)
    invalid["spec"]["links"][1]["name"] = "client-firewall"
    invalid["spec"]["functions"][1]["autoscaling"]["minReplicas"] = 9
    return {
        "create": lambda: write(chain(), None),
        "spec update": lambda: write(changed, created),
        "status write": lambda: write(written, with_status, "status"),
        "invalid create": lambda: write(invalid, None),
    }


def measure(variant: str, iterations: int) -> dict[str, float]:
    """Mean microseconds per write of each kind, in this process."""
    from sfc_k8s.local.apiserver.schema import StructuralSchema

    raw = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema = (
        StructuralSchema(raw, fast_rules=False) if variant == "reference" else StructuralSchema(raw)
    )
    result = {}
    for kind, run in workloads(schema).items():
        run()  # compile rules and validators outside the timing
        start = time.perf_counter()
        for _ in range(iterations):
            run()
        result[kind] = (time.perf_counter() - start) / iterations * 1e6
    return result


def measure_revision(src: Path, iterations: int) -> dict[str, float]:
    """The same measurement on another revision's sources, in a child process."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [sys.executable, __file__, "--child", "--iterations", str(iterations)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def show(table: dict[str, dict[str, float]]) -> None:
    kinds = list(next(iter(table.values())))
    names = list(table)
    print(f"{'write (µs, median of rounds)':30}" + "".join(f"{n:>22}" for n in names))
    for kind in kinds:
        fast = table["fast"][kind]
        cells = [f"{table[n][kind]:10.0f} (x{table[n][kind] / fast:5.1f})" for n in names]
        print(f"{kind:30}" + "".join(f"{c:>22}" for c in cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=40, help="writes of each kind a round")
    parser.add_argument("--baseline", metavar="REV", help="also measure this git revision")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/crd_validation.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # a --baseline revision's measurement: its default schema, JSON on stdout
        print(json.dumps(measure("default", args.iterations)))
        return 0
    samples: dict[str, list[dict[str, float]]] = {"fast": [], "reference": []}
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.baseline, "src"],
                capture_output=True,
                check=True,
            )
            subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
            samples[args.baseline] = []
        for _ in range(args.rounds):
            samples["fast"].append(measure("fast", args.iterations))
            samples["reference"].append(measure("reference", args.iterations))
            if args.baseline:
                revision = measure_revision(Path(tmp) / "src", args.iterations)
                samples[args.baseline].append(revision)
    table = {
        name: {kind: statistics.median(r[kind] for r in rounds) for kind in rounds[0]}
        for name, rounds in samples.items()
    }
    print(f"CRD validation per write, {args.rounds} rounds x {args.iterations} writes; ", end="")
    print(f"loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    show(table)
    report = {
        "benchmark": "crd_validation",
        "rounds": args.rounds,
        "iterations": args.iterations,
        "baseline": args.baseline,
        "loadavg": os.getloadavg(),
        "median_us": table,
        "ratio_to_fast": {
            name: {kind: round(v / table["fast"][kind], 2) for kind, v in row.items()}
            for name, row in table.items()
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
