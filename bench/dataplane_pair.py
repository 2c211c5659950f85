"""One figure of ``bench/dataplane.py`` or ``bench/crossnode.py``, a cross-connection against
one baseline, in tightly interleaved pairs.

Run as root: ``.venv/bin/python bench/dataplane_pair.py [--test tcp_1] [--setup xc-1:1]
[--against direct] [--pairs 16] [--seconds 3]``; ``--setup xn-1:1`` (or ``xn-chain-1:4``)
with ``--against vxlan`` (or ``bridge-vxlan``) takes the cross-node setups of
``bench/crossnode.py``. Not a test: it prints each pair and the summary and writes
``bench/results/dataplane_pair.json``.

``bench/dataplane.py`` measures every test on five setups per repetition, so the two setups of
a ratio are measured seconds apart, with others in between; on a VM whose speed changes from
one second to the next that spreads the paired ratios widely (0.64-1.95 for one TCP stream).
Here each pair is the two setups measured back to back, the order alternating between pairs,
and nothing else runs in between: a sharper estimate of one ratio, for when a target sits
close to its bound.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

from bench._common import Machine, needs_root, write_report
from bench.crossnode import build_crossnode
from bench.dataplane import IPERF_PORT, REPO, TESTS, Setup, build_setups
from tests.fixtures.topology import in_netns, spawn
from tests.nettools import Janitor

RESULTS = REPO / "bench" / "results" / "dataplane_pair.json"
CHOICES = ("tcp_1", "tcp_8", "udp64")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", choices=CHOICES, default="tcp_1")
    parser.add_argument("--setup", choices=("xc-1:1", "xn-1:1", "xn-chain-1:4"), default="xc-1:1")
    parser.add_argument("--against", choices=("direct", "bridge", "vxlan", "bridge-vxlan"),
                        default="direct")  # fmt: skip
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0, help="iperf3 -t (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not needs_root("bench/dataplane_pair.py"):
        return 2

    measure = TESTS[args.test]
    options = SimpleNamespace(seconds=args.seconds)
    names = (args.setup, args.against)
    cross = args.setup.startswith("xn-")
    if cross != (args.against in ("vxlan", "bridge-vxlan")):
        parser.error(f"--setup {args.setup} is not measured against {args.against}")
    machine = Machine.start()
    janitor = Janitor()
    try:
        built: list[Setup] = (
            build_crossnode(janitor)[1] if cross else build_setups(janitor, replicas=1)[0]
        )
        setups = {s.name: s for s in built if s.name in names}
        for setup in setups.values():
            spawn(janitor, in_netns(setup.server_ns, "iperf3", "-s", "-p", str(IPERF_PORT)),
                  output=False)  # fmt: skip
        time.sleep(0.3)
        values: dict[str, list[float]] = {name: [] for name in names}
        for i in range(args.pairs):
            for name in names if i % 2 == 0 else names[::-1]:
                (value,) = measure(setups[name], options).values()  # type: ignore[arg-type]
                values[name].append(value)
            ours, theirs = values[args.setup][-1], values[args.against][-1]
            shown = (f"{args.setup} {ours:.2f}, {args.against} {theirs:.2f}, "
                     f"ratio {ours / theirs:.3f}")  # fmt: skip
            print(f"pair {i + 1}/{args.pairs}: {shown}", flush=True)
    finally:
        janitor.close()

    xc, base = values[args.setup], values[args.against]
    paired = [x / b for x, b in zip(xc, base, strict=True)]
    summary = {
        "median_paired_ratio": round(statistics.median(paired), 3),
        "ratio_of_means": round(statistics.mean(xc) / statistics.mean(base), 3),
        "min": round(min(paired), 3),
        "max": round(max(paired), 3),
    }
    print(f"{args.test}, {args.setup} / {args.against} over {args.pairs} pairs: "
          + ", ".join(f"{k} {v}" for k, v in summary.items()))  # fmt: skip
    report = {
        "test": args.test,
        "setup": args.setup,
        "against": args.against,
        "pairs": args.pairs,
        "seconds": args.seconds,
        **machine.load(),
        "values": values,
        "paired_ratios": paired,
        "summary": summary,
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
