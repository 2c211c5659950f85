"""Benchmark of the cross-connection data plane, side by side with its baselines in one run.

Run by ``make bench`` (as root): ``.venv/bin/python bench/dataplane.py [--quick] [--reps N]``.
Not a test: it asserts nothing, it prints a table, PASS/FAIL lines for the targets of the issue,
and writes ``bench/results/dataplane.json``. Method and measured numbers: ``docs/benchmarks.md``.

Setups, all built from namespaces and veths on this machine, measured in turns (repetition after
repetition, every setup once per repetition) so that a noisy neighbour hits them alike:

- ``direct``: client and server namespaces joined by one veth pair (the ceiling);
- ``bridge``: each namespace veth'd to one Linux bridge in the root namespace (what a user would
  use instead of a cross-connection);
- ``xc-1:1``: one cross-connection between the two host ends (side A the client, side B the
  server), packets forwarded by ``bpf_redirect_peer``;
- ``bridge-chain``: the chain client -> bridge -> one NF replica (a bridge in its namespace) ->
  bridge -> server, i.e. what one can build without sfc-k8s: a single NF replica;
- ``xc-chain-1:4``: the same chain with two cross-connections and N = 4 replicas, the SFC case
  the project exists for (see ``docs/benchmarks.md`` for why the chain and not one link fanning
  out to four servers).

Figures per setup: TCP throughput with iperf3 (1 and 8 streams), small-packet UDP rate (iperf3
``-u -l 64 -b 0``: datagrams the server received per second), ping RTT p50/p99 (``ping -i``
at a fixed pace, one RTT per reply), and the program's own per-packet cost from
``BPF_PROG_TEST_RUN`` with repeat (session hit and session miss).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.integration.dataplane.topology import (  # noqa: E402
    Chain,
    ChainLinks,
    Pair,
    bpffs_root,
    in_netns,
    ip_batch,
    spawn,
)
from tests.nettools import Janitor, run, unique  # noqa: E402

RESULTS = REPO / "bench" / "results" / "dataplane.json"
IPERF_PORT = 5201

# metric -> (unit, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "tcp_1_gbps": ("Gbit/s", True),
    "tcp_8_gbps": ("Gbit/s", True),
    "udp64_kpps": ("kpps", True),
    "ping_p50_us": ("us", False),
    "ping_p99_us": ("us", False),
}


@dataclass(frozen=True)
class Setup:
    """Two namespaces to measure between, however they are joined."""

    name: str
    client_ns: str
    server_ns: str
    server_ip: str


# --- building the setups ---------------------------------------------------------------------
def _root_bridge(janitor: Janitor, members: list[str]) -> None:
    bridge = unique("sfctbr")
    run("ip", "link", "add", bridge, "type", "bridge", "stp_state", "0")
    janitor.add(lambda: run("ip", "link", "del", bridge, check=False))
    run("sysctl", "-q", "-w", f"net.ipv6.conf.{bridge}.disable_ipv6=1")
    ip_batch([f"link set {m} master {bridge}" for m in members] + [f"link set {bridge} up"])


def build_setups(janitor: Janitor, replicas: int) -> tuple[list[Setup], Any, str | None]:
    """Every setup; the Dataplane (or None) and why the cross-connection is missing (or None)."""
    setups = []
    for mode in ("direct", "bridge"):
        pair = Pair.build(janitor, mode)
        setups.append(Setup(mode, pair.client_ns, pair.server_ns, pair.addressing.server_ip))

    one = Chain.build(janitor, replicas=1, ipv6=False)
    nf = one.replicas[0]
    _root_bridge(janitor, [one.client_host, nf.eth1_host])
    _root_bridge(janitor, [nf.eth2_host, one.server_host])
    bridge_chain = Setup("bridge-chain", one.client_ns, one.server_ns, one.addressing.server_ip)

    try:
        from sfc_k8s.dataplane import Dataplane
    except ImportError as err:
        return [*setups, bridge_chain], None, f"sfc_k8s.dataplane has no Dataplane yet ({err})"
    dataplane = Dataplane(bpffs_root(janitor))
    janitor.add(dataplane.close)
    janitor.add(dataplane.destroy)

    ends = Pair.build(janitor, "ends")
    dataplane.create_link(unique("sfcb-11"), side_a=[ends.client_host], side_b=[ends.server_host])
    setups.append(Setup("xc-1:1", ends.client_ns, ends.server_ns, ends.addressing.server_ip))
    setups.append(bridge_chain)

    chain = Chain.build(janitor, replicas=replicas, ipv6=False)
    ChainLinks.create(dataplane, chain, prefix="sfcb")
    name = f"xc-chain-1:{replicas}"
    setups.append(Setup(name, chain.client_ns, chain.server_ns, chain.addressing.server_ip))
    return setups, dataplane, None


# --- measuring -------------------------------------------------------------------------------
def iperf3(setup: Setup, *args: str, seconds: float) -> dict[str, Any]:
    argv = in_netns(setup.client_ns, "iperf3", "-c", setup.server_ip, "-p", str(IPERF_PORT),
                    "-t", str(seconds), "-J", *args)  # fmt: skip
    for attempt in range(3):  # the server may still be closing the previous test
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                              check=False)  # fmt: skip
        report: dict[str, Any] = json.loads(proc.stdout or "{}")
        if proc.returncode == 0 and "error" not in report:
            return report
        time.sleep(0.3 * (attempt + 1))
    raise RuntimeError(f"iperf3 failed on {setup.name}: {report.get('error', proc.stderr)}")


def tcp_gbps(setup: Setup, streams: int, seconds: float) -> float:
    report = iperf3(setup, "-P", str(streams), seconds=seconds)
    return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9


def udp_kpps(setup: Setup, seconds: float) -> float:
    total = iperf3(setup, "-u", "-l", "64", "-b", "0", seconds=seconds)["end"]["sum_received"]
    received = int(total["packets"]) - int(total["lost_packets"])
    return received / float(total["seconds"]) / 1e3


def ping_us(setup: Setup, count: int) -> tuple[float, float]:
    proc = run("ping", "-n", "-c", str(count), "-i", "0.002", "-W", "1", setup.server_ip,
               netns=setup.client_ns, timeout=count * 0.01 + 30)  # fmt: skip
    rtts = sorted(float(ms) * 1000 for ms in re.findall(r"time=([0-9.]+) ms", proc.stdout))
    if len(rtts) < count * 0.9:
        raise RuntimeError(f"ping lost too many replies on {setup.name}: {len(rtts)}/{count}")
    p50 = statistics.median(rtts)
    p99 = rtts[min(len(rtts) - 1, round(0.99 * (len(rtts) - 1)))]
    return p50, p99


def measure(setup: Setup, args: argparse.Namespace) -> dict[str, float]:
    p50, p99 = ping_us(setup, args.pings)
    return {
        "tcp_1_gbps": tcp_gbps(setup, 1, args.seconds),
        "tcp_8_gbps": tcp_gbps(setup, 8, args.seconds),
        "udp64_kpps": udp_kpps(setup, args.seconds),
        "ping_p50_us": p50,
        "ping_p99_us": p99,
    }


def prog_cost(dataplane: Any, repeat: int) -> dict[str, float] | str:
    """Per-packet cost (ns) from BPF_PROG_TEST_RUN, or why it could not be measured."""
    bench = getattr(dataplane, "bench_prog", None)
    if bench is None:
        return "the data plane exposes no BPF_PROG_TEST_RUN entry point yet"
    result: dict[str, float] = bench(repeat=repeat)
    return result


# --- reporting -------------------------------------------------------------------------------
def ratios(medians: dict[str, dict[str, float]]) -> dict[str, dict[str, dict[str, float]]]:
    """value / baseline for every cross-connection setup, metric and baseline."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, values in medians.items():
        if not name.startswith("xc-"):
            continue
        baselines = ["direct", "bridge"] + (["bridge-chain"] if "chain" in name else [])
        out[name] = {
            metric: {
                f"vs_{base}": round(value / medians[base][metric], 3)
                for base in baselines
                if medians.get(base, {}).get(metric)
            }
            for metric, value in values.items()
        }
    return out


def targets(
    medians: dict[str, dict[str, float]], cost: dict[str, float] | str, replicas: int
) -> list[dict[str, Any]]:
    """The issue's targets, as ratios from this run (reported, never asserted)."""
    checks: list[tuple[str, Callable[[], float], str, float]] = []

    def ratio(setup: str, metric: str, base: str) -> Callable[[], float]:
        return lambda: medians[setup][metric] / medians[base][metric]

    chain = f"xc-chain-1:{replicas}"
    for setup, base_tcp, base_udp in (("xc-1:1", "direct", "direct"), (chain, None, None)):
        if setup not in medians:
            continue
        if base_tcp:
            checks.append((f"{setup} TCP 1 stream vs {base_tcp}", ratio(setup, "tcp_1_gbps",
                           base_tcp), ">=", 0.95))  # fmt: skip
            checks.append((f"{setup} TCP 8 streams vs {base_tcp}", ratio(setup, "tcp_8_gbps",
                           base_tcp), ">=", 0.95))  # fmt: skip
            checks.append((f"{setup} UDP 64 B rate vs {base_udp}", ratio(setup, "udp64_kpps",
                           base_udp), ">=", 0.90))  # fmt: skip
            checks.append((f"{setup} UDP 64 B rate vs bridge", ratio(setup, "udp64_kpps",
                           "bridge"), ">=", 1.10))  # fmt: skip
        else:  # the chain against the same path built with Linux bridges and one replica
            checks.append((f"{setup} TCP 8 streams vs bridge-chain", ratio(setup, "tcp_8_gbps",
                           "bridge-chain"), ">=", 0.95))  # fmt: skip
            checks.append((f"{setup} UDP 64 B rate vs bridge-chain", ratio(setup, "udp64_kpps",
                           "bridge-chain"), ">=", 1.10))  # fmt: skip
    if isinstance(cost, dict) and "hit_ns" in cost:
        checks.append(("program cost, session hit (ns)", lambda: cost["hit_ns"], "<", 100.0))
    out = []
    for label, value, op, bound in checks:
        v = value()
        ok = v >= bound if op == ">=" else v < bound
        out.append({"target": label, "value": round(v, 3), "op": op, "bound": bound, "pass": ok})
    return out


def print_table(medians: dict[str, dict[str, float]], reps: int) -> None:
    names = list(medians)
    width = max(12, *(len(n) + 2 for n in names))
    print(f"\nmedians of {reps} repetition(s)")
    print(f"{'metric':<22}" + "".join(f"{n:>{width}}" for n in names))
    for metric, (unit, _) in METRICS.items():
        cells = "".join(f"{medians[n][metric]:>{width}.2f}" for n in names)
        print(f"{metric + ' (' + unit + ')':<22}{cells}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition, 1 s tests")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--seconds", type=float, default=3.0, help="iperf3 -t (default 3)")
    parser.add_argument("--pings", type=int, default=1000, help="pings per repetition")
    parser.add_argument("--replicas", type=int, default=4, help="N of the 1:N chain")
    parser.add_argument("--repeat", type=int, default=1_000_000, help="BPF_PROG_TEST_RUN repeat")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.seconds, args.pings, args.repeat = 1, 1.0, 300, 100_000
    if os.geteuid() != 0:
        print("bench/dataplane.py needs root (namespaces, veths, BPF)", file=sys.stderr)
        return 2

    janitor = Janitor()
    try:
        setups, dataplane, missing = build_setups(janitor, args.replicas)
        if missing:
            print(f"cross-connection not measured: {missing}")
        for setup in setups:
            argv = in_netns(setup.server_ns, "iperf3", "-s", "-p", str(IPERF_PORT))
            spawn(janitor, argv, output=False)
        time.sleep(0.3)
        runs: dict[str, list[dict[str, float]]] = {s.name: [] for s in setups}
        for rep in range(args.reps):
            for setup in setups:
                started = time.monotonic()
                runs[setup.name].append(measure(setup, args))
                print(f"rep {rep + 1}/{args.reps} {setup.name}: "
                      + ", ".join(f"{k}={v:.2f}" for k, v in runs[setup.name][-1].items())
                      + f" ({time.monotonic() - started:.1f} s)", flush=True)  # fmt: skip
        cost = prog_cost(dataplane, args.repeat) if dataplane else "no data plane"
    finally:
        janitor.close()

    medians = {
        name: {m: statistics.median(r[m] for r in values) for m in METRICS}
        for name, values in runs.items()
    }
    print_table(medians, args.reps)
    if isinstance(cost, dict):
        print("program cost (BPF_PROG_TEST_RUN): "
              + ", ".join(f"{k}={v:.1f}" for k, v in cost.items()))  # fmt: skip
    else:
        print(f"program cost (BPF_PROG_TEST_RUN): not measured: {cost}")
    rel = ratios(medians)
    for name, metrics in rel.items():
        print(f"{name} ratios: "
              + "; ".join(f"{m} " + " ".join(f"{b}={r:.2f}" for b, r in bases.items())
                          for m, bases in metrics.items()))  # fmt: skip
    checks = targets(medians, cost, args.replicas)
    for check in checks:
        verdict = "PASS" if check["pass"] else "FAIL"
        print(f"{verdict} {check['target']}: {check['value']} {check['op']} {check['bound']}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count()},
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "units": {m: unit for m, (unit, _) in METRICS.items()},
        "runs": runs,
        "medians": medians,
        "ratios": rel,
        "prog_cost_ns": cost,
        "targets": checks,
        "missing": missing,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
