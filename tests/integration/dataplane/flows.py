"""Drive ``traffic.py`` from the tests: echo servers, one-shot flow runs and live flows.

Used by the data-plane traffic tests. Every process is started through ``topology.spawn`` so the
janitor kills it if a test fails half-way; servers are stopped with SIGTERM and return the JSON
summary they print then.
"""

from __future__ import annotations

import json
import signal
import subprocess
from dataclasses import dataclass
from typing import Any

from tests.integration.dataplane.topology import spawn, traffic_argv
from tests.nettools import Janitor


@dataclass
class Server:
    """An echo server (``tcp-echo`` or ``udp-echo``) running in a namespace."""

    proc: subprocess.Popen[str]

    @classmethod
    def start(
        cls,
        janitor: Janitor,
        netns: str,
        mode: str,
        port: int,
        *,
        tag: str = "",
        ipv6: bool = False,
    ) -> Server:
        args = [mode, str(port), "--tag", tag] + (["--ipv6"] if ipv6 else [])
        proc = spawn(janitor, traffic_argv(netns, *args))
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if not first.startswith("{"):
            raise RuntimeError(f"{mode} did not start in {netns}: {proc.communicate()[1]}")
        return cls(proc)

    def stop(self) -> dict[str, Any]:
        """SIGTERM, then the server's summary (datagrams/connections seen, retransmits)."""
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=10)
        if not out.strip():
            raise RuntimeError(f"echo server ended without a summary: {err}")
        summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return summary


def run_flows(netns: str, mode: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run a client mode of ``traffic.py`` to the end and return its report."""
    proc = subprocess.run(
        traffic_argv(netns, mode, *args), capture_output=True, text=True, timeout=timeout,
        check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"traffic.py {mode} failed in {netns}: {proc.stderr.strip()}")
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


@dataclass
class LiveFlows:
    """Long-running client flows (``tcp-flows`` or ``udp-stream``) that run until ``stop()``."""

    proc: subprocess.Popen[str]

    @classmethod
    def start(
        cls, janitor: Janitor, netns: str, mode: str, *args: str, max_seconds: float = 60
    ) -> LiveFlows:
        argv = traffic_argv(netns, mode, "--duration", str(max_seconds), *args)
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

        def kill() -> None:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)

        janitor.add(kill)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until every flow made one exchange
        if line.strip() != "READY":
            proc.kill()
            raise RuntimeError(f"{mode} never got ready in {netns}: {proc.communicate()[1]}")
        return cls(proc)

    def stop(self) -> dict[str, Any]:
        out, err = self.proc.communicate("stop\n", timeout=30)
        if self.proc.returncode != 0 or not out.strip():
            raise RuntimeError(f"live flows failed: {err.strip()}")
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return report
