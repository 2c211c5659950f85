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
``BPF_PROG_TEST_RUN`` with repeat (session hit and session miss), beside two trivial programs
built in the same run (the floor of the measurement on this machine).
"""

from __future__ import annotations

import os
import sys

# Run as `python bench/dataplane.py`: import the shared topology from the repository root.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json
import platform
import re
import socket
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._common import Machine, needs_root, write_report  # noqa: E402
from tests.fixtures.topology import (  # noqa: E402
    Chain,
    ChainLinks,
    Pair,
    bpffs_root,
    in_netns,
    ip_batch,
    spawn,
)
from tests.nettools import Janitor, run, unique  # noqa: E402

from sfc_k8s.dataplane import Dataplane  # noqa: E402
from sfc_k8s.dataplane import _libbpf as libbpf  # noqa: E402

RESULTS = REPO / "bench" / "results" / "dataplane.json"
IPERF_PORT = 5201

BASES = ("direct", "bridge", "bridge-chain")  # the baselines of the ratio table

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


def build_setups(janitor: Janitor, replicas: int) -> tuple[list[Setup], Dataplane, Pair]:
    """Every setup, in table order; the data plane and the 1:1 pair (for the program cost)."""
    setups = []
    for mode in ("direct", "bridge"):
        pair = Pair.build(janitor, mode)
        setups.append(Setup(mode, pair.client_ns, pair.server_ns, pair.addressing.server_ip))

    dataplane = Dataplane(bpffs_root(janitor))  # the production session table size
    janitor.add(dataplane.close)
    janitor.add(dataplane.destroy)
    ends = Pair.build(janitor, "ends")
    dataplane.create_link(unique("sfcb-11"), side_a=[ends.client_host], side_b=[ends.server_host])
    setups.append(Setup("xc-1:1", ends.client_ns, ends.server_ns, ends.addressing.server_ip))

    one = Chain.build(janitor, replicas=1, ipv6=False)
    nf = one.replicas[0]
    _root_bridge(janitor, [one.client_host, nf.eth1_host])
    _root_bridge(janitor, [nf.eth2_host, one.server_host])
    setups.append(Setup("bridge-chain", one.client_ns, one.server_ns, one.addressing.server_ip))

    chain = Chain.build(janitor, replicas=replicas, ipv6=False)
    ChainLinks.create(dataplane, chain, prefix="sfcb")
    name = f"xc-chain-1:{replicas}"
    setups.append(Setup(name, chain.client_ns, chain.server_ns, chain.addressing.server_ip))
    return setups, dataplane, ends


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


TESTS: dict[str, Callable[[Setup, argparse.Namespace], dict[str, float]]] = {
    "tcp_1": lambda s, a: {"tcp_1_gbps": tcp_gbps(s, 1, a.seconds)},
    "tcp_8": lambda s, a: {"tcp_8_gbps": tcp_gbps(s, 8, a.seconds)},
    "udp64": lambda s, a: {"udp64_kpps": udp_kpps(s, a.seconds)},
    "ping": lambda s, a: dict(
        zip(("ping_p50_us", "ping_p99_us"), ping_us(s, a.pings), strict=True)
    ),
}


def measure_round(
    setups: list[Setup], args: argparse.Namespace, rep: int
) -> dict[str, dict[str, float]]:
    """One repetition: each test on every setup back to back, so that the setups compared in a
    ratio are measured seconds apart; the order rotates with ``rep`` so none is always first."""
    order = setups[rep % len(setups) :] + setups[: rep % len(setups)]
    out: dict[str, dict[str, float]] = {s.name: {} for s in setups}
    for test in TESTS.values():
        for setup in order:
            out[setup.name].update(test(setup, args))
    return out


SKB_CTX_SIZE = 192  # sizeof(struct __sk_buff) on 6.x kernels
SKB_IFINDEX = 40  # offsetof(struct __sk_buff, ifindex): the interface the frame arrives on
TC_ACT_REDIRECT = 7
RUNS = 5  # BPF_PROG_TEST_RUN calls per figure, ``repeat / RUNS`` repetitions each; the figure
# is their median (the fastest is kept beside it: judging the best of N would hide the load)


def udp_frame(pair: Pair, sport: int) -> bytes:
    """A minimal Ethernet/IPv4/UDP frame from the pair's client to its server."""
    a = pair.addressing
    eth = bytes.fromhex(a.server_mac.replace(":", "")) + bytes.fromhex(
        a.client_mac.replace(":", "")
    )
    payload = b"\0" * 18
    udp = struct.pack("!HHHH", sport, 5201, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                     socket.inet_aton(a.client_ip), socket.inet_aton(a.server_ip))  # fmt: skip
    return eth + b"\x08\x00" + ip + udp


FLOOR_C = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("tc") int floor_ok(struct __sk_buff *skb) { return 0; }
SEC("tc") int floor_peer(struct __sk_buff *skb) { return bpf_redirect_peer(skb->ifindex, 0); }
char LICENSE[] SEC("license") = "GPL";
"""


def floor_cost(frame: bytes, ctx: bytes, repeat: int) -> dict[str, float]:
    """The same measurement on two trivial TC programs, built here: the machine's floor.

    ``floor_ok_ns`` returns TC_ACT_OK at once (what BPF_PROG_TEST_RUN itself costs per
    repetition); ``floor_peer_ns`` only calls bpf_redirect_peer (the cheapest forwarder).
    """
    arch = platform.machine()
    with tempfile.TemporaryDirectory(prefix="sfcb-floor-") as tmp:
        src, obj = Path(tmp, "floor.bpf.c"), Path(tmp, "floor.bpf.o")
        src.write_text(FLOOR_C)
        run("clang", "-O2", "-target", "bpf", f"-I/usr/include/{arch}-linux-gnu", "-c",
            str(src), "-o", str(obj))  # fmt: skip
        handle = libbpf.object_open(str(obj))
        try:
            libbpf.object_load(handle)
            out = {}
            for name in ("floor_ok", "floor_peer"):
                fd = libbpf.program_fd(libbpf.object_program(handle, name))
                runs = [libbpf.prog_test_run(fd, frame, ctx=ctx, repeat=repeat // RUNS)
                        for _ in range(RUNS)]  # fmt: skip
                out[f"{name}_ns"] = float(statistics.median(r.duration_ns for r in runs))
            return out
        finally:
            libbpf.object_close(handle)


def prog_cost(dataplane: Dataplane, pair: Pair, repeat: int, flows: int) -> dict[str, float]:
    """Per-packet cost (ns) of the program from BPF_PROG_TEST_RUN on the 1:1 link's side A.

    ``hit_ns``: one frame of an established flow run ``repeat`` times, the kernel's average per
    run: the median of ``RUNS`` calls (``hit_min_ns`` the fastest, for reference only: a best
    of N hides the load the packets meet).
    A miss cannot be repeated (its first run records the session), so each of ``flows`` new
    flows is run three times: a miss, a hit found in the session table (which fills the flow
    cache), a hit found in the flow cache. ``miss_extra_ns`` and ``table_extra_ns`` are the
    medians of the first and the second run minus the third, paired differences that cancel
    the clock reads and cold caches a single run carries; ``miss_ns`` = ``hit_ns`` +
    ``miss_extra_ns`` estimates a miss and ``table_hit_ns`` a hit that is not in the cache
    (a flow whose entry another flow took, and every 64th packet of a flow, which the flow
    cache sends to the session table to refresh the shared entry).
    """
    ctx = bytearray(SKB_CTX_SIZE)
    struct.pack_into("=I", ctx, SKB_IFINDEX, socket.if_nametoindex(pair.client_host))
    fd = dataplane.program_fd

    def once(sport: int, times: int = 1) -> int:
        result = libbpf.prog_test_run(fd, udp_frame(pair, sport), ctx=bytes(ctx), repeat=times)
        if result.retval != TC_ACT_REDIRECT:
            raise RuntimeError(f"program returned {result.retval} instead of a redirect")
        return result.duration_ns

    once(40000)  # records the session
    hits = [once(40000, repeat // RUNS) for _ in range(RUNS)]
    hit = float(statistics.median(hits))
    runs = [(once(p), once(p), once(p)) for p in range(41000, 41000 + flows)]
    extra = float(statistics.median(miss - cached for miss, _, cached in runs))
    table = float(statistics.median(found - cached for _, found, cached in runs))
    return {
        "hit_ns": hit,
        "hit_min_ns": float(min(hits)),
        "miss_extra_ns": extra,
        "miss_ns": hit + extra,
        "table_extra_ns": table,
        "table_hit_ns": hit + table,
        **floor_cost(udp_frame(pair, 40000), bytes(ctx), repeat),
    }


# --- reporting -------------------------------------------------------------------------------
def paired_ratios(
    runs: dict[str, list[dict[str, float]]], against: dict[str, list[str]]
) -> dict[str, dict[str, dict[str, float]]]:
    """For every setup of ``against``, metric and baseline listed for it: the median over
    repetitions of value / baseline value, each ratio taken within one repetition (paired), so
    that load that drifts over the run cancels out. ``vs_<base>_min`` and ``_max`` show their
    spread. Setups or baselines absent from ``runs`` are left out."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, baselines in against.items():
        if name not in runs:
            continue
        values = runs[name]
        out[name] = {}
        for metric in METRICS:
            cell: dict[str, float] = {}
            for base in (b for b in baselines if b in runs):
                paired = [v[metric] / b[metric] for v, b in zip(values, runs[base], strict=True)]
                cell[f"vs_{base}"] = round(statistics.median(paired), 3)
                cell[f"vs_{base}_min"] = round(min(paired), 3)
                cell[f"vs_{base}_max"] = round(max(paired), 3)
            out[name][metric] = cell
    return out


def ratios(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Every cross-connection setup against the direct pair and the bridge, the chain also
    against the bridged chain (``paired_ratios``)."""
    against = {
        name: ["direct", "bridge"] + (["bridge-chain"] if "chain" in name else [])
        for name in runs
        if name.startswith("xc-")
    }
    return paired_ratios(runs, against)


def ratio_targets(
    rel: dict[str, dict[str, dict[str, float]]], wanted: list[tuple[str, str, str, float]]
) -> list[dict[str, Any]]:
    """Each (setup, metric, baseline, bound) of ``wanted`` whose paired ratio was measured:
    the ratio, and whether it reaches the bound (reported, never asserted)."""
    out = []
    for setup, metric, base, bound in wanted:
        value = rel.get(setup, {}).get(metric, {}).get(f"vs_{base}")
        if value is None:
            continue
        label = f"{setup} {metric} / {base}"
        out.append(
            {"target": label, "value": value, "op": ">=", "bound": bound, "pass": value >= bound}
        )
    return out


def targets(
    rel: dict[str, dict[str, dict[str, float]]], cost: dict[str, float], replicas: int
) -> list[dict[str, Any]]:
    """The issue's targets, as paired ratios from this run (reported, never asserted).

    They apply to the 1:1 cross-connection, whose path is comparable with the direct pair and
    the bridge; the 1:N chain is held to the same throughput and rate targets against the same
    chain built with Linux bridges (which can only carry one NF replica).
    """
    chain = f"xc-chain-1:{replicas}"
    wanted = [
        ("xc-1:1", "tcp_1_gbps", "direct", 0.95),
        ("xc-1:1", "tcp_8_gbps", "direct", 0.95),
        ("xc-1:1", "udp64_kpps", "direct", 0.90),
        ("xc-1:1", "udp64_kpps", "bridge", 1.10),
        (chain, "tcp_1_gbps", "bridge-chain", 0.95),
        (chain, "tcp_8_gbps", "bridge-chain", 0.95),
        (chain, "udp64_kpps", "bridge-chain", 1.10),
    ]
    out = ratio_targets(rel, wanted)
    hit = cost["hit_ns"]
    out.append(
        {"target": "program cost, session hit, median of calls (ns)", "value": hit, "op": "<",
         "bound": 100.0, "pass": hit < 100.0}
    )  # fmt: skip
    return out


def print_table(medians: dict[str, dict[str, float]], reps: int) -> None:
    names = list(medians)
    width = max(12, *(len(n) + 2 for n in names))
    print(f"\nmedians of {reps} repetition(s)")
    print(f"{'metric':<22}" + "".join(f"{n:>{width}}" for n in names))
    for metric, (unit, _) in METRICS.items():
        cells = "".join(f"{medians[n][metric]:>{width}.2f}" for n in names)
        print(f"{metric + ' (' + unit + ')':<22}{cells}")


def markdown(report: dict[str, Any], bases: tuple[str, ...] = BASES) -> str:
    """The run as Markdown tables, for docs/benchmarks.md: medians, paired ratios against
    ``bases``, the program cost (if measured) and the targets."""
    medians, rel = report["medians"], report["ratios"]
    names = list(medians)
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for metric, (unit, _) in METRICS.items():
        cells = " | ".join(f"{medians[n][metric]:.2f}" for n in names)
        lines.append(f"| {metric} ({unit}) | {cells} |")
    lines += [
        "",
        "| paired ratio, median (min-max) | " + " | ".join(f"vs {b}" for b in bases) + " |",
    ]
    lines.append("|---" * (len(bases) + 1) + "|")
    for name, metrics in rel.items():
        for metric, values in metrics.items():
            cells = " | ".join(
                f"{values[f'vs_{b}']:.2f} ({values[f'vs_{b}_min']:.2f}-{values[f'vs_{b}_max']:.2f})"
                if f"vs_{b}" in values
                else ""
                for b in bases
            )
            lines.append(f"| {name} {metric} | {cells} |")
    cost = report.get("prog_cost_ns")
    if cost:
        lines += ["", "| program cost (ns/packet) | value |", "|---|---|"]
        lines += [f"| {k.removesuffix('_ns')} | {v:.0f} |" for k, v in cost.items()]
    lines += ["", *(f"- {'PASS' if t['pass'] else 'FAIL'} {t['target']}: {t['value']} "
                    f"{t['op']} {t['bound']}" for t in report["targets"])]  # fmt: skip
    return "\n".join(lines)


def serve_iperf3(janitor: Janitor, setups: list[Setup]) -> None:
    """An iperf3 server in every setup's server namespace (the janitor stops them)."""
    for setup in setups:
        spawn(janitor, in_netns(setup.server_ns, "iperf3", "-s", "-p", str(IPERF_PORT)),
              output=False)  # fmt: skip
    time.sleep(0.3)


def run_rounds(setups: list[Setup], args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    """``args.reps`` repetitions of ``measure_round``, printed as they come: per setup, the
    figures of each repetition."""
    runs: dict[str, list[dict[str, float]]] = {s.name: [] for s in setups}
    for rep in range(args.reps):
        started = time.monotonic()
        for name, values in measure_round(setups, args, rep).items():
            runs[name].append(values)
            shown = ", ".join(f"{k}={v:.2f}" for k, v in values.items())
            print(f"rep {rep + 1}/{args.reps} {name}: {shown}", flush=True)
        print(f"rep {rep + 1} took {time.monotonic() - started:.1f} s", flush=True)
    return runs


def medians_of(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per setup and metric, the median over repetitions."""
    return {
        name: {m: statistics.median(r[m] for r in values) for m in METRICS}
        for name, values in runs.items()
    }


def print_ratios(rel: dict[str, dict[str, dict[str, float]]]) -> None:
    for name, metrics in rel.items():
        shown = "; ".join(
            f"{m} "
            + " ".join(f"{b}={r:.2f}" for b, r in cell.items() if not b.endswith(("_min", "_max")))
            for m, cell in metrics.items()
        )
        print(f"{name} ratios (paired medians): {shown}")


def print_targets(checks: list[dict[str, Any]]) -> None:
    for check in checks:
        verdict = "PASS" if check["pass"] else "FAIL"
        print(f"{verdict} {check['target']}: {check['value']} {check['op']} {check['bound']}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition, 1 s tests")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument("--seconds", type=float, default=2.0, help="iperf3 -t (default 2)")
    parser.add_argument("--pings", type=int, default=1000, help="pings per repetition")
    parser.add_argument("--replicas", type=int, default=4, help="N of the 1:N chain")
    parser.add_argument("--repeat", type=int, default=1_000_000, help="BPF_PROG_TEST_RUN repeat")
    parser.add_argument("--flows", type=int, default=5000, help="new flows for the miss cost")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--markdown", action="store_true", help="also print Markdown tables")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.seconds, args.pings, args.repeat, args.flows = 1, 1.0, 300, 100_000, 1000
    if not needs_root("bench/dataplane.py"):
        return 2

    machine = Machine.start()
    janitor = Janitor()
    try:
        setups, dataplane, ends = build_setups(janitor, args.replicas)
        serve_iperf3(janitor, setups)
        runs = run_rounds(setups, args)
        cost = prog_cost(dataplane, ends, args.repeat, args.flows)
    finally:
        janitor.close()

    medians = medians_of(runs)
    print_table(medians, args.reps)
    print("program cost (BPF_PROG_TEST_RUN, ns): "
          + ", ".join(f"{k}={v:.1f}" for k, v in cost.items()))  # fmt: skip
    rel = ratios(runs)
    print_ratios(rel)
    checks = targets(rel, cost, args.replicas)
    print_targets(checks)
    print(f"     beside it: a hit found in the session table (cache collision, every 64th"
          f" packet) {cost['table_hit_ns']:.0f} ns; a miss {cost['miss_ns']:.0f} ns")  # fmt: skip

    report = {
        "machine": machine.describe(),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "units": {m: unit for m, (unit, _) in METRICS.items()},
        "runs": runs,
        "medians": medians,
        "ratios": rel,
        "prog_cost_ns": cost,
        "targets": checks,
    }
    write_report(args.out, report)
    if args.markdown:
        print(markdown(report))
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
