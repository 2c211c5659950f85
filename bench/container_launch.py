"""Cost of starting a local pod's container process: the launcher with volumes against
``ip netns exec`` (how containers started before the launcher).

Run as root: ``.venv/bin/python bench/container_launch.py [--rounds R] [--per-round N]``. Not
a test: it prints a table and writes ``bench/results/container_launch.json``. Numbers and their
meaning: ``docs/local-cluster.md`` ("Volumes").

One network namespace; each sample starts ``true`` in it and waits for its exit, as the pod
worker would (the launcher's start pipe included). Side by side, interleaved in every round:

- ``ip-netns-exec``: ``ip netns exec NS true`` (the baseline: its own mount namespace and sysfs);
- ``python-floor``: ``python -I -S -c pass``, the interpreter's start alone (the launcher's
  floor);
- ``launch``: ``launch.py`` with no volume;
- ``launch+4``: ``launch.py`` with four volumes (a ConfigMap directory at ``/etc/app``, an
  emptyDir at ``/scratch``, which makes a new ``/``, the service-account directory, which lays
  a tmpfs over ``/run``, and the node's bpffs subtree at ``/sys/fs/bpf``).
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
import subprocess
import tempfile
import time
from pathlib import Path

from tests.nettools import unique

from sfc_k8s.local import netns
from sfc_k8s.local.node.launch import Mount, Spec, command_line

RESULTS = Path(__file__).resolve().parent / "results" / "container_launch.json"
BPFFS_DIR = "/sys/fs/bpf"


def launch_argv(ns: str, mounts: list[Mount], staging: Path) -> list[str]:
    spec = Spec(["true"], netns=netns.netns_path(ns), mounts=mounts, root_staging=str(staging))
    return command_line(sys.executable, spec)


def sample(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    return (time.perf_counter() - started) * 1e3


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=20)
    args = parser.parse_args(argv)
    ns = unique("sfct-launch")
    work = Path(tempfile.mkdtemp(prefix="sfc-launch-bench-"))
    bpffs = Path(BPFFS_DIR) / unique("sfct-launch")
    subprocess.run([netns.IP, "netns", "add", ns], check=True)
    try:
        for name in ("config", "scratch", "sa", "staging"):
            (work / name).mkdir()
        (work / "config" / "key").write_text("value")
        bpffs.mkdir()
        four = [
            Mount(str(work / "config"), "/etc/app", read_only=True),
            Mount(str(work / "scratch"), "/scratch"),
            Mount(str(work / "sa"), "/var/run/secrets/kubernetes.io/serviceaccount", True),
            Mount(str(bpffs), BPFFS_DIR),
        ]
        variants = {
            "ip-netns-exec": netns.exec_argv(ns, ["true"]),
            "python-floor": [sys.executable, "-I", "-S", "-c", "pass"],
            "launch": launch_argv(ns, [], work / "staging"),
            "launch+4": launch_argv(ns, four, work / "staging"),
        }
        samples: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds):
            for _ in range(args.per_round):
                for name, command in variants.items():  # interleaved
                    samples[name].append(sample(command))
        medians = {k: round(statistics.median(v), 2) for k, v in samples.items()}
        p90 = {k: round(statistics.quantiles(v, n=10)[-1], 2) for k, v in samples.items()}
        base = medians["ip-netns-exec"]
        print(f"{'variant':<15}{'median ms':>12}{'p90 ms':>10}{'ratio':>8}")
        for name in variants:
            ratio = medians[name] / base
            print(f"{name:<15}{medians[name]:>12.2f}{p90[name]:>10.2f}{ratio:>7.2f}x")
        RESULTS.parent.mkdir(exist_ok=True)
        load = os.getloadavg()[0]
        RESULTS.write_text(
            json.dumps(
                {"samples_each": len(samples["launch"]), "load": load, "median_ms": medians,
                 "p90_ms": p90, "ratio_to_ip_netns_exec": {
                     k: round(v / base, 2) for k, v in medians.items()}},
                indent=2,
            )
        )  # fmt: skip
        print(f"load {load:.1f}; written to {RESULTS}")
    finally:
        subprocess.run([netns.IP, "netns", "del", ns], check=False)
        shutil.rmtree(work, ignore_errors=True)
        bpffs.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
