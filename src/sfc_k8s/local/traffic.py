"""Traffic and observation tools of the demo: echo flows, iperf3 rounds, agent metrics.

Everything here runs from the host (the demo's process) into the pods' and nodes' network
namespaces: sockets are opened inside the client pod's namespace by a short-lived thread
(``netns.connect_in_netns``), iperf3 runs with ``ip netns exec``, and the per-endpoint data-plane
counters are scraped from each node agent's Prometheus endpoint inside its node namespace.
Used by ``sfc_k8s.local.demo`` and the end-to-end test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from sfc_k8s.local import netns

CHUNK = 1024


def _payload(flow: int, seq: int) -> bytes:
    seed = hashlib.sha256(f"{flow}/{seq}".encode()).digest()
    return (seed * (CHUNK // len(seed) + 1))[:CHUNK]


class EchoFlow:
    """One long-lived TCP connection that sends numbered chunks and checks every echoed byte."""

    def __init__(self, index: int, sock: socket.socket, *, interval: float = 0.05) -> None:
        self.index = index
        self.sock = sock
        self.interval = interval
        self.local_port: int = sock.getsockname()[1]
        self.bytes_ok = 0
        self.error: str | None = None
        self.broken_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"echo-{index}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        try:
            while not self._stop.is_set():
                data = _payload(self.index, seq)
                self.sock.sendall(data)
                got = b""
                while len(got) < len(data):
                    part = self.sock.recv(len(data) - len(got))
                    if not part:
                        raise ConnectionError("connection closed by the peer")
                    got += part
                if got != data:
                    raise ValueError(f"echoed bytes differ from the sent ones at chunk {seq}")
                self.bytes_ok += len(data)
                seq += 1
                self._stop.wait(self.interval)
        except (OSError, ValueError) as err:
            if not self._stop.is_set():
                self.error = f"{type(err).__name__}: {err}"
                self.broken_at = time.monotonic()

    @property
    def broken(self) -> bool:
        return self.error is not None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        with contextlib.suppress(OSError):
            self.sock.close()


def open_echo_flows(
    pod_netns: str, host: str, port: int, count: int, *, timeout: float = 20.0
) -> list[EchoFlow]:
    flows = []
    for i in range(count):
        sock = netns.connect_in_netns(pod_netns, host, port, timeout=5.0)
        sock.settimeout(timeout)
        flows.append(EchoFlow(i, sock))
    return flows


def short_flows(pod_netns: str, host: str, port: int, count: int) -> int:
    """Open ``count`` short echo connections (new flows to spread); returns how many worked."""

    def burst() -> int:
        ok = 0
        for i in range(count):
            try:
                with socket.create_connection((host, port), timeout=3.0) as sock:
                    data = _payload(10_000 + i, 0)[:200]
                    sock.sendall(data)
                    got = b""
                    while len(got) < len(data):
                        part = sock.recv(len(data) - len(got))
                        if not part:
                            break
                        got += part
                    ok += got == data
            except OSError:
                pass
        return ok

    return netns.run_in_netns(pod_netns, burst)


def ping(pod_netns: str, host: str, *, count: int = 5) -> tuple[int, int, str]:
    """(sent, received, summary line) of a ping from the pod."""
    proc = subprocess.run(
        netns.exec_argv(pod_netns, ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1", host]),
        capture_output=True,
        text=True,
        timeout=count + 10,
        check=False,
    )
    sent = received = 0
    summary = ""
    for line in proc.stdout.splitlines():
        if "packets transmitted" in line:
            summary = line.strip()
            parts = line.split(",")
            sent = int(parts[0].split()[0])
            received = int(parts[1].split()[0])
    return sent, received, summary


@dataclass
class IperfRound:
    start: float
    end: float
    bits_per_second: float
    error: str | None = None


@dataclass
class IperfLoop:
    """Back-to-back iperf3 runs with ``streams`` parallel streams, each ``seconds`` long.

    Rounds keep starting fresh flows, so new replicas get their share as soon as they are up.
    """

    pod_netns: str
    host: str
    port: int = 5201
    streams: int = 8
    seconds: int = 2
    rounds: list[IperfRound] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="iperf3", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.seconds + 30)

    def _once(self) -> tuple[float, str | None]:
        argv = [
            "iperf3",
            "-c",
            self.host,
            "-p",
            str(self.port),
            "-P",
            str(self.streams),
            "-t",
            str(self.seconds),
            "-J",
            "--connect-timeout",
            "3000",
        ]
        try:
            proc = subprocess.run(
                netns.exec_argv(self.pod_netns, argv),
                capture_output=True,
                text=True,
                timeout=self.seconds + 20,
                check=False,
            )
            doc = json.loads(proc.stdout or "{}")
        except (subprocess.TimeoutExpired, ValueError) as err:
            return 0.0, f"iperf3 gave no result: {err}"
        end = doc.get("end") or {}
        bps = float((end.get("sum_received") or {}).get("bits_per_second", 0))
        error = doc.get("error")
        return bps, str(error) if error else None

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            bps, error = self._once()
            if error and not self._stop.is_set():
                # One retry: the server may still be closing the previous round's test.
                time.sleep(0.3)
                start = time.monotonic()
                bps, error = self._once()
            self.rounds.append(IperfRound(start, time.monotonic(), bps, error))
            if error:
                self._stop.wait(0.5)


@dataclass(frozen=True)
class EndpointSample:
    """Counters of one endpoint (host interface) of one link, as the node agent reports it."""

    crossconnection: str
    side: str
    interface: str
    state: str
    rx_packets: float = 0.0
    tx_packets: float = 0.0
    rx_bytes: float = 0.0
    tx_bytes: float = 0.0

    @property
    def remote(self) -> bool:
        """An endpoint on another node than the agent's (``#ID@NODE``): its counters are the
        packets this node exchanged with it through the tunnel."""
        return self.interface.startswith("#")

    @property
    def packets(self) -> float:
        return self.rx_packets + self.tx_packets

    @property
    def bytes(self) -> float:
        return self.rx_bytes + self.tx_bytes


@dataclass
class MetricsSnapshot:
    time: float
    endpoints: dict[tuple[str, str], EndpointSample]  # (crossconnection, interface) -> sample
    sessions: dict[str, float]  # crossconnection -> sessions
    drops: dict[tuple[str, str], float]  # (crossconnection, reason) -> packets


def scrape_agent(node_netns: str, port: int, *, timeout: float = 3.0) -> MetricsSnapshot:
    """Read the node agent's ``/metrics`` from inside its node namespace."""
    sock = netns.connect_in_netns(node_netns, "127.0.0.1", port, timeout=timeout)
    with sock:
        sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    raw = b"".join(chunks).decode(errors="replace")
    body = raw.split("\r\n\r\n", 1)[-1]
    snap = MetricsSnapshot(time.monotonic(), {}, {}, {})
    counters: dict[tuple[str, str], dict[str, object]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels = sample.labels
            xc = labels.get("crossconnection", "")
            if sample.name in ("sfc_k8s_endpoint_packets_total", "sfc_k8s_endpoint_bytes_total"):
                key = (xc, labels["interface"])
                entry = counters.setdefault(key, {"side": labels["side"], "state": labels["state"]})
                unit = "packets" if "packets" in sample.name else "bytes"
                entry[f"{labels['direction']}_{unit}"] = sample.value
            elif sample.name == "sfc_k8s_link_sessions":
                snap.sessions[xc] = snap.sessions.get(xc, 0.0) + sample.value
            elif sample.name == "sfc_k8s_link_drops_total":
                snap.drops[(xc, labels.get("reason", ""))] = sample.value
    for (xc, iface), entry in counters.items():
        snap.endpoints[(xc, iface)] = EndpointSample(
            crossconnection=xc,
            side=str(entry.pop("side")),
            interface=iface,
            state=str(entry.pop("state")),
            **{k: float(v) for k, v in entry.items()},  # type: ignore[arg-type]
        )
    return snap


# -- a paced UDP load ramp (its own process: pacing needs no GIL shared with the demo) ---------


@dataclass(frozen=True)
class Ramp:
    """A load profile: 0 -> ``peak`` packets/s linearly over ``up`` seconds, ``hold`` seconds
    at ``peak``, then down to 0 over ``down`` seconds."""

    peak: float
    up: float
    hold: float
    down: float

    @property
    def seconds(self) -> float:
        return self.up + self.hold + self.down

    def rate(self, t: float) -> float:
        """Packets/s at ``t`` seconds since the start (0 outside the ramp)."""
        if t < 0 or t >= self.seconds:
            return 0.0
        if t < self.up:
            return self.peak * t / self.up
        if t < self.up + self.hold:
            return self.peak
        return self.peak * (self.seconds - t) / self.down if self.down else 0.0


def udp_ramp(host: str, port: int, ramp: Ramp, *, flows: int = 16, tick: float = 0.01) -> int:
    """Send ``ramp`` to ``host:port`` as small datagrams spread over ``flows`` sockets, one of
    them replaced by a new one (a new source port: a new flow) every ``1/flows`` s, so that a
    replica added during the ramp gets its share within a second. Returns datagrams sent."""
    payload = b"sfc-k8s-ramp" * 4
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(flows)]
    start = time.monotonic()
    sent, owed, last, next_swap = 0, 0.0, 0.0, 0.0
    turn = 0
    try:
        while (now := time.monotonic() - start) < ramp.seconds:
            owed += ramp.rate(now) * (now - last)  # by the time elapsed: a late tick catches up
            last = now
            while owed >= 1:
                with contextlib.suppress(OSError):  # a full queue or an ICMP error: go on
                    socks[turn % flows].sendto(payload, (host, port))
                    sent += 1
                turn += 1
                owed -= 1
            if now >= next_swap:
                index = int(next_swap * flows) % flows
                socks[index].close()
                socks[index] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                next_swap += 1 / flows
            time.sleep(max(0.0, start + now + tick - time.monotonic()))
    finally:
        for sock in socks:
            sock.close()
    return int(sent)


def ramp_argv(host: str, port: int, ramp: Ramp, *, flows: int = 16) -> list[str]:
    """The command running ``udp_ramp`` as its own process (``python -m``)."""
    import sys

    return [
        sys.executable, "-m", "sfc_k8s.local.traffic", host, str(port),
        f"{ramp.peak:g}", f"{ramp.up:g}", f"{ramp.hold:g}", f"{ramp.down:g}", str(flows),
    ]  # fmt: skip


if __name__ == "__main__":
    import sys

    host_arg, port_arg, peak, up, hold, down, n = sys.argv[1:8]
    total = udp_ramp(
        host_arg, int(port_arg), Ramp(float(peak), float(up), float(hold), float(down)),
        flows=int(n),
    )  # fmt: skip
    print(f"sent {total} datagrams", flush=True)
