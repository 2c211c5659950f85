"""``TrafficMeter``: per-pod rates from per-endpoint counter samples, on a made-up clock.

Covers: a steady rate over the window; a pod's interfaces summed (packets, bits) and its
sessions the busiest interface's; an endpoint added during the window measured since it
appeared; counters that went back (endpoint re-added) measured since the reset; samples older
than the window forgotten (the rate follows a step within one window); no rate without a
baseline at least ``MIN_SPAN`` old; a window too short refused.
"""

from __future__ import annotations

import pytest

from sfc_k8s.operator.pod_traffic import EndpointReading, PodRef, TrafficMeter

FW = PodRef("ns", "fw-1", "uid-1")
OTHER = PodRef("ns", "fw-2", "uid-2")


def reading(key: str, packets: int, *, pod: PodRef = FW, sessions: int = 0) -> EndpointReading:
    return EndpointReading(key, pod, packets, packets * 100, sessions)


def test_steady_rate_over_the_window() -> None:
    meter = TrafficMeter(window=5.0)
    for second in range(11):
        meter.sample(float(second), [reading("l1/eth1", 1000 * second)])
    (fw,) = meter.rates(10.5, [reading("l1/eth1", 10500)])
    assert fw.pod == FW
    assert fw.packets_per_second == pytest.approx(1000.0)
    assert fw.bits_per_second == pytest.approx(800_000.0)
    assert fw.window == pytest.approx(5.5)


def test_interfaces_summed_and_sessions_of_the_busiest() -> None:
    meter = TrafficMeter(window=5.0)
    meter.sample(0.0, [reading("l1/in", 0), reading("l2/out", 0), reading("l1/b", 0, pod=OTHER)])
    now = [
        reading("l1/in", 300, sessions=7),
        reading("l2/out", 100, sessions=7),
        reading("l1/b", 50, pod=OTHER, sessions=2),
    ]
    fw, other = meter.rates(2.0, now)
    assert (fw.pod, other.pod) == (FW, OTHER)
    assert fw.packets_per_second == pytest.approx(200.0)
    assert fw.bits_per_second == pytest.approx(160_000.0)
    assert fw.sessions == 7
    assert fw.interfaces == ("l1/in", "l2/out")
    assert other.packets_per_second == pytest.approx(25.0)


def test_endpoint_added_during_the_window() -> None:
    meter = TrafficMeter(window=5.0)
    meter.sample(0.0, [reading("l1/a", 0)])
    meter.sample(3.0, [reading("l1/a", 300), reading("l2/b", 0)])
    (fw,) = meter.rates(4.0, [reading("l1/a", 400), reading("l2/b", 50)])
    assert fw.packets_per_second == pytest.approx(100.0 + 50.0)


def test_counters_reset_measured_since_the_reset() -> None:
    meter = TrafficMeter(window=5.0)
    meter.sample(0.0, [reading("l1/a", 5000)])
    meter.sample(1.0, [reading("l1/a", 10)])  # removed and added again: counters from zero
    (fw,) = meter.rates(3.0, [reading("l1/a", 210)])
    assert fw.packets_per_second == pytest.approx(100.0)


def test_old_samples_forgotten_so_a_step_shows_within_a_window() -> None:
    meter = TrafficMeter(window=2.0)
    total = 0
    for second in range(10):
        total += 100 if second < 6 else 1000
        meter.sample(float(second), [reading("l1/a", total)])
    (fw,) = meter.rates(9.0, [reading("l1/a", total)])
    assert fw.packets_per_second == pytest.approx(1000.0)
    assert len(meter._samples) <= 4


def test_no_rate_without_an_old_enough_baseline() -> None:
    meter = TrafficMeter(window=5.0)
    assert meter.rates(0.0, [reading("l1/a", 10)]) == []
    meter.sample(0.0, [reading("l1/a", 10)])
    assert meter.rates(0.1, [reading("l1/a", 20)]) == []
    (fw,) = meter.rates(1.0, [reading("l1/a", 20)])
    assert fw.packets_per_second == pytest.approx(10.0)


def test_window_too_short_refused() -> None:
    with pytest.raises(ValueError, match=r"window=0.1: expected more than 0.2 seconds"):
        TrafficMeter(window=0.1)
