"""Cost of the data plane's endpoint changes, what the node agent pays per reconcile.

Run as root: ``.venv/bin/python bench/dataplane_ops.py [--endpoints N] [--rounds R]``. Not a
test: it prints a table and writes ``bench/results/dataplane_ops.json``. Numbers and their
meaning: ``docs/dataplane.md`` ("Control plane: endpoint changes").

One link on a private bpffs root with the production session table size: side A one veth,
side B grown to ``--endpoints`` veths (down: no traffic). Per round, every side-B endpoint is
added, three are drained and activated again, ``endpoints(link)`` and ``status(link)`` are
read, and every endpoint is removed. Side by side in the same run:

- ``c``: the Maglev population loop in C (what the manager uses);
- ``python``: the pure-Python reference loop (the builder before the C one);
- ``attach``: the TCX attachment alone (``bpf_link_create`` and its detach), the kernel's part
  of an add and a remove.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json
import secrets
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from tests.nettools import janitor, unique

from sfc_k8s.dataplane import Dataplane, Side, maglev
from sfc_k8s.dataplane import _libbpf as bpf

RESULTS = Path(__file__).resolve().parent / "results" / "dataplane_ops.json"
CALLS = ("add", "drain", "activate", "endpoints", "status", "remove")


def timed(samples: list[float], call: Callable[[], object]) -> None:
    started = time.perf_counter()
    call()
    samples.append((time.perf_counter() - started) * 1e3)


def one_round(dp: Dataplane, names: list[str], out: dict[str, list[float]]) -> None:
    for name in names:
        timed(out["add"], lambda n=name: dp.add_endpoint("ops", Side.B, n))
    for name in names[:3]:
        timed(out["drain"], lambda n=name: dp.drain_endpoint("ops", Side.B, n))
        timed(out["activate"], lambda n=name: dp.activate_endpoint("ops", Side.B, n))
    for _ in range(3):
        timed(out["endpoints"], lambda: dp.endpoints("ops"))
        timed(out["status"], lambda: dp.status("ops"))
    for name in names:
        timed(out["remove"], lambda n=name: dp.remove_endpoint("ops", Side.B, n))


def attach_only(dp: Dataplane, names: list[str], out: dict[str, list[float]]) -> None:
    for name in names:
        ifindex = socket.if_nametoindex(name)
        started = time.perf_counter()
        fd = bpf.link_create(dp.program_fd, ifindex, bpf.BPF_TCX_INGRESS)
        out["add"].append((time.perf_counter() - started) * 1e3)
        started = time.perf_counter()
        bpf.link_detach(fd)
        out["remove"].append((time.perf_counter() - started) * 1e3)
        os.close(fd)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=8, help="side-B endpoints (default 8)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    root = f"/sys/fs/bpf/sfcb-{secrets.token_hex(4)}"
    native = maglev._native
    samples: dict[str, dict[str, list[float]]] = {
        mode: {c: [] for c in CALLS} for mode in ("c", "python", "attach")
    }
    with janitor() as j:
        a = j.veth(unique("ba"), unique("pa"), up=False)[0]
        names = [j.veth(unique("bb"), unique("pb"), up=False)[0] for _ in range(args.endpoints)]
        dp = Dataplane(root)
        j.add(lambda: Dataplane(root).destroy())
        j.add(dp.close)
        dp.create_link("ops", side_a=[a])
        try:
            for _ in range(args.rounds):
                maglev._native = native
                one_round(dp, names, samples["c"])
                maglev._native = None
                one_round(dp, names, samples["python"])
                attach_only(dp, names, samples["attach"])
        finally:
            maglev._native = native
    medians = {
        mode: {c: statistics.median(v) for c, v in calls.items() if v}
        for mode, calls in samples.items()
    }
    print(f"endpoint changes, {args.endpoints} endpoints on a side, ms (median)")
    print(f"{'call':<10}" + "".join(f"{mode:>10}" for mode in medians))
    for call in CALLS:
        cells = [
            f"{medians[m][call]:10.2f}" if call in medians[m] else f"{'-':>10}" for m in medians
        ]
        print(f"{call:<10}" + "".join(cells))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"endpoints": args.endpoints, "median_ms": medians}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
