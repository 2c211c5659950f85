"""Pod created -> its interface attached: what attaching at pod creation costs pod start-up.

Run as root: ``.venv/bin/python bench/attach.py [--pods N]`` (``make cni-bin`` first). Not a
test: it prints a table and writes ``bench/results/attach.json``. Numbers and their meaning:
``docs/dataplane.md`` ("Attach at pod creation") and ``docs/benchmarks.md``.

The real ``sfc-cni`` (``build/cni/sfc-cni``) runs ADD and DEL as a runtime runs it, in one pod
namespace, for ``--pods`` pods (a new pod UID each, so a new host interface each). Beside it, in
this process, the agent's ``InterfaceWatch`` on a private bpffs root, on its own event loop
thread, attaches each host end when rtnetlink announces it, and unpins it on DEL. The pods
alternate between two setups in one run:

- ``watch off``: no watch running (the ADD as it was: nothing attaches at pod creation);
- ``watch on``: the watch attaches the interface meanwhile.

Reported per setup, p50 and p99 in ms: the ADD's wall time (what the runtime waits for), and for
``watch on`` the time from the ADD's start to the interface attached (the pod is attached that
long after the runtime asked for its network), and from the ADD's return to it. The ratio of the
ADD's p50 with and without the watch says what attaching costs the ADD (it runs in another
process: only CPU contention).
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import asyncio
import json
import secrets
import statistics
import threading
import time
from pathlib import Path

from tests.fixtures.cni import Cni, l2_conf
from tests.nettools import janitor, unique

from sfc_k8s.api.naming import host_ifname
from sfc_k8s.dataplane import Dataplane
from sfc_k8s.operator.agent_ifaces import InterfaceWatch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "attach.json"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class WatchThread:
    """An ``InterfaceWatch`` on an event loop of its own thread; ``when[name]`` = attach time."""

    def __init__(self, dp: Dataplane) -> None:
        self.names: set[str] = set()
        self.when: dict[str, float] = {}
        self.attached = threading.Condition()
        self.watch = InterfaceWatch(dp, wanted=self.names.__contains__)
        self.watch.observers.append(self._seen)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def _seen(self, name: str, _ifindex: int, when: float) -> None:
        with self.attached:
            self.when[name] = when
            self.attached.notify_all()

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()

    async def _start(self) -> None:
        self.watch.start(asyncio.get_running_loop())

    def wait(self, name: str, timeout: float = 10.0) -> float:
        with self.attached:
            if not self.attached.wait_for(lambda: name in self.when, timeout):
                raise RuntimeError(f"{name} was not attached within {timeout} s")
            return self.when[name]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.watch.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def one_pod(
    cni: Cni, watch: WatchThread | None, dp: Dataplane, out: dict[str, list[float]]
) -> None:
    uid = unique("uid", 20)
    cni.args["K8S_POD_UID"] = uid
    host = host_ifname(uid, "eth1")
    conf = l2_conf("1.1.0", macSeed="bench/eth1")
    if watch is not None:
        watch.names.add(host)
    started = time.monotonic()
    cni.ok("ADD", conf)
    returned = time.monotonic()
    out["add"].append((returned - started) * 1e3)
    if watch is not None:
        attached = watch.wait(host)
        out["created_to_attached"].append((attached - started) * 1e3)
        out["add_return_to_attached"].append((attached - returned) * 1e3)
    ifindex = int(Path(f"/sys/class/net/{host}/ifindex").read_text())
    cni.ok("DEL", conf)
    if watch is not None:  # the pin goes with the interface
        deadline = time.monotonic() + 10
        while os.path.exists(dp.pins.interface_attachment(ifindex)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{host}: still pinned 10 s after DEL")
            time.sleep(0.001)
        watch.names.discard(host)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100, help="pods per setup (100)")
    args = parser.parse_args(argv)
    root = f"/sys/fs/bpf/sfcb-{secrets.token_hex(4)}"
    samples: dict[str, dict[str, list[float]]] = {
        "watch off": {"add": []},
        "watch on": {"add": [], "created_to_attached": [], "add_return_to_attached": []},
    }
    with janitor() as j:
        netns = j.netns("sfcba")
        args_ = {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "bench", "K8S_POD_NAME": netns}
        cni = Cni(REPO / "build" / "cni", container_id=unique("ctr", 24), netns=netns, args=args_)
        dp = Dataplane(root)
        j.add(lambda: Dataplane(root).destroy())
        j.add(dp.close)
        watch = WatchThread(dp)
        watch.start()
        j.add(watch.stop)
        for _ in range(args.pods):
            one_pod(cni, None, dp, samples["watch off"])
            one_pod(cni, watch, dp, samples["watch on"])
        leftover = dp.interface_attachments()
    table = {
        setup: {
            what: {"p50": statistics.median(v), "p99": percentile(v, 99)}
            for what, v in figures.items()
        }
        for setup, figures in samples.items()
    }
    ratio = table["watch on"]["add"]["p50"] / table["watch off"]["add"]["p50"]
    print(f"sfc-cni ADD and attach, {args.pods} pods per setup, ms")
    for setup, figures in table.items():
        for what, q in figures.items():
            print(f"  {setup:<10} {what:<24} p50 {q['p50']:8.2f}   p99 {q['p99']:8.2f}")
    print(f"  ADD p50 with the watch / without: {ratio:.2f}; pins left after DEL: {len(leftover)}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"pods": args.pods, "ms": table, "add_p50_ratio": ratio, "left_pinned": len(leftover)},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
