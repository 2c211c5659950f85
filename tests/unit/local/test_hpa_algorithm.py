"""The HPA algorithm (`local/apiserver/hpa.py`) against the Kubernetes documentation's examples.

Covers: the ratio rule (200m over a 100m target doubles, 50m halves) and the 10 % tolerance
band; missing metrics (0 on scale-up, 100 % of target on scale-down) and not-ready pods (0 on
scale-up) with the recomputed ratio not reversing direction; an Object metric's Value and
AverageValue targets; several metrics (largest proposal; a failed metric blocks a scale-down);
min/max clamps with their ScalingLimited reasons; the default scale-up rate (4 pods or 100 % per
15 s); the documented scale-down policies (4 pods / 10 % per 60 s, `Max` and `Min` selection,
`Disabled`) over the scale events of the period; the scale-down stabilization window (highest
recommendation of the last 300 s) and a scale-up window. Times come from a fake clock (plain
seconds passed in).
"""

from __future__ import annotations

import pytest

from sfc_k8s.local.apiserver.hpa import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    History,
    PodState,
    PolicyType,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
    combine_proposals,
    event_keep_seconds,
    normalize,
    object_average_proposal,
    object_value_proposal,
    pods_proposal,
    scale_down_limit,
    scale_up_limit,
)
from sfc_k8s.local.apiserver.quantity import QuantityError, format_milli, parse_milli

M = 1000  # one unit in thousandths


def _ready(count: int, prefix: str = "p") -> list[PodState]:
    return [PodState(f"{prefix}{i}", ready=True) for i in range(count)]


def _values(pods: list[PodState], each: int) -> dict[str, int]:
    return {p.name: each for p in pods}


# ----- the ratio and the tolerance ---------------------------------------------------------------


def test_200m_over_a_100m_target_doubles_the_replicas() -> None:
    pods = _ready(3)
    assert pods_proposal(3, pods, _values(pods, 200), 100) == 6


def test_50m_over_a_100m_target_halves_the_replicas() -> None:
    pods = _ready(4)
    assert pods_proposal(4, pods, _values(pods, 50), 100) == 2


@pytest.mark.parametrize("value", [91, 100, 105, 109])
def test_a_ratio_within_the_tolerance_keeps_the_replicas(value: int) -> None:
    pods = _ready(10)
    assert pods_proposal(10, pods, _values(pods, value), 100) == 10


@pytest.mark.parametrize(("value", "expected"), [(89, 9), (111, 12)])
def test_a_ratio_just_outside_the_tolerance_scales(value: int, expected: int) -> None:
    pods = _ready(10)
    assert pods_proposal(10, pods, _values(pods, value), 100) == expected


def test_the_ratio_uses_the_average_over_pods_with_values() -> None:
    pods = _ready(2)
    # 180k and 120k packets/s against a 100k average: ratio 1.5, ceil(1.5 * 2) = 3
    assert pods_proposal(2, pods, {"p0": 180_000 * M, "p1": 120_000 * M}, 100_000 * M) == 3


# ----- missing metrics and not-ready pods --------------------------------------------------------


def test_missing_metrics_count_as_the_target_on_scale_down() -> None:
    pods = _ready(4)
    values = {"p0": 50, "p1": 50, "p2": 50}  # p3 has no metric
    # alone, the three measured pods would ask ceil(0.5 * 3) = 2; p3 at 100 % gives 0.625 * 4
    assert pods_proposal(4, pods, values, 100) == 3


def test_missing_metrics_count_as_zero_on_scale_up_and_may_cancel_it() -> None:
    pods = _ready(4)
    # one measured pod at 3x the target; three missing at 0 -> ratio 0.75: the direction would
    # reverse, so nothing changes (ignoring them would even have scaled down to 3)
    assert pods_proposal(4, pods, {"p0": 300}, 100) == 4


def test_missing_metrics_that_only_dampen_a_scale_up_keep_its_direction() -> None:
    pods = _ready(4)
    # 3 x 400 measured, one missing at 0 -> ratio 3.0 over 4 pods -> 12
    assert pods_proposal(4, pods, {"p0": 400, "p1": 400, "p2": 400}, 100) == 12


def test_not_ready_pods_count_as_zero_on_scale_up() -> None:
    pods = _ready(3) + [PodState(f"new{i}", ready=False) for i in range(3)]
    values = {"p0": 120, "p1": 120, "p2": 120}
    # the ready pods ask a scale-up (1.2); with the starting pods at 0 the ratio is 0.6: no change
    assert pods_proposal(6, pods, values, 100) == 6


def test_not_ready_pods_do_not_matter_to_a_scale_down() -> None:
    pods = [*_ready(4), PodState("starting", ready=False)]
    assert pods_proposal(5, pods, _values(_ready(4), 25), 100) == 1


def test_pods_being_deleted_are_ignored() -> None:
    pods = [*_ready(2), PodState("leaving", ready=True, ignored=True)]
    assert pods_proposal(3, pods, {"p0": 200, "p1": 200, "leaving": 0}, 100) == 4


def test_no_measured_pod_is_an_error() -> None:
    with pytest.raises(ValueError, match="no ready pod"):
        pods_proposal(2, _ready(2), {}, 100)


# ----- Object metrics and several metrics --------------------------------------------------------


def test_object_value_target_scales_the_ready_pods_by_the_ratio() -> None:
    assert object_value_proposal(3, 3, 2 * M, 1 * M) == 6
    assert object_value_proposal(3, 3, 1050, 1 * M) == 3  # within tolerance


def test_object_average_value_shares_the_value_over_the_replicas() -> None:
    # 1000 requests/s over a 100/s per-replica target: 10 replicas
    assert object_average_proposal(4, 1000 * M, 100 * M) == 10
    assert object_average_proposal(10, 1040 * M, 100 * M) == 10  # 1.04 within tolerance


def test_several_metrics_take_the_largest_proposal() -> None:
    assert combine_proposals(4, [3, 7, 5]) == 7


def test_a_failed_metric_blocks_a_scale_down_but_not_a_scale_up() -> None:
    assert combine_proposals(4, [2, None]) is None
    assert combine_proposals(4, [6, None]) == 6
    assert combine_proposals(4, [None, None]) is None


# ----- min/max and the default rates -------------------------------------------------------------


def test_max_replicas_clamps_a_scale_up() -> None:
    decision = normalize(3, 12, History(), 0.0, min_replicas=1, max_replicas=5)
    assert (decision.replicas, decision.reason) == (5, "TooManyReplicas")


def test_min_replicas_clamps_a_scale_down() -> None:
    rules = ScalingRules(0, SelectPolicy.MAX, DEFAULT_SCALE_DOWN.policies)
    decision = normalize(4, 1, History(), 0.0, min_replicas=2, max_replicas=10, scale_down=rules)
    assert (decision.replicas, decision.reason) == (2, "TooFewReplicas")


def test_default_scale_up_allows_4_pods_or_100_percent_per_15_seconds() -> None:
    assert scale_up_limit(1, DEFAULT_SCALE_UP, History(), 0.0) == 5  # +4 pods beats +100 %
    assert scale_up_limit(10, DEFAULT_SCALE_UP, History(), 0.0) == 20  # +100 % beats +4
    decision = normalize(1, 40, History(), 0.0, min_replicas=1, max_replicas=100)
    assert (decision.replicas, decision.reason) == (5, "ScaleUpLimit")


def test_scale_up_events_of_the_period_count_against_the_rate() -> None:
    history = History()
    history.record_scale(1, 5, 0.0, keep_seconds=15)
    assert scale_up_limit(5, DEFAULT_SCALE_UP, history, 10.0) == 5  # the period started at 1
    assert scale_up_limit(5, DEFAULT_SCALE_UP, history, 16.0) == 10  # a new period


# ----- the documented scale-down policies (4 pods or 10 % per 60 s) ------------------------------

DOC_SCALE_DOWN = ScalingRules(
    0,
    SelectPolicy.MAX,
    (ScalingPolicy(PolicyType.PODS, 4, 60), ScalingPolicy(PolicyType.PERCENT, 10, 60)),
)


def test_documented_policies_from_80_to_10_replicas() -> None:
    """80 -> 72 (10 % beats 4 pods), 72 -> 64 (7.2 rounds to a removal of 8), ... and below
    40 replicas the 4-pod policy allows the larger change."""
    history, now, replicas, steps = History(), 0.0, 80, []
    while replicas > 10:
        decision = normalize(
            replicas, 10, history, now, min_replicas=1, max_replicas=100, scale_down=DOC_SCALE_DOWN
        )
        history.record_scale(replicas, decision.replicas, now, keep_seconds=60)
        replicas = decision.replicas
        steps.append(replicas)
        now += 61
    # 10 % of 57 is 5.7: the removal rounds up to 6 (57 -> 51); from 40 on, 4 pods win
    assert steps == [72, 64, 57, 51, 45, 40, 36, 32, 28, 24, 20, 16, 12, 10]


def test_the_period_counts_earlier_removals() -> None:
    history = History()
    history.record_scale(80, 72, 0.0, keep_seconds=60)
    assert scale_down_limit(72, DOC_SCALE_DOWN, history, 30.0) == 72  # 80 - 8 already removed
    assert scale_down_limit(72, DOC_SCALE_DOWN, history, 61.0) == 64


def test_select_policy_min_takes_the_smaller_change() -> None:
    rules = ScalingRules(0, SelectPolicy.MIN, DOC_SCALE_DOWN.policies)
    assert scale_down_limit(100, rules, History(), 0.0) == 96  # 4 pods rather than 10 %


def test_disabled_scale_down_never_removes_replicas() -> None:
    rules = ScalingRules(0, SelectPolicy.DISABLED, DOC_SCALE_DOWN.policies)
    decision = normalize(8, 2, History(), 0.0, min_replicas=1, max_replicas=10, scale_down=rules)
    assert (decision.replicas, decision.reason) == (8, "ScaleDownLimit")


# ----- stabilization windows ---------------------------------------------------------------------


def test_scale_down_takes_the_highest_recommendation_of_the_window() -> None:
    history = History()
    up = DEFAULT_SCALE_UP
    # recommendations 10 (t=0), 6 (t=100), 4 (t=200) while running 10 replicas
    for now, proposal in ((0.0, 10), (100.0, 6), (200.0, 4)):
        decision = normalize(10, proposal, history, now, min_replicas=1, max_replicas=20)
        assert decision.replicas == 10
    # at t=301 the 10 has left the 300 s window: the highest left is 6
    assert normalize(10, 4, history, 301.0, min_replicas=1, max_replicas=20).replicas == 6
    # at t=401 the 6 has left too
    assert (
        normalize(6, 4, history, 401.0, min_replicas=1, max_replicas=20, scale_up=up).replicas == 4
    )


def test_a_scale_up_window_takes_the_lowest_recommendation() -> None:
    up = ScalingRules(60, SelectPolicy.MAX, DEFAULT_SCALE_UP.policies)
    history = History()
    assert normalize(2, 2, history, 0.0, min_replicas=1, max_replicas=20, scale_up=up).replicas == 2
    assert (
        normalize(2, 6, history, 30.0, min_replicas=1, max_replicas=20, scale_up=up).replicas == 2
    )
    assert (
        normalize(2, 6, history, 61.0, min_replicas=1, max_replicas=20, scale_up=up).replicas == 6
    )


def test_events_are_kept_as_long_as_the_longest_period() -> None:
    assert event_keep_seconds(DEFAULT_SCALE_UP, DOC_SCALE_DOWN) == 60


# ----- quantities --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "milli"),
    [("100k", 100_000_000), ("250m", 250), ("1.5", 1500), ("1Ki", 1_024_000), ("2e3", 2_000_000)],
)
def test_quantities_parse_to_thousandths(text: str, milli: int) -> None:
    assert parse_milli(text) == milli


@pytest.mark.parametrize(
    ("milli", "text"), [(180_000_000, "180k"), (1500, "1500m"), (2_000_000_000, "2M"), (0, "0")]
)
def test_quantities_format_as_kubernetes_prints_them(milli: int, text: str) -> None:
    assert format_milli(milli) == text


def test_a_bad_quantity_names_the_expected_form() -> None:
    with pytest.raises(QuantityError, match="100k, 250m"):
        parse_milli("ten")
