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

``--links`` measures link creation and deletion instead (``bench/results/dataplane_links.json``):
a link of ``--link-endpoints`` local veths (4 + 4 by default: two functions of 4 replicas),
created and deleted ``--rounds`` times in each of two setups, alternating round by round:

- ``attach at link``: the interfaces run nothing yet, so the link attaches each one (TCX) and
  detaches it when deleted: what every link paid before interfaces were attached at pod creation;
- ``attached at creation``: the interfaces were attached once beforehand
  (``Dataplane.attach_interface``, what the agent does when the pod appears): the link only
  writes maps.

Both run once with no other link and once with ``--links`` other links present (remote endpoints
only, 8 each, so no interface is needed), showing that a create no longer grows with the links
of the node; ``read every link's info`` times what ``_new_link_ids`` did per create before
(reading each link's info pin), beside it.
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

from sfc_k8s.dataplane import Dataplane, EndpointSpec, Side, maglev
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


def link_round(
    dp: Dataplane, sides: list[list[str]], attached: bool, out: dict[str, list[float]]
) -> None:
    """Create and delete one link over ``sides``, its interfaces attached beforehand or not."""
    if attached:
        for name in sides[0] + sides[1]:
            dp.attach_interface(name)
    timed(out["create"], lambda: dp.create_link("lk", side_a=sides[0], side_b=sides[1]))
    timed(out["delete"], lambda: dp.delete_link("lk"))
    if attached:
        for name in sides[0] + sides[1]:
            dp.detach_interface(socket.if_nametoindex(name))


def background_links(dp: Dataplane, count: int) -> None:
    """``count`` links of 4 + 4 remote endpoints (no interface, no attach)."""
    for i in range(count):
        specs = [
            [
                EndpointSpec(node=f"10.{200 + side}.{i % 250}.{1 + i // 250}", id=1 + k + 4 * side)
                for k in range(4)
            ]
            for side in (0, 1)
        ]
        dp.create_link(f"bg{i}", side_a=specs[0], side_b=specs[1], cluster_id=1000 + i)


def links_bench(args: argparse.Namespace) -> int:
    root = f"/sys/fs/bpf/sfcb-{secrets.token_hex(4)}"
    per_side = args.link_endpoints // 2
    setups = ("attach at link", "attached at creation")
    results: dict[str, dict[str, dict[str, float]]] = {}
    with janitor() as j:
        sides = [
            [j.veth(unique("bl"), unique("pl"), up=False)[0] for _ in range(per_side)]
            for _ in range(2)
        ]
        dp = Dataplane(root)
        j.add(lambda: Dataplane(root).destroy())
        j.add(dp.close)
        for present in (0, args.links):
            background_links(dp, present - len(dp.links()))
            samples = {s: {"create": [], "delete": []} for s in setups}
            reads: list[float] = []
            for _ in range(args.rounds):
                for setup in setups:
                    link_round(dp, sides, setup == setups[1], samples[setup])
                timed(reads, lambda: {n: dp._link_info(n) for n in dp.links()})
            key = f"{present} other links"
            results[key] = {
                s: {c: statistics.median(v) for c, v in calls.items()}
                for s, calls in samples.items()
            }
            results[key]["read every link's info"] = {"create": statistics.median(reads)}
    print(f"link of {per_side} + {per_side} local endpoints, ms (median of {args.rounds})")
    for key, by_setup in results.items():
        base, new = by_setup[setups[0]], by_setup[setups[1]]
        print(f"  {key}:")
        for setup, calls in by_setup.items():
            cells = "  ".join(f"{c} {v:8.2f}" for c, v in calls.items())
            print(f"    {setup:<24}{cells}")
        ratios = {c: base[c] / new[c] for c in ("create", "delete")}
        results[key]["ratio (attach at link / attached at creation)"] = ratios
        print(f"    ratio: create {ratios['create']:.1f}x, delete {ratios['delete']:.1f}x")
    out = RESULTS.parent / "dataplane_links.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {"link_endpoints": args.link_endpoints, "rounds": args.rounds, "median_ms": results},
            indent=2,
        )
    )
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=8, help="side-B endpoints (default 8)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--links", type=int, default=0, help="link create/delete, with N others")
    parser.add_argument("--link-endpoints", type=int, default=8, help="of the measured link (8)")
    args = parser.parse_args(argv)
    if args.links:
        return links_bench(args)
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
