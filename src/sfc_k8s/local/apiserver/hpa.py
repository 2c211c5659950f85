"""The `autoscaling/v2` HorizontalPodAutoscaler algorithm, as pure functions.

The local cluster's HPA controller (`hpacontroller.py`) calls these once per HPA and sync: a
proposal per metric (`pods_proposal`, `object_value_proposal`, `object_average_proposal`), the
largest one (`combine_proposals`), then `normalize()` applies the stabilization windows, the
`behavior` policies over the recorded scale events and the min/max clamps. `History` keeps an
HPA's recommendations and scale events between syncs. Everything here follows the algorithm the
Kubernetes documentation describes (the ratio `current / target` with a 10 % tolerance, missing
and not-ready pods, policies, windows); times are plain seconds from the caller's clock, so the
unit tests drive it with a fake one. Metric values and targets are integers of thousandths
(`quantity.parse_milli`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

TOLERANCE = 0.1  # kube-controller-manager's --horizontal-pod-autoscaler-tolerance default


class PolicyType(StrEnum):
    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(StrEnum):
    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


@dataclass(frozen=True)
class ScalingPolicy:
    """One `behavior.scaleUp/scaleDown.policies[]` entry."""

    type: PolicyType
    value: int
    period_seconds: int


@dataclass(frozen=True)
class ScalingRules:
    """One direction of `behavior`, defaults filled in."""

    stabilization_window_seconds: int
    select_policy: SelectPolicy
    policies: tuple[ScalingPolicy, ...]


DEFAULT_SCALE_UP = ScalingRules(
    0,
    SelectPolicy.MAX,
    (ScalingPolicy(PolicyType.PODS, 4, 15), ScalingPolicy(PolicyType.PERCENT, 100, 15)),
)
DEFAULT_SCALE_DOWN = ScalingRules(
    300, SelectPolicy.MAX, (ScalingPolicy(PolicyType.PERCENT, 100, 15),)
)


@dataclass(frozen=True)
class PodState:
    """What the algorithm needs of one pod of the scale target."""

    name: str
    ready: bool
    ignored: bool = False  # being deleted or failed: neither counted nor measured


@dataclass(frozen=True)
class ScaleEvent:
    time: float
    change: int  # replicas added (scale-up events) or removed (scale-down events), > 0


@dataclass(frozen=True)
class Recommendation:
    time: float
    replicas: int


@dataclass
class History:
    """An HPA's past recommendations and scale events (kept in memory between syncs)."""

    recommendations: list[Recommendation] = field(default_factory=list)
    scale_up_events: list[ScaleEvent] = field(default_factory=list)
    scale_down_events: list[ScaleEvent] = field(default_factory=list)

    def record_scale(self, previous: int, new: int, now: float, *, keep_seconds: int) -> None:
        """Remember a rescale from `previous` to `new` replicas; forget events older than the
        longest policy period (`keep_seconds`)."""
        if new > previous:
            self.scale_up_events.append(ScaleEvent(now, new - previous))
        elif new < previous:
            self.scale_down_events.append(ScaleEvent(now, previous - new))
        cutoff = now - keep_seconds
        self.scale_up_events = [e for e in self.scale_up_events if e.time > cutoff]
        self.scale_down_events = [e for e in self.scale_down_events if e.time > cutoff]


def _within_tolerance(ratio: float, tolerance: float) -> bool:
    return abs(1.0 - ratio) <= tolerance


def _group(
    pods: Sequence[PodState], values: Mapping[str, int]
) -> tuple[dict[str, float], list[str], list[str]]:
    """Measured values of the ready pods, the not-ready pods, the ready pods without a value."""
    measured: dict[str, float] = {}
    unready: list[str] = []
    missing: list[str] = []
    for pod in pods:
        if pod.ignored:
            continue
        if not pod.ready:
            unready.append(pod.name)
        elif pod.name not in values:
            missing.append(pod.name)
        else:
            measured[pod.name] = values[pod.name]
    return measured, unready, missing


def pods_proposal(
    current_replicas: int,
    pods: Sequence[PodState],
    values: Mapping[str, int],
    target_average: int,
    *,
    tolerance: float = TOLERANCE,
) -> int:
    """Replicas proposed by a `Pods` metric (or an `AverageValue` metric read per pod).

    `values` maps pod names to their metric value; pods without one are missing. Not-ready pods
    are set aside; when that or a missing metric could change the outcome, the ratio is
    recomputed conservatively (missing = 100 % of target on scale-down, 0 on scale-up; not-ready
    = 0 on scale-up) and the scale is abandoned if the direction reverses or the new ratio falls
    within the tolerance.
    """
    if target_average <= 0:
        raise ValueError(f"target average {target_average} must be positive")
    measured, unready, missing = _group(pods, values)
    if not measured:
        raise ValueError("no ready pod has a metric value")
    ratio = sum(measured.values()) / len(measured) / target_average
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if _within_tolerance(ratio, tolerance):
            return current_replicas
        return math.ceil(ratio * len(measured))
    filler = float(target_average) if ratio < 1.0 else 0.0
    for name in missing:
        measured[name] = filler
    if scale_up_with_unready:
        for name in unready:
            measured[name] = 0.0
    new_ratio = sum(measured.values()) / len(measured) / target_average
    reversed_direction = (ratio < 1.0 < new_ratio) or (new_ratio < 1.0 < ratio)
    if _within_tolerance(new_ratio, tolerance) or reversed_direction:
        return current_replicas
    proposal = math.ceil(new_ratio * len(measured))
    if (new_ratio < 1.0 and proposal > current_replicas) or (
        new_ratio > 1.0 and proposal < current_replicas
    ):
        return current_replicas
    return proposal


def object_value_proposal(
    current_replicas: int,
    ready_pods: int,
    value: int,
    target: int,
    *,
    tolerance: float = TOLERANCE,
) -> int:
    """Replicas proposed by an `Object` (or `External`) metric with a `Value` target."""
    if target <= 0:
        raise ValueError(f"target value {target} must be positive")
    ratio = value / target
    if current_replicas == 0:
        return math.ceil(ratio)
    if _within_tolerance(ratio, tolerance):
        return current_replicas
    return math.ceil(ratio * ready_pods)


def object_average_proposal(
    current_replicas: int, value: int, target_average: int, *, tolerance: float = TOLERANCE
) -> int:
    """Replicas proposed by an `Object` metric with an `AverageValue` target: the object's value
    shared over the replicas."""
    if target_average <= 0:
        raise ValueError(f"target average {target_average} must be positive")
    if current_replicas > 0 and _within_tolerance(
        value / (target_average * current_replicas), tolerance
    ):
        return current_replicas
    return math.ceil(value / target_average)


def combine_proposals(current_replicas: int, proposals: Sequence[int | None]) -> int | None:
    """The largest proposal of several metrics; `None` entries are metrics that could not be
    read. With no readable metric, or with a failed one while the others would scale down,
    there is no proposal (scaling down on partial information could remove needed replicas)."""
    readable = [p for p in proposals if p is not None]
    if not readable:
        return None
    best = max(readable)
    if len(readable) < len(proposals) and best < current_replicas:
        return None
    return best


def _changed_within(events: Iterable[ScaleEvent], period_seconds: int, now: float) -> int:
    cutoff = now - period_seconds
    return sum(e.change for e in events if e.time > cutoff)


def _period_start(current_replicas: int, history: History, period_seconds: int, now: float) -> int:
    added = _changed_within(history.scale_up_events, period_seconds, now)
    removed = _changed_within(history.scale_down_events, period_seconds, now)
    return current_replicas - added + removed


def scale_up_limit(current_replicas: int, rules: ScalingRules, history: History, now: float) -> int:
    """The most replicas the scale-up policies allow now (`current_replicas` when disabled)."""
    if rules.select_policy is SelectPolicy.DISABLED or not rules.policies:
        return current_replicas
    limits = []
    for policy in rules.policies:
        start = _period_start(current_replicas, history, policy.period_seconds, now)
        if policy.type is PolicyType.PODS:
            limits.append(start + policy.value)
        else:
            limits.append(math.ceil(start * (1 + policy.value / 100)))
    limit = min(limits) if rules.select_policy is SelectPolicy.MIN else max(limits)
    return max(limit, current_replicas)


def scale_down_limit(
    current_replicas: int, rules: ScalingRules, history: History, now: float
) -> int:
    """The fewest replicas the scale-down policies allow now (`current_replicas` when
    disabled). `Max` selects the policy allowing the largest change, the lowest count."""
    if rules.select_policy is SelectPolicy.DISABLED or not rules.policies:
        return current_replicas
    limits = []
    for policy in rules.policies:
        start = _period_start(current_replicas, history, policy.period_seconds, now)
        if policy.type is PolicyType.PODS:
            limits.append(start - policy.value)
        else:
            limits.append(int(start * (1 - policy.value / 100)))
    limit = max(limits) if rules.select_policy is SelectPolicy.MIN else min(limits)
    return min(limit, current_replicas)


def stabilize(
    current_replicas: int,
    proposal: int,
    history: History,
    now: float,
    *,
    scale_up: ScalingRules,
    scale_down: ScalingRules,
) -> int:
    """The proposal after the stabilization windows, recorded in `history`: a scale-down goes
    no lower than the highest recommendation of the scale-down window, a scale-up no higher
    than the lowest of the scale-up window."""
    up_cutoff = now - scale_up.stabilization_window_seconds
    down_cutoff = now - scale_down.stabilization_window_seconds
    lowest = highest = proposal
    for rec in history.recommendations:
        if rec.time > up_cutoff:
            lowest = min(lowest, rec.replicas)
        if rec.time > down_cutoff:
            highest = max(highest, rec.replicas)
    longest = max(scale_up.stabilization_window_seconds, scale_down.stabilization_window_seconds)
    history.recommendations = [r for r in history.recommendations if r.time > now - longest]
    history.recommendations.append(Recommendation(now, proposal))
    return min(max(current_replicas, lowest), highest)


@dataclass(frozen=True)
class Decision:
    """What one sync decided: the replicas to set and why they may differ from the proposal."""

    replicas: int
    reason: str  # the ScalingLimited condition's reason
    message: str

    @property
    def limited(self) -> bool:
        return self.reason != "DesiredWithinRange"


def apply_limits(
    current_replicas: int,
    desired: int,
    history: History,
    now: float,
    *,
    min_replicas: int,
    max_replicas: int,
    scale_up: ScalingRules,
    scale_down: ScalingRules,
) -> Decision:
    """The stabilized `desired` bounded by the behaviour's rates and min/max."""
    if desired > current_replicas:
        rate_limit = scale_up_limit(current_replicas, scale_up, history, now)
        if max_replicas > rate_limit:
            ceiling, reason, why = (
                rate_limit,
                "ScaleUpLimit",
                "increasing faster than the maximum scale rate",
            )
        else:
            ceiling, reason, why = (
                max_replicas,
                "TooManyReplicas",
                "more than the maximum replica count",
            )
        if desired > ceiling:
            return Decision(ceiling, reason, f"the desired replica count is {why}")
    elif desired < current_replicas:
        rate_limit = scale_down_limit(current_replicas, scale_down, history, now)
        if min_replicas < rate_limit:
            floor, reason, why = (
                rate_limit,
                "ScaleDownLimit",
                "decreasing faster than the maximum scale rate",
            )
        else:
            floor, reason, why = (
                min_replicas,
                "TooFewReplicas",
                "less than the minimum replica count",
            )
        if desired < floor:
            return Decision(floor, reason, f"the desired replica count is {why}")
    return Decision(
        desired, "DesiredWithinRange", "the desired count is within the acceptable range"
    )


def normalize(
    current_replicas: int,
    proposal: int,
    history: History,
    now: float,
    *,
    min_replicas: int,
    max_replicas: int,
    scale_up: ScalingRules = DEFAULT_SCALE_UP,
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN,
) -> Decision:
    """From a metrics proposal to the replicas to set: stabilization, then rates and bounds."""
    stabilized = stabilize(
        current_replicas, proposal, history, now, scale_up=scale_up, scale_down=scale_down
    )
    return apply_limits(
        current_replicas,
        stabilized,
        history,
        now,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        scale_up=scale_up,
        scale_down=scale_down,
    )


def event_keep_seconds(scale_up: ScalingRules, scale_down: ScalingRules) -> int:
    """How long scale events matter: the longest policy period of either direction."""
    periods = [p.period_seconds for p in (*scale_up.policies, *scale_down.policies)]
    return max(periods, default=0)
