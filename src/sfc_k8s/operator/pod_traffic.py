"""Per-pod traffic rates from the data plane's per-endpoint counters: the autoscaling signal.

The node agent (``sfc_k8s.operator.agent_traffic``) samples the counters of its local endpoints
every second into a ``TrafficMeter`` and, when the metrics provider asks, reads them once more
and calls ``TrafficMeter.rates``. Nothing here does I/O; the clock is the caller's, so the unit
tests (``tests/unit/operator/test_pod_traffic.py``) drive it with made-up times.

What a pod's figures mean (docs/autoscaling.md):

- ``packets_per_second``, ``bits_per_second``: packets (bytes x 8) the data plane delivered
  *into* the pod (the endpoint's ``tx`` counters), summed over the pod's cross-connected
  interfaces, per second, over the last ``window`` seconds. A packet crossing an inline NF
  enters it once, on one of its interfaces, so this is the load the NF handles whatever the
  direction; what the pod sends (``rx``) is the next hop's load, not its own.
- ``sessions``: the live sessions recorded for the pod's busiest interface. Every flow through
  an inline NF is recorded once per link it crosses, so summing its interfaces would count each
  flow twice; the largest of them is the number of flows it carries.

Each endpoint is measured against the oldest sample of the window that holds it with counters
not above the current ones: an endpoint added during the window is measured since it appeared,
one whose counters went back (removed and added again) since that reset. An endpoint with no
such sample has no rate yet, and a pod none of whose endpoints has one is not reported: a rate
over a few milliseconds would be noise.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DEFAULT_WINDOW = 5.0  # seconds the rates average over
DEFAULT_INTERVAL = 1.0  # seconds between two samples
MIN_SPAN = 0.2  # seconds: a shorter baseline is no rate


@dataclass(frozen=True, order=True)
class PodRef:
    """The pod an endpoint belongs to, as its CrossConnection names it."""

    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class EndpointReading:
    """One local endpoint's counters at one moment."""

    key: str  # "<link>/<host interface>": one endpoint of one link on this node
    pod: PodRef
    packets: int  # delivered into the pod (tx), since the endpoint was added
    octets: int
    sessions: int = 0  # live sessions naming it (read only when rates are asked for)


@dataclass(frozen=True)
class PodTraffic:
    """One pod's rates over ``window`` seconds (the longest span among its endpoints)."""

    pod: PodRef
    packets_per_second: float
    bits_per_second: float
    sessions: int
    interfaces: tuple[str, ...]
    window: float

    def to_json(self) -> dict[str, object]:
        return {
            "namespace": self.pod.namespace,
            "name": self.pod.name,
            "uid": self.pod.uid,
            "packetsPerSecond": round(self.packets_per_second, 3),
            "bitsPerSecond": round(self.bits_per_second, 3),
            "sessions": self.sessions,
            "interfaces": list(self.interfaces),
            "windowSeconds": round(self.window, 3),
        }


@dataclass(frozen=True)
class _Sample:
    at: float
    counters: Mapping[str, tuple[int, int]]  # endpoint key -> (packets, octets)


@dataclass
class _Sum:
    packets: float = 0.0
    bits: float = 0.0
    sessions: int = 0
    window: float = 0.0
    measured: bool = False


class TrafficMeter:
    """The samples of the last ``window`` seconds, and the rates they give."""

    def __init__(self, *, window: float = DEFAULT_WINDOW) -> None:
        if window <= MIN_SPAN:
            raise ValueError(f"window={window}: expected more than {MIN_SPAN} seconds")
        self.window = window
        self._samples: deque[_Sample] = deque()

    def sample(self, at: float, readings: Iterable[EndpointReading]) -> None:
        """Keep the counters read at ``at``; forget samples the window no longer needs (the
        newest one older than the window stays: it is the baseline of a full window)."""
        self._samples.append(_Sample(at, {r.key: (r.packets, r.octets) for r in readings}))
        while len(self._samples) > 1 and self._samples[1].at <= at - self.window:
            self._samples.popleft()

    def _baseline(self, reading: EndpointReading, at: float) -> tuple[float, int, int] | None:
        """(time, packets, octets) of the oldest usable sample of the endpoint (``sample`` keeps
        them at most one interval older than the window)."""
        for sample in self._samples:
            if at - sample.at < MIN_SPAN:
                break
            counters = sample.counters.get(reading.key)
            if counters is None:
                continue
            packets, octets = counters
            if packets <= reading.packets and octets <= reading.octets:
                return sample.at, packets, octets
        return None

    def rates(self, at: float, readings: Iterable[EndpointReading]) -> list[PodTraffic]:
        """Each pod's rates between its endpoints' baselines and ``readings`` (read at ``at``),
        sorted by pod."""
        sums: dict[PodRef, _Sum] = {}
        interfaces: dict[PodRef, list[str]] = {}
        for reading in readings:
            total = sums.setdefault(reading.pod, _Sum())
            interfaces.setdefault(reading.pod, []).append(reading.key)
            total.sessions = max(total.sessions, reading.sessions)
            baseline = self._baseline(reading, at)
            if baseline is None:
                continue
            since, packets, octets = baseline
            span = at - since
            total.packets += (reading.packets - packets) / span
            total.bits += 8 * (reading.octets - octets) / span
            total.window = max(total.window, span)
            total.measured = True
        return [
            PodTraffic(
                pod=pod,
                packets_per_second=total.packets,
                bits_per_second=total.bits,
                sessions=total.sessions,
                interfaces=tuple(sorted(interfaces[pod])),
                window=total.window,
            )
            for pod, total in sorted(sums.items())
            if total.measured
        ]
