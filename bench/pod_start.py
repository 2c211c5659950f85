"""Pod start on the local cluster, this tree beside a baseline tree, interleaved in one run.

Run as root: ``.venv/bin/python bench/pod_start.py --baseline DIR [--pods N]``, where DIR is a
checkout of another commit (``git worktree add /tmp/base main``). Not a test: it prints a
table and writes ``bench/results/pod_start.json``. Numbers and their meaning:
``docs/local-cluster.md`` ("Volumes").

Two one-node local clusters (API server + underlay + node runtime, as the tests make them),
one running this tree's code, the other the baseline's (its processes get ``PYTHONPATH`` of
that tree). Pods are created one at a time, alternating between the clusters: a pod of one
container (``sleep``) on the cluster network, with no volume declared (so this tree mounts the
service-account directory, as for every pod); the time is from the ``POST`` to the pod's
``Ready`` condition seen by a client polling every 5 ms.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

from tests.integration.local.cluster import Cluster, local_cluster, ready

from sfc_k8s.local.paths import CNI_PATH_ENV, default_cni_path

RESULTS = Path(__file__).resolve().parent / "results" / "pod_start.json"
HERE = Path(__file__).resolve().parent.parent


def start_one(cluster: Cluster, ns: str, name: str) -> float:
    spec = {
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "main", "command": ["sleep", "1000"]}],
    }
    started = time.perf_counter()
    cluster.create_pod(ns, name, spec)
    while True:
        pod = cluster.pod(ns, name)
        if pod is not None and ready(pod):
            return (time.perf_counter() - started) * 1e3
        time.sleep(0.005)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="a checkout of the baseline commit")
    parser.add_argument("--pods", type=int, default=10)
    args = parser.parse_args(argv)
    trees = {"baseline": Path(args.baseline).resolve(), "this tree": HERE}
    samples: dict[str, list[float]] = {k: [] for k in trees}
    # Both clusters run the same plugins (the baseline checkout may not have built its own).
    os.environ.setdefault(CNI_PATH_ENV, ":".join(default_cni_path()))
    with contextlib.ExitStack() as stack:
        clusters = {}
        for label, tree in trees.items():
            os.environ["PYTHONPATH"] = str(tree / "src")  # for the cluster's processes
            state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sfcb")))
            clusters[label] = stack.enter_context(local_cluster(state / "s"))
        os.environ.pop("PYTHONPATH")
        namespaces = {label: c.namespace() for label, c in clusters.items()}
        for i in range(args.pods):
            for label, cluster in clusters.items():  # interleaved
                samples[label].append(start_one(cluster, namespaces[label], f"p{i}"))
        for label, cluster in clusters.items():
            for i in range(args.pods):
                cluster.delete_pod(namespaces[label], f"p{i}", grace=0)
            for i in range(args.pods):
                cluster.wait_gone(namespaces[label], f"p{i}")
    medians = {k: round(statistics.median(v), 1) for k, v in samples.items()}
    ranges = {k: [round(min(v), 1), round(max(v), 1)] for k, v in samples.items()}
    load = os.getloadavg()[0]
    print(f"{'tree':<12}{'median ms':>11}{'min-max ms':>18}")
    for label in trees:
        low, high = ranges[label]
        print(f"{label:<12}{medians[label]:>11.1f}{f'{low:.0f}-{high:.0f}':>18}")
    print(f"ratio {medians['this tree'] / medians['baseline']:.2f}x; load {load:.1f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"pods_each": args.pods, "load": load, "median_ms": medians, "range_ms": ranges,
             "baseline": str(trees["baseline"])},
            indent=2,
        )
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
