"""The demo's iperf3 rounds: every attempt is a round, a failed one is never retried out of
sight (root: iperf3 runs inside a network namespace, as in the demo's client pod).

Covers: with no server listening, the first round is recorded as failed (not retried into a
success once the server is up); once the server listens, rounds succeed with bit/s above zero.
"""

from __future__ import annotations

import subprocess
import time

from sfc_k8s.local.demo import CheckedIperf
from tests.nettools import Janitor

PORT = 5299


def _wait(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_failed_round_stays_failed_and_later_rounds_move_data(janitor: Janitor) -> None:
    ns = janitor.netns("sfct-iperf")
    iperf = CheckedIperf(ns, "127.0.0.1", port=PORT, streams=2, seconds=1)
    iperf.start()
    janitor.add(iperf.stop)
    _wait(lambda: len(iperf.rounds) >= 1)  # nothing listens: the attempt fails at once
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns, "iperf3", "-s", "-p", str(PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    janitor.add(server.wait)  # after the kill below (the janitor goes backwards)
    janitor.add(server.kill)
    _wait(lambda: any(r.error is None for r in iperf.rounds))
    iperf.stop()
    first, *later = iperf.rounds
    assert first.error is not None and first.bits_per_second == 0, first
    ok = [r for r in later if r.error is None]
    assert ok and all(r.bits_per_second > 0 for r in ok), iperf.rounds
