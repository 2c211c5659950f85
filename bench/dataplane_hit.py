"""Per-packet cost of the cross-connection program against an earlier revision, in one run.

Run as root: ``.venv/bin/python bench/dataplane_hit.py [--baseline REV] [--rounds N]``. Not a
test: it prints a table and writes ``bench/results/dataplane_hit.json``. Numbers and their
meaning: ``docs/dataplane.md`` ("Cost per packet").

The baseline's ``src`` is taken from git (``git archive REV``) into a temporary folder and its
eBPF object compiled there with the Makefile's flags. Each round runs a probe (this script with
``--probe``) once per tree, alternately, each in a fresh process on fresh veths, with that
tree's ``sfc_k8s`` on ``PYTHONPATH``, so that a noisy neighbour hits both alike. A probe
measures with ``BPF_PROG_TEST_RUN`` (median of 7 calls of ``repeat / 5`` runs), as
``bench/dataplane.py`` does: a session hit of an IPv4 UDP flow and of an IPv6 UDP flow, the
extra cost of a miss and of an IPv4 hit found in the session table rather than the flow cache
(medians over 1,000 new flows, each run three times: the first and the second run minus the
third), and the two trivial floor programs of ``bench/dataplane.py``.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json
import platform
import socket
import statistics
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "dataplane_hit.json"
BPF_DIR = Path("src/sfc_k8s/dataplane/bpf")
FIGURES = (
    "hit_v4_ns",
    "hit_v6_ns",
    "miss_extra_ns",
    "table_extra_ns",
    "floor_ok_ns",
    "floor_peer_ns",
)
REPEAT = 200_000
CALLS = 7


def probe() -> dict[str, float]:
    """Measure the sfc_k8s found on the path (imported here: the tree is the caller's choice)."""
    from bench.dataplane import floor_cost
    from tests.bpf.harness import SKB_IFINDEX_OFFSET, TC_ACT_REDIRECT
    from tests.fixtures import frames as f
    from tests.nettools import janitor, unique

    from sfc_k8s.dataplane import Dataplane
    from sfc_k8s.dataplane import _libbpf as bpf

    root = f"/sys/fs/bpf/sfct-{unique('hit')}"
    with janitor() as j:
        names = [j.veth(unique("hit"), unique("hip"), up=False)[0] for _ in range(3)]
        dp = Dataplane(root, session_table_size=65_536)
        j.add(lambda: Dataplane(root).destroy())
        try:
            dp.create_link("hit", side_a=names[:1], side_b=names[1:])
            ctx = bytearray(SKB_IFINDEX_OFFSET + 4)
            struct.pack_into("<I", ctx, SKB_IFINDEX_OFFSET, socket.if_nametoindex(names[0]))
            payload = b"\0" * 18

            def v4(sport: int) -> bytes:
                l4 = f.l4(sport, 5201, payload)
                return f.eth(f.ETH_IP, f.ipv4("10.0.0.1", "10.0.0.2", f.UDP, l4))

            def run(frame: bytes, repeat: int = 1) -> int:
                result = bpf.prog_test_run(dp.program_fd, frame, ctx=bytes(ctx), repeat=repeat)
                if result.retval != TC_ACT_REDIRECT:
                    raise RuntimeError(f"program returned {result.retval}, not a redirect")
                return int(result.duration_ns)

            def hit(frame: bytes) -> float:
                run(frame)  # records the session
                return float(statistics.median(run(frame, REPEAT // 5) for _ in range(CALLS)))

            v6 = f.eth(f.ETH_IPV6, f.ipv6("fd00::1", "fd00::2", f.UDP, f.l4(40000, 5201, payload)))
            out = {"hit_v4_ns": hit(v4(40000)), "hit_v6_ns": hit(v6)}
            runs = [(run(v4(p)), run(v4(p)), run(v4(p))) for p in range(41000, 42000)]
            out["miss_extra_ns"] = float(statistics.median(a - c for a, _, c in runs))
            out["table_extra_ns"] = float(statistics.median(b - c for _, b, c in runs))
            return {**out, **floor_cost(v4(40000), bytes(ctx), REPEAT)}
        finally:
            dp.close()


def baseline_tree(rev: str, into: Path) -> Path:
    """``src`` of ``rev`` under ``into``, with its eBPF object compiled."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    bpf_dir = into / BPF_DIR
    arch = platform.machine()
    for source in bpf_dir.glob("*.bpf.c"):
        subprocess.run(
            ["clang", "-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-mcpu=v3",
             f"-I/usr/include/{arch}-linux-gnu", f"-I{bpf_dir}", "-c", str(source),
             "-o", str(source.with_suffix(".o"))],
            check=True,
        )  # fmt: skip
    return into / "src"


def run_probe(src: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{REPO}"}
    out = subprocess.run(
        [sys.executable, __file__, "--probe"], env=env, check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="HEAD~1", help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe()))
        return 0
    runs: dict[str, list[dict[str, float]]] = {"baseline": [], "now": []}
    with tempfile.TemporaryDirectory(prefix="sfcb-hit-") as tmp:
        trees = {"baseline": baseline_tree(args.baseline, Path(tmp)), "now": REPO / "src"}
        for _ in range(args.rounds):
            for name, src in trees.items():
                runs[name].append(run_probe(src))
    report: dict[str, Any] = {"baseline": args.baseline, "rounds": args.rounds, "figures": {}}
    print(f"{'ns (median, lowest round)':28} {'baseline':>14} {'now':>14} {'ratio':>7}")
    for fig in FIGURES:
        med = {n: statistics.median(r[fig] for r in runs[n]) for n in runs}
        low = {n: min(r[fig] for r in runs[n]) for n in runs}
        ratio = med["now"] / med["baseline"] if med["baseline"] else float("nan")
        report["figures"][fig] = {"median": med, "lowest": low, "ratio": ratio}
        print(
            f"{fig:28} {med['baseline']:8.0f} ({low['baseline']:3.0f})"
            f" {med['now']:8.0f} ({low['now']:3.0f}) {ratio:7.2f}"
        )
    report["runs"] = runs
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
