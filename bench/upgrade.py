"""Cost of a program upgrade in place, and whether a packet is lost during it.

Run as root: ``.venv/bin/python bench/upgrade.py [--interfaces 8 64 256] [--rounds 5]
[--mode tcx|tc|both] [--rate 2000]``. Not a test: it prints a table and writes
``bench/results/upgrade.json``. Numbers and their meaning: ``docs/dataplane.md`` ("Upgrading
the programs").

Per mode and size N, a private bpffs root holds a traffic link (a client and a server
namespace joined by a 1:1 cross-connection) and an idle link of N - 2 veths (down), so N
interfaces run the program. A paced UDP stream (4 flows, ``--rate`` datagrams/s, every one
echoed and numbered) crosses the traffic link during every round. Two builds of the object
alternate: the shipped one and the same source with ``-DSFC_TEST_COUNT`` (compiled into a
temporary folder), so each round's first open is an upgrade. Side by side in each round:

- ``upgrade``: ``Dataplane(root)`` with the other build: load the object, swap every
  attachment, commit the pins (what an upgraded agent pays once at start);
- ``adopt``: ``Dataplane(root)`` with the build already pinned (what every start paid before,
  and still pays when nothing changed): the baseline.

The stream's lost datagrams are counted over all the upgrades of a size.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.fixtures import builds
from tests.fixtures.flows import LiveFlows, Server
from tests.fixtures.topology import Pair
from tests.nettools import Janitor, janitor, private_bpffs_root, unique

from sfc_k8s.dataplane import Dataplane, loader

RESULTS = Path(__file__).resolve().parent / "results" / "upgrade.json"
PORT = 7400


def _opened(root: str, build: Path, mode: str) -> tuple[float, dict[str, float]]:
    """Open the root with ``build``: wall time in ms, and the upgrade's own figures."""
    started = time.perf_counter()
    with Dataplane(root, object_path=build, attach_mode=mode) as dp:
        wall = (time.perf_counter() - started) * 1e3
        o = dp.opened
    parts = {"load": o.load_seconds * 1e3, "swap": o.swap_seconds * 1e3, "interfaces": o.interfaces}
    return wall, parts


def _setup(j: Janitor, root: str, size: int, mode: str, rate: float) -> LiveFlows:
    pair = Pair.build(j, "ends")
    idle = [j.veth(unique("bu"), unique("pu"), up=False)[0] for _ in range(size - 2)]
    j.add(lambda: _destroy(root))
    with Dataplane(root, attach_mode=mode) as dp:
        dp.create_link("bu-traffic", side_a=[pair.client_host], side_b=[pair.server_host])
        if idle:
            dp.create_link("bu-idle", side_a=idle[:1], side_b=idle[1:])
    Server.start(j, pair.server_ns, "udp-echo", PORT)
    return LiveFlows.start(
        j, pair.client_ns, "udp-stream", "--server", pair.addressing.server_ip, "--port",
        str(PORT), "--flows", "4", "--rate", str(rate), "--sport-base", "34000",
        max_seconds=600,
    )  # fmt: skip


def _destroy(root: str) -> None:
    with Dataplane(root, upgrade=False) as dp:
        dp.destroy()


def one_size(
    size: int, mode: str, rounds: int, pair_builds: tuple[Path, Path], rate: float
) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"upgrade": [], "adopt": [], "load": [], "swap": []}
    with janitor() as j:
        root = private_bpffs_root()
        stream = _setup(j, root, size, mode, rate)
        interfaces = 0
        for r in range(rounds * 2):
            build = pair_builds[(r + 1) % 2]  # the other build than the one pinned
            wall, parts = _opened(root, build, mode)
            samples["upgrade"].append(wall)
            samples["load"].append(parts["load"])
            samples["swap"].append(parts["swap"])
            interfaces = int(parts["interfaces"])
            samples["adopt"].append(_opened(root, build, mode)[0])
        time.sleep(0.3)
        report = stream.stop()
    sent = sum(f["sent"] for f in report["flows"])
    lost = sum(f["sent"] - f["echoed"] for f in report["flows"])
    medians = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "mode": mode,
        "interfaces": interfaces,
        "upgrades": rounds * 2,
        "median_ms": medians,
        "swap_us_per_interface": medians["swap"] * 1e3 / max(interfaces, 1),
        "upgrade_over_adopt": medians["upgrade"] / medians["adopt"],
        "stream": {"sent": sent, "lost": lost, "bad": report["bad"]},
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interfaces", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--rounds", type=int, default=3, help="upgrades per size: 2 x rounds")
    parser.add_argument("--mode", choices=("tcx", "tc", "both"), default="both")
    parser.add_argument("--rate", type=float, default=2000.0, help="stream datagrams/s")
    args = parser.parse_args(argv)
    if min(args.interfaces) < 3:
        parser.error("--interfaces: at least 3 (the traffic link's 2 and an idle link)")
    folder = Path(tempfile.mkdtemp(prefix="sfc-upgrade-bench-"))
    try:
        pair_builds = (loader.OBJECT_PATH, builds.build(folder, builds.COUNT))
        modes = ("tcx", "tc") if args.mode == "both" else (args.mode,)
        rows = [
            one_size(n, m, args.rounds, pair_builds, args.rate)
            for m in modes
            for n in args.interfaces
        ]
    finally:
        shutil.rmtree(folder)
    print(f"program upgrade in place, ms (median of {2 * args.rounds}); stream {args.rate:.0f}/s")
    head = ("mode", "ifaces", "upgrade", "load", "swap", "us/if", "adopt", "ratio", "lost/sent")
    print("".join(f"{h:>10}" for h in head))
    for row in rows:
        m = row["median_ms"]
        cells = [row["mode"], row["interfaces"], f"{m['upgrade']:.1f}", f"{m['load']:.1f}",
                 f"{m['swap']:.2f}", f"{row['swap_us_per_interface']:.1f}", f"{m['adopt']:.1f}",
                 f"{row['upgrade_over_adopt']:.1f}x",
                 f"{row['stream']['lost']}/{row['stream']['sent']}"]  # fmt: skip
        print("".join(f"{c:>10}" for c in cells))
    RESULTS.parent.mkdir(exist_ok=True)
    load = os.getloadavg()[0]
    RESULTS.write_text(json.dumps({"rate": args.rate, "load": load, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
