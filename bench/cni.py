"""Benchmark of the ``sfc-cni`` plugin's ADD and DEL latency beside the reference ``ptp`` plugin.

Run as root: ``.venv/bin/python bench/cni.py [--cycles N]`` (``make cni-bin`` first). Not a test:
it asserts nothing; it prints a table with medians, p95 and the sfc-cni/ptp ratios, a PASS/FAIL
line for the issue's target (sfc-cni ADD p50 <= 2x ptp's), and writes ``bench/results/cni.json``.

Both plugins are invoked exactly as a runtime does (a fresh process, ``CNI_*`` environment, the
config on stdin, a containerd-like minimal environment), against the same network namespace, each
with the same ``host-local`` IPAM configuration (its own network name, hence its own leases), in
turns: every cycle runs sfc-cni ADD/DEL, sfc-cni L2 ADD/DEL, ptp ADD/DEL, so that a noisy
neighbour on the shared cores hits them alike. ``python-startup`` (the venv interpreter running
``pass``) and ``host-local`` alone (its ADD/DEL) are the floors that explain the numbers.
"""

from __future__ import annotations

import sys

# Run as a script, this directory is sys.path[0], where bench/operator.py would shadow the
# standard library's ``operator`` module (imported by argparse via re and enum).
if sys.path and sys.path[0] == __file__.rpartition("/")[0]:
    del sys.path[0]

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.nettools import Janitor, unique  # noqa: E402

CNI_DIR = REPO / "build" / "cni"
RESULTS = REPO / "bench" / "results" / "cni.json"
TARGET_RATIO = 2.0


def _invoke(binary: Path, command: str, conf: dict[str, object], env: dict[str, str]) -> float:
    """Run one plugin command, return its wall time in ms; raise if it fails."""
    full = {**env, "CNI_COMMAND": command}
    start = time.perf_counter()
    proc = subprocess.run(
        [str(binary)], input=json.dumps(conf).encode(), env=full, capture_output=True, check=False
    )
    elapsed = (time.perf_counter() - start) * 1e3
    if proc.returncode != 0:
        raise RuntimeError(
            f"{binary.name} {command} failed ({proc.returncode}): {proc.stdout!r} {proc.stderr!r}"
        )
    return elapsed


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": round(p95, 2),
        "min": round(ordered[0], 2),
        "n": len(ordered),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=60, help="measured ADD/DEL cycles (>= 50)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/cni.py needs root (network namespaces)")
    sfc = CNI_DIR / "sfc-cni"
    ptp = CNI_DIR / "ptp"
    if not sfc.exists() or not ptp.exists():
        sys.exit(f"{CNI_DIR} is incomplete: run 'make cni-bin' first")

    data_dir = Path(tempfile.mkdtemp(prefix="sfc-cni-bench-"))
    janitor = Janitor()
    janitor.add(lambda: shutil.rmtree(data_dir, ignore_errors=True))
    try:
        ns = janitor.netns("sfcb")
        base_env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_CONTAINERID": "bench" + unique("c", 12).replace("-", ""),
            "CNI_NETNS": f"/run/netns/{ns}",
            "CNI_PATH": str(CNI_DIR),
        }

        def ipam(subnet: str) -> dict[str, object]:
            return {"type": "host-local", "subnet": subnet, "dataDir": str(data_dir)}

        confs = {
            "sfc-cni": (
                sfc,
                "eth1",
                {
                    "cniVersion": "1.0.0",
                    "name": "bench-sfc",
                    "type": "sfc-cni",
                    "macSeed": "bench/eth1",
                    "logLevel": "error",
                    "ipam": ipam("10.251.1.0/24"),
                },
            ),
            "sfc-cni-l2": (
                sfc,
                "eth2",
                {
                    "cniVersion": "1.0.0",
                    "name": "bench-sfc-l2",
                    "type": "sfc-cni",
                    "macSeed": "bench/eth2",
                    "logLevel": "error",
                },
            ),
            "ptp": (
                ptp,
                "eth3",
                {
                    "cniVersion": "1.0.0",
                    "name": "bench-ptp",
                    "type": "ptp",
                    "ipam": ipam("10.251.3.0/24"),
                },
            ),
            "host-local": (
                CNI_DIR / "host-local",
                "eth4",
                {"cniVersion": "1.0.0", "name": "bench-hl", "ipam": ipam("10.251.4.0/24")},
            ),
        }
        # Whatever is left if a run dies half-way: the namespace goes, and these leases with it.
        for binary, ifname, conf in confs.values():
            env = {**base_env, "CNI_IFNAME": ifname}
            janitor.add(lambda b=binary, c=conf, e=env: _invoke(b, "DEL", c, e))

        samples: dict[str, list[float]] = {}
        python = REPO / ".venv" / "bin" / "python"
        for cycle in range(args.warmup + args.cycles):
            measured = cycle >= args.warmup
            for label, (binary, ifname, conf) in confs.items():
                env = {**base_env, "CNI_IFNAME": ifname}
                add = _invoke(binary, "ADD", conf, env)
                delete = _invoke(binary, "DEL", conf, env)
                if measured:
                    samples.setdefault(f"{label} ADD", []).append(add)
                    samples.setdefault(f"{label} DEL", []).append(delete)
            start = time.perf_counter()
            subprocess.run([str(python), "-c", "pass"], check=True, env={"PATH": "/usr/bin"})
            if measured:
                samples.setdefault("python-startup", []).append((time.perf_counter() - start) * 1e3)
    finally:
        janitor.close()

    stats = {name: _stats(values) for name, values in samples.items()}
    ratios = {
        "ADD p50": round(stats["sfc-cni ADD"]["p50"] / stats["ptp ADD"]["p50"], 2),
        "ADD p95": round(stats["sfc-cni ADD"]["p95"] / stats["ptp ADD"]["p95"], 2),
        "DEL p50": round(stats["sfc-cni DEL"]["p50"] / stats["ptp DEL"]["p50"], 2),
        "DEL p95": round(stats["sfc-cni DEL"]["p95"] / stats["ptp DEL"]["p95"], 2),
    }
    print(f"{'case':<20}{'p50 ms':>9}{'p95 ms':>9}{'min ms':>9}{'n':>5}")
    for name, st in stats.items():
        print(f"{name:<20}{st['p50']:>9.2f}{st['p95']:>9.2f}{st['min']:>9.2f}{st['n']:>5}")
    print()
    for name, ratio in ratios.items():
        print(f"sfc-cni / ptp {name}: {ratio:.2f}x")
    passed = ratios["ADD p50"] <= TARGET_RATIO
    print(
        f"{'PASS' if passed else 'FAIL'}: sfc-cni ADD p50 {stats['sfc-cni ADD']['p50']:.1f} ms"
        f" <= {TARGET_RATIO}x ptp ({stats['ptp ADD']['p50']:.1f} ms)"
    )
    report = {
        "benchmark": "cni",
        "cycles": args.cycles,
        "host": {
            "kernel": platform.release(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
        },
        "stats_ms": stats,
        "ratios": ratios,
        "target": {"add_p50_ratio_max": TARGET_RATIO, "pass": passed},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
