"""The demo's autoscaling act: a load ramp through the firewall, scaled by the HPA alone.

Called by ``sfc_k8s.local.demo`` after its ``kubectl scale`` steps (the firewall at 1 replica,
the long-lived echo flows running). It reads the firewall pods' ``packets_per_second`` through
the custom metrics API (the local cluster's built-in provider behind its APIService), gives the
chain's firewall function an ``autoscaling`` block (the controller renders the HPA), and runs a
paced UDP ramp from the client (``traffic.udp_ramp``, its own process: up, hold, down). The
HPA, not the demo, changes the replica count; the demo watches and checks:

- the HPA reads the metric (``ScalingActive=True``, ``kubectl get hpa`` TARGETS);
- as the load rises it grows the firewall from 1 to several replicas, each new one carrying
  traffic (new flows of the ramp land on it);
- as the load falls it shrinks it back to 1; the removed replicas drain first, and the
  long-lived flows they carried keep flowing, byte-exact, while they drain, until they end
  (the demo ends half of each draining replica's flows there);
- no established flow breaks or stalls (the demo's ``FlowProgress`` bounds).

Demo HPA settings (``BEHAVIOR``; the local cluster syncs HPAs every
``custom_metrics.HPA_SYNC_SECONDS``): scale up with no stabilization, up to 4 pods per second;
scale down after a 2 s stabilization window, up to 100 % per second. The NF defaults
(docs/autoscaling.md) are far slower on purpose: 300 s before scaling in.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sfc_k8s.local import netns
from sfc_k8s.local.custom_metrics import HPA_SYNC_SECONDS
from sfc_k8s.local.kube import KubeError
from sfc_k8s.local.traffic import EchoFlow, Ramp, ramp_argv

if TYPE_CHECKING:
    from sfc_k8s.local.demo import Demo

HPA = "transparent-firewall-firewall"  # <chain>-<function>, rendered by the controller
FUNCTION_INDEX = 1  # the firewall in examples/transparent-firewall/30-chain.yaml
DISCARD_PORT = 9  # the ramp's datagrams: nothing listens, the server drops them
MAX_REPLICAS = 4
METRIC_WINDOW = 5.0  # the agents' --traffic-window (its default, as `local up` runs them)
BEHAVIOR: dict[str, Any] = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "policies": [{"type": "Pods", "value": 4, "periodSeconds": 1}],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 2,
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 1}],
    },
}


@dataclass(frozen=True)
class RampPlan:
    """Target per replica and the ramp's peak, from the load the firewall carries already."""

    base: float  # packets/s the firewall's one replica carries before the ramp (echo flows)
    target: int  # targetAverageValue, packets/s per replica
    peak: float  # the ramp's own packets/s at its top

    @property
    def desired_at_peak(self) -> int:
        return min(MAX_REPLICAS, math.ceil((self.base + self.peak) / self.target))


def plan_ramp(base: float) -> RampPlan:
    """A target 1.5 times the base load (rounded up to 500; at least 1000), so that the echo
    flows alone, and the flows the demo adds during the ramp, keep one replica; a peak taking
    the total to 3.2 targets: 4 replicas wanted, with the least load the sender must make
    (pure)."""
    target = max(1000, math.ceil(1.5 * base / 500) * 500)
    return RampPlan(base, target, 3.2 * target - base)


@dataclass
class DrainWatch:
    """Long-lived flows of the replicas the HPA removes, while those drain: their echoed bytes
    when each replica was first seen draining and when it was last seen still draining (or
    when the flow ended, for those the demo ends on the draining replica)."""

    first: dict[int, int] = field(default_factory=dict)  # client port -> bytes
    last: dict[int, int] = field(default_factory=dict)
    replica_of: dict[int, str] = field(default_factory=dict)  # client port -> eth1 ifname
    draining: set[str] = field(default_factory=set)  # every replica seen draining
    since: dict[str, float] = field(default_factory=dict)  # replica -> first seen draining
    ended: set[int] = field(default_factory=set)  # flows ended while their replica drained


def drained_flows(watch: DrainWatch, flows: list[EchoFlow]) -> tuple[bool, str]:
    """Judge "flows on the removed replicas kept flowing while they drained, until they
    ended" (pure): holds if some replica drained carrying flows, each of those flows echoed
    more bytes while it drained and never broke, and some of them ended (closed by the demo)
    on their still-draining replica."""
    by_port = {f.local_port: f for f in flows}
    moving = [p for p in watch.first if watch.last.get(p, 0) > watch.first[p]]
    broken = [p for p in watch.first if p in by_port and by_port[p].broken]
    carrying = {watch.replica_of[p] for p in watch.first}
    ended = watch.ended & set(moving)
    ok = bool(watch.first) and len(moving) == len(watch.first) and not broken and bool(ended)
    detail = (
        f"{len(watch.draining)} replica(s) drained, {len(carrying)} of them carrying"
        f" {len(watch.first)} long-lived flows; {len(moving)} of those echoed more bytes while"
        f" their replica drained, {len(ended)} of them ended there, byte-exact;"
        f" {len(broken)} broke"
    )
    return ok, detail


class AutoscaleAct:
    """The ramp, the HPA watch and the checks, on a running ``Demo``."""

    def __init__(self, demo: Demo, *, up: float, hold: float, down: float) -> None:
        self.demo = demo
        self.up, self.hold, self.down = up, hold, down
        self.hpa_samples: list[tuple[float, int, int]] = []  # (t, current, desired)
        self._stop = threading.Event()

    @property
    def t(self) -> float:
        return time.monotonic() - self.demo.t0

    def hpa(self) -> dict[str, Any]:
        path = f"/apis/autoscaling/v2/namespaces/sfc-demo/horizontalpodautoscalers/{HPA}"
        body: dict[str, Any] = self.demo.kube.get(path)
        return body

    def base_load(self) -> float:
        """The firewall pods' packets/s now, summed, read as the HPA reads it."""
        raw = self.demo.kubectl(
            "get", "--raw",
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/sfc-demo/pods/*/packets_per_second"
            "?labelSelector=app%3Dfirewall",
        )  # fmt: skip
        items = json.loads(raw).get("items") or []
        return sum(quantity(i["value"]) for i in items)

    def enable(self, plan: RampPlan) -> None:
        block = {
            "minReplicas": 1,
            "maxReplicas": MAX_REPLICAS,
            "metric": "packetsPerSecond",
            "targetAverageValue": str(plan.target),
            "behavior": BEHAVIOR,
        }
        patch = [{"op": "add", "path": f"/spec/functions/{FUNCTION_INDEX}/autoscaling",
                  "value": block}]  # fmt: skip
        self.demo.kubectl(
            "patch", "sfc", "transparent-firewall", "-n", "sfc-demo", "--type=json",
            "-p", json.dumps(patch),
        )  # fmt: skip

    def disable(self) -> None:
        patch = [{"op": "remove", "path": f"/spec/functions/{FUNCTION_INDEX}/autoscaling"}]
        self.demo.kubectl(
            "patch", "sfc", "transparent-firewall", "-n", "sfc-demo", "--type=json",
            "-p", json.dumps(patch),
        )  # fmt: skip

    def check_active(self) -> None:
        """The HPA computes replicas from the metric (``ScalingActive=True``), as ``kubectl get
        hpa`` shows it."""
        try:
            status = self.hpa().get("status") or {}
        except KubeError as err:
            status = {"conditions": [{"type": "ScalingActive", "message": str(err)}]}
        conds = {c.get("type"): c for c in status.get("conditions") or []}
        active = conds.get("ScalingActive") or {}
        targets = self._targets()  # TARGETS shows the live value, `<unknown>` before one
        ok = active.get("status") == "True" and "<unknown>" not in targets
        self.demo.check(
            "autoscaling: the HPA reads packets_per_second through the custom metrics API",
            ok,
            f"at the top of the ramp, kubectl get hpa: {targets}"
            + ("" if ok else f"; ScalingActive: {active.get('reason')}: {active.get('message')}"),
        )

    def _watch_hpa(self) -> None:
        last = None
        while not self._stop.wait(0.5):
            try:
                status = self.hpa().get("status") or {}
            except KubeError:
                continue
            current, desired = (
                int(status.get("currentReplicas", 0)),
                int(status.get("desiredReplicas", 0)),
            )
            if not desired:  # no status yet: the HPA controller has not synced it
                continue
            self.hpa_samples.append((self.t, current, desired))
            if last is not None and desired != last:
                self.demo.mark(f"HPA -> {desired}")
            last = desired

    def run(self, flows: list[EchoFlow]) -> None:
        demo = self.demo
        demo.out("== autoscaling: the HPA scales the firewall on its packets/s (traffic ramp)")
        # The agents average over their window: wait until it holds no more iperf3 traffic.
        time.sleep(METRIC_WINDOW + 0.5)
        base = self.base_load()
        plan = plan_ramp(base)
        demo.out(
            f"  custom metrics API: the firewall carries {base:.0f} packets/s (echo flows);"
            f" HPA target {plan.target} packets/s per replica, 1 to {MAX_REPLICAS} replicas;"
            f" ramp 0 -> {plan.peak:.0f} packets/s in {self.up:g}s, held {self.hold:g}s,"
            f" down in {self.down:g}s"
        )
        window = BEHAVIOR["scaleDown"]["stabilizationWindowSeconds"]
        demo.out(
            f"  HPA settings (demo): sync every {HPA_SYNC_SECONDS:g}s; scale up at once, up to 4"
            f" pods/s; scale down after a {window}s stabilization window, up to 100%/s; metric"
            f" window {METRIC_WINDOW:g}s (the agents' --traffic-window)"
        )
        from sfc_k8s.local.demo import DemoError  # demo.py imports this module

        self.enable(plan)
        try:
            self._act(flows, plan)
        finally:  # the example as applied again (a kept cluster's next demo scales by hand)
            with contextlib.suppress(DemoError):
                self.disable()

    def _act(self, flows: list[EchoFlow], plan: RampPlan) -> None:
        watcher = threading.Thread(target=self._watch_hpa, name="hpa-watch", daemon=True)
        watcher.start()
        try:
            self._ramp(flows, plan)
        finally:
            self._stop.set()
            watcher.join(timeout=5)

    def _targets(self) -> str:
        out = self.demo.kubectl("get", "hpa", HPA, "-n", "sfc-demo", "--no-headers")
        return " ".join(out.split())

    def _ramp(self, flows: list[EchoFlow], plan: RampPlan) -> None:
        demo = self.demo
        client_ns = demo.pod_netns("client")
        ramp = Ramp(plan.peak, self.up, self.hold, self.down)
        t_start = self.t
        before = set(demo.firewall_endpoints())
        demo.mark("load ramp")
        load = subprocess.Popen(
            netns.exec_argv(client_ns, ramp_argv("192.168.100.20", DISCARD_PORT, ramp)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            grown = self._grow(flows, load, t_start + self.up + self.hold)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        t_end = self.t
        demo.mark("load over")
        self._check_growth(t_start, t_end, grown, before, plan)
        watch = self._shrink(flows, t_end)
        ok, detail = drained_flows(watch, flows)
        demo.check("load down: flows on the removed replicas kept flowing while they drained",
                   ok, detail)  # fmt: skip
        demo.check_flows("autoscaling: no established flow broke or stalled", flows,
                         demo.progress.during(t_start, demo.progress.now()))  # fmt: skip

    def _check_growth(
        self,
        t_start: float,
        t_end: float,
        grown: dict[str, str],
        before: set[str],
        plan: RampPlan,
    ) -> None:
        """The HPA asked for at least 3 replicas while the load ran, and every replica that
        joined the data plane meanwhile carried packets (one started late, on a loaded
        machine, may join only after the load: it is not judged)."""
        new = {i: s for i, s in grown.items() if i not in before}
        carried = [i for i in new if self.demo._window(t_start).get(i, (0, 0, 0, ""))[1] > 0]
        during = [d for t, _, d in self.hpa_samples if t_start <= t <= t_end]
        first_scale = next((t for t, _, d in self.hpa_samples if d > 1 and t >= t_start), None)
        self.demo.check(
            f"load up: the HPA grew the firewall from 1 to {max(during, default=1)} replicas,"
            " each new one carrying traffic",
            max(during, default=1) >= 3 and bool(new) and len(carried) == len(new),
            f"{len(carried)}/{len(new)} replicas that joined during the load carried packets;"
            " first scale-out"
            + (f" {first_scale - t_start:.1f}s after the load began" if first_scale else " never")
            + f" (wanted {plan.desired_at_peak} at the peak)",
        )

    def _grow(
        self, flows: list[EchoFlow], load: subprocess.Popen[bytes], top: float
    ) -> dict[str, str]:
        """Watch the firewall grow until the load ends (checking the HPA at ``top``, the end of
        the ramp's hold); once it has grown, give every replica long-lived flows (those the
        scale-in will drain). Returns the endpoints seen."""
        demo = self.demo
        seen: dict[str, str] = {}
        covered = 0
        checked = False
        deadline = time.monotonic() + self.up + self.hold + self.down + 30
        while load.poll() is None and time.monotonic() < deadline:
            if not checked and self.t >= top:
                self.check_active()
                checked = True
            endpoints = demo.firewall_endpoints()
            seen.update(endpoints)
            active = sum(state == "active" for state in endpoints.values())
            if active > max(covered, 1):
                demo.cover_replicas(flows)
                covered = active
            time.sleep(0.3)
        if not checked:
            self.check_active()
        return seen

    def _end_some(self, flows: list[EchoFlow], watch: DrainWatch, draining: set[str]) -> None:
        """End half (rounded up) of the flows of each replica draining for a second or more,
        once they have echoed more since it began draining: a flow may end on its draining
        replica, byte-exact; the others go on."""
        now = time.monotonic()
        for iface in draining:
            if now - watch.since.get(iface, now) < 1.0:
                continue
            ports = sorted(p for p, i in watch.replica_of.items() if i == iface)
            quota = (len(ports) + 1) // 2 - sum(p in watch.ended for p in ports)
            for port in ports:
                flow = _by_port(flows, port)
                if quota <= 0 or flow is None or port in watch.ended:
                    continue
                if flow.bytes_ok > watch.first[port] and not flow.broken:
                    self.demo.progress.remove([flow])  # its pause from now on is its end
                    flow.stop()
                    watch.last[port] = flow.bytes_ok
                    watch.ended.add(port)
                    quota -= 1

    def _shrink(self, flows: list[EchoFlow], t_end: float) -> DrainWatch:
        """Wait for the HPA to bring the firewall back to 1 programmed replica, watching the
        flows of the replicas that drain."""
        demo = self.demo
        watch = DrainWatch()
        deadline = time.monotonic() + demo.opts.timeout
        while time.monotonic() < deadline:
            endpoints = demo.firewall_endpoints()
            draining = {i for i, s in endpoints.items() if s == "draining"}
            if draining - watch.draining:
                for port, iface in demo.flow_placement(flows).items():
                    if iface in draining and port not in watch.first:
                        watch.first[port] = _bytes(flows, port)
                        watch.replica_of[port] = iface
                for iface in draining - watch.draining:
                    watch.since[iface] = time.monotonic()
                watch.draining |= draining
            for port, iface in watch.replica_of.items():
                if iface in draining and port not in watch.ended:
                    watch.last[port] = _bytes(flows, port)
            self._end_some(flows, watch, draining)
            if not draining and watch.draining and demo._firewall_programmed(1):
                break
            time.sleep(0.1)
        took = self.t - t_end
        index = {f.local_port: f.index for f in flows}
        for port in watch.first:
            demo.moved[index[port]] = (t_end, demo.progress.now())
        programmed = demo._firewall_programmed(1)
        demo.mark("1 programmed")
        demo.check(
            "load down: the HPA shrank the firewall back to 1 replica, the removed ones"
            " drained first",
            programmed and len(watch.draining) >= 2,
            f"{len(watch.draining)} replicas seen draining; 1 replica programmed"
            f" {took:.1f}s after the load ended"
            if programmed
            else "not back to 1 replica",
        )
        return watch


def _bytes(flows: list[EchoFlow], port: int) -> int:
    return next((f.bytes_ok for f in flows if f.local_port == port), 0)


def _by_port(flows: list[EchoFlow], port: int) -> EchoFlow | None:
    return next((f for f in flows if f.local_port == port), None)


def quantity(text: str) -> float:
    """A Kubernetes quantity as the metrics API writes them (``400406m``, ``12k``, ``3``)."""
    scale = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    if text and text[-1] in scale:
        return float(text[:-1]) * scale[text[-1]]
    return float(text)
