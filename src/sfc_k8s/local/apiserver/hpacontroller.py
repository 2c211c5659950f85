"""The local cluster's HorizontalPodAutoscaler controller (kube-controller-manager's HPA loop).

`APIServer` runs `HPAController.run()` next to its other controllers; tests run it with a short
period. Every `sync_period` seconds it lists the `autoscaling/v2` HPAs and, for each, reads the
scale target through its `scale` subresource, lists the target's pods, asks a `MetricsSource`
for the metrics, lets the pure algorithm (`hpa.py`) decide, writes the target's replicas through
the `scale` subresource and the HPA's status (replicas, current metrics, conditions). It talks
to the API server over HTTP like any other client, so what it does is what `kubectl` sees.

`CustomMetricsSource` reads `Pods` and `Object` metrics from the custom metrics API
(`custom.metrics.k8s.io/v1beta2`) at a base URL, by default the API server's own (where the
sfc-k8s metrics provider will be registered as an APIService).
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sfc_k8s.api.conditions import is_ready
from sfc_k8s.api.timestamps import now_rfc3339
from sfc_k8s.local.apiserver.hpa import (
    History,
    PodState,
    apply_limits,
    combine_proposals,
    event_keep_seconds,
    object_average_proposal,
    object_value_proposal,
    pods_proposal,
    stabilize,
)
from sfc_k8s.local.apiserver.hpaspec import HPASpec, MetricTarget, read_spec
from sfc_k8s.local.apiserver.quantity import QuantityError, format_milli, parse_milli
from sfc_k8s.local.kube import ApiError, Connection, KubeClient, KubeError

logger = logging.getLogger(__name__)

DEFAULT_SYNC_PERIOD = 15.0  # kube-controller-manager's --horizontal-pod-autoscaler-sync-period
CUSTOM_METRICS = "/apis/custom.metrics.k8s.io/v1beta2"
HPA_LIST = "/apis/autoscaling/v2/horizontalpodautoscalers"
# The scale targets this server serves with a `scale` subresource: kind -> (API path, plural).
SCALABLE = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "ReplicaSet": ("/apis/apps/v1", "replicasets"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
}
JsonObj = dict[str, Any]


class MetricsError(Exception):
    """A metric could not be read (API not served, metric unknown, no value)."""


class MetricsSource(Protocol):
    """Where the HPA controller reads custom metrics (values in thousandths)."""

    async def pod_metrics(
        self, namespace: str, metric: str, pod_selector: str, metric_selector: str
    ) -> dict[str, int]:
        """Each selected pod's value of `metric`, by pod name."""
        ...

    async def object_metric(
        self, namespace: str, described: Mapping[str, Any], metric: str, metric_selector: str
    ) -> int:
        """The value of `metric` for one object."""
        ...

    async def close(self) -> None: ...


def _plural(kind: str) -> str:
    lower = kind.lower()
    return lower + "es" if lower.endswith("s") else lower + "s"


def _selector_text(selector: Mapping[str, Any] | None) -> str:
    """A label selector object as the `labelSelector` query form (matchLabels only)."""
    labels = (selector or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


class CustomMetricsSource:
    """`MetricsSource` over the custom metrics API at `base_url` (a URL, or a `Connection`
    with the credentials the server wants)."""

    def __init__(self, base_url: str | Connection) -> None:
        conn = base_url if isinstance(base_url, Connection) else Connection(server=base_url)
        self.base_url = conn.server.rstrip("/")
        self._kube = KubeClient(conn)

    async def _get(self, path: str, params: Mapping[str, str]) -> JsonObj:
        try:
            return await self._kube.get(path, **{k: v for k, v in params.items() if v})
        except KubeError as err:
            raise MetricsError(f"unable to fetch metrics from custom metrics API: {err}") from err

    async def pod_metrics(
        self, namespace: str, metric: str, pod_selector: str, metric_selector: str
    ) -> dict[str, int]:
        path = f"{CUSTOM_METRICS}/namespaces/{namespace}/pods/*/{urllib.parse.quote(metric)}"
        body = await self._get(
            path, {"labelSelector": pod_selector, "metricLabelSelector": metric_selector}
        )
        values: dict[str, int] = {}
        for item in body.get("items") or []:
            name = (item.get("describedObject") or {}).get("name")
            if name:
                values[name] = _value_of(item, metric)
        if not values:
            raise MetricsError(f"no metrics returned from custom metrics API for {metric!r}")
        return values

    async def object_metric(
        self, namespace: str, described: Mapping[str, Any], metric: str, metric_selector: str
    ) -> int:
        plural = _plural(str(described.get("kind", "")))
        name = urllib.parse.quote(str(described.get("name", "")))
        path = f"{CUSTOM_METRICS}/namespaces/{namespace}/{plural}/{name}/{metric}"
        body = await self._get(path, {"metricLabelSelector": metric_selector})
        items = body.get("items") if body.get("kind") == "MetricValueList" else [body]
        if not items:
            raise MetricsError(f"no metrics returned from custom metrics API for {metric!r}")
        return _value_of(items[0], metric)

    async def close(self) -> None:
        await self._kube.close()


def _value_of(item: Mapping[str, Any], metric: str) -> int:
    try:
        return parse_milli(item.get("value", ""))
    except QuantityError as err:
        raise MetricsError(f"metric {metric!r}: {err}") from err


# ----- status ------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    """What one sync found, to be written as the HPA's status."""

    current: int
    desired: int
    metrics: list[JsonObj] = field(default_factory=list)
    conditions: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # type -> s, r, m
    scaled: bool = False
    cause: str = ""  # what drove the proposal, for the SuccessfulRescale event

    def rescale_reason(self) -> str:
        """The `reason:` part of kube-controller-manager's SuccessfulRescale message."""
        if self.cause.startswith("Current number"):
            return self.cause
        if self.desired > self.current:
            return f"{self.cause} above target"
        return "All metrics below target"

    def set(self, kind: str, status: bool, reason: str, message: str) -> None:
        self.conditions[kind] = ("True" if status else "False", reason, message)


def _conditions(outcome: _Outcome, previous: list[JsonObj]) -> list[JsonObj]:
    """Conditions in Kubernetes' order; a transition time moves only when the status does."""
    before = {c.get("type"): c for c in previous}
    result = []
    for kind in ("AbleToScale", "ScalingActive", "ScalingLimited"):
        if kind not in outcome.conditions:
            continue
        status, reason, message = outcome.conditions[kind]
        old = before.get(kind) or {}
        since = old.get("lastTransitionTime") if old.get("status") == status else None
        result.append(
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": since or now_rfc3339(),
            }
        )
    return result


def _pod_state(pod: Mapping[str, Any]) -> PodState:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    phase = status.get("phase")
    ready = is_ready(pod)
    return PodState(
        name=meta.get("name", ""),
        ready=ready and phase == "Running",
        ignored=bool(meta.get("deletionTimestamp")) or phase == "Failed",
    )


def _metric_status(metric: MetricTarget, current: JsonObj) -> JsonObj:
    inner: JsonObj = {"name": metric.name}
    if metric.selector:
        inner["selector"] = metric.selector
    if metric.type == "Pods":
        return {"type": "Pods", "pods": {"metric": inner, "current": current}}
    return {
        "type": "Object",
        "object": {"metric": inner, "describedObject": metric.described, "current": current},
    }


_FAILED_REASON = {
    "Pods": "FailedGetPodsMetric",
    "Object": "FailedGetObjectMetric",
    "Resource": "FailedGetResourceMetric",
    "ContainerResource": "FailedGetContainerResourceMetric",
    "External": "FailedGetExternalMetric",
}


def _outside_bounds(current: int, spec: HPASpec, outcome: _Outcome) -> int | None:
    """min/max when the target is outside them: brought back without reading any metric."""
    if current > spec.max_replicas:
        outcome.set(
            "ScalingLimited",
            True,
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
        )
        outcome.cause = "Current number of replicas above Spec.MaxReplicas"
        return spec.max_replicas
    if current < spec.min_replicas:
        outcome.set(
            "ScalingLimited",
            True,
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
        )
        outcome.cause = "Current number of replicas below Spec.MinReplicas"
        return spec.min_replicas
    return None


# ----- the loop ----------------------------------------------------------------------------------


class HPAController:
    """Reconciles every HPA of the API server at `api_url` (a URL, or a `Connection` with
    credentials) once per `sync_period`."""

    def __init__(
        self,
        api_url: str | Connection,
        *,
        metrics: MetricsSource | None = None,
        sync_period: float = DEFAULT_SYNC_PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        conn = api_url if isinstance(api_url, Connection) else Connection(server=api_url)
        self.api = KubeClient(conn)
        self.metrics: MetricsSource = metrics or CustomMetricsSource(conn)
        self.sync_period = sync_period
        self.clock = clock
        self.histories: dict[str, History] = {}  # by HPA uid

    async def run(self) -> None:
        """Sync forever (until cancelled)."""
        try:
            while True:
                await self.sync_all()
                await asyncio.sleep(self.sync_period)
        finally:
            await self.api.close()
            await self.metrics.close()

    async def sync_all(self) -> None:
        try:
            listed = await self.api.get(HPA_LIST)
        except KubeError as err:
            logger.warning("HPA controller: cannot list HPAs: %s", err)
            return
        seen = set()
        for hpa in listed.get("items") or []:
            uid = (hpa.get("metadata") or {}).get("uid", "")
            seen.add(uid)
            try:
                await self.sync_one(hpa, self.histories.setdefault(uid, History()))
            except KubeError as err:  # the next period tries again, as kube-controller-manager
                logger.warning("HPA controller: sync of %s failed: %s", uid, err)
        for uid in set(self.histories) - seen:
            del self.histories[uid]

    async def sync_one(self, hpa: JsonObj, history: History) -> None:
        """One reconciliation of one HPA."""
        meta = hpa["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        spec = read_spec(hpa)
        outcome = await self._reconcile(namespace, spec, history)
        if outcome.scaled:
            await self._post_rescale_event(hpa, outcome)
        status: JsonObj = {
            "observedGeneration": meta.get("generation", 1),
            "currentReplicas": outcome.current,
            "desiredReplicas": outcome.desired,
            "currentMetrics": outcome.metrics or None,
            "conditions": _conditions(outcome, (hpa.get("status") or {}).get("conditions") or []),
        }
        last = (hpa.get("status") or {}).get("lastScaleTime")
        status["lastScaleTime"] = now_rfc3339() if outcome.scaled else last
        path = f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}"
        await self.api.patch(f"{path}/status", {"status": status})

    async def _post_rescale_event(self, hpa: JsonObj, outcome: _Outcome) -> None:
        """A `SuccessfulRescale` event on the HPA, as `kubectl describe hpa` shows them."""
        meta = hpa["metadata"]
        now = now_rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
            },
            "type": "Normal",
            "reason": "SuccessfulRescale",
            "message": f"New size: {outcome.desired}; reason: {outcome.rescale_reason()}",
            "source": {"component": "horizontal-pod-autoscaler"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.api.create(f"/api/v1/namespaces/{meta['namespace']}/events", event)
        except KubeError as err:  # an event is a courtesy: the rescale itself is done
            logger.warning("HPA controller: cannot post an event: %s", err)

    def _scale_path(self, namespace: str, spec: HPASpec) -> str:
        prefix, plural = SCALABLE.get(spec.target_kind, ("", _plural(spec.target_kind)))
        if not prefix:
            prefix = f"/apis/{spec.target_api_version}"
        return f"{prefix}/namespaces/{namespace}/{plural}/{spec.target_name}/scale"

    async def _reconcile(self, namespace: str, spec: HPASpec, history: History) -> _Outcome:
        scale_path = self._scale_path(namespace, spec)
        try:
            scale = await self.api.get(scale_path)
        except ApiError as err:
            outcome = _Outcome(current=0, desired=0)
            outcome.set(
                "AbleToScale",
                False,
                "FailedGetScale",
                f"the HPA controller was unable to get the target's current scale: {err.message}",
            )
            return outcome
        current = int((scale.get("spec") or {}).get("replicas", 0))
        outcome = _Outcome(current=current, desired=current)
        outcome.set(
            "AbleToScale",
            True,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
        )
        desired = await self._desired(namespace, spec, scale, history, outcome)
        if desired is None or desired == current:
            return outcome
        try:
            await self.api.patch(scale_path, {"spec": {"replicas": desired}})
        except ApiError as err:
            outcome.set(
                "AbleToScale",
                False,
                "FailedUpdateScale",
                f"the HPA controller was unable to update the target scale: {err.message}",
            )
            return outcome
        keep = event_keep_seconds(spec.scale_up, spec.scale_down)
        history.record_scale(current, desired, self.clock(), keep_seconds=keep)
        outcome.desired, outcome.scaled = desired, True
        outcome.set(
            "AbleToScale",
            True,
            "SucceededRescale",
            f"the HPA controller was able to update the target scale to {desired}",
        )
        return outcome

    async def _desired(
        self, namespace: str, spec: HPASpec, scale: JsonObj, history: History, outcome: _Outcome
    ) -> int | None:
        """The replicas to set, or None to leave the target alone."""
        current = outcome.current
        if current == 0 and spec.min_replicas != 0:
            outcome.set(
                "ScalingActive",
                False,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
            )
            return None
        bounded = _outside_bounds(current, spec, outcome)
        if bounded is not None:
            return bounded
        proposal = await self._proposal(namespace, spec, scale, outcome)
        if proposal is None:
            return None
        now = self.clock()
        stabilized = stabilize(
            current, proposal, history, now, scale_up=spec.scale_up, scale_down=spec.scale_down
        )
        if stabilized != proposal:
            direction = "higher" if stabilized > proposal else "lower"
            outcome.set(
                "AbleToScale",
                True,
                "ScaleDownStabilized" if direction == "higher" else "ScaleUpStabilized",
                f"recent recommendations were {direction} than current one, applying the "
                f"{'highest' if direction == 'higher' else 'lowest'} recent recommendation",
            )
        else:
            outcome.set(
                "AbleToScale", True, "ReadyForNewScale", "recommended size matches current size"
            )
        decision = apply_limits(
            current,
            stabilized,
            history,
            now,
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            scale_up=spec.scale_up,
            scale_down=spec.scale_down,
        )
        outcome.set("ScalingLimited", decision.limited, decision.reason, decision.message)
        outcome.desired = decision.replicas
        return decision.replicas

    async def _proposal(
        self, namespace: str, spec: HPASpec, scale: JsonObj, outcome: _Outcome
    ) -> int | None:
        """The largest of the metrics' proposals; ScalingActive says whether there is one."""
        selector = str((scale.get("status") or {}).get("selector", ""))
        if not selector:  # an empty selector would take every pod of the namespace
            outcome.set(
                "ScalingActive",
                False,
                "InvalidSelector",
                "the HPA target's scale is missing a selector",
            )
            return None
        listed = await self.api.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)
        pods = [_pod_state(p) for p in listed.get("items") or []]
        proposals: list[int | None] = []
        failure: tuple[str, str] | None = None
        for metric in spec.metrics:
            try:
                proposal, current = await self._one_metric(
                    namespace, metric, selector, pods, outcome
                )
            except (MetricsError, ValueError) as err:
                proposals.append(None)
                failure = failure or (
                    _FAILED_REASON.get(metric.type, "FailedGetPodsMetric"),
                    f"the HPA was unable to compute the replica count: unable to get metric "
                    f"{metric.name}: {err}",
                )
                # an empty entry keeps currentMetrics[i] aligned with spec.metrics[i], which
                # is how kubectl pairs them (kube-controller-manager leaves the same hole)
                outcome.metrics.append({"type": ""})
                continue
            proposals.append(proposal)
            outcome.metrics.append(_metric_status(metric, current))
        best = combine_proposals(outcome.current, proposals)
        if best is None:
            reason, message = failure or ("InvalidMetricSourceType", "no metric could be used")
            outcome.set("ScalingActive", False, reason, message)
            return None
        used = next(m for m, p in zip(spec.metrics, proposals, strict=True) if p == best)
        outcome.cause = f"{used.type.lower()} metric {used.name}"
        outcome.set(
            "ScalingActive",
            True,
            "ValidMetricFound",
            f"the HPA was able to successfully calculate a replica count from "
            f"{used.type.lower()} metric {used.name}",
        )
        return best

    async def _one_metric(
        self,
        namespace: str,
        metric: MetricTarget,
        selector: str,
        pods: list[PodState],
        outcome: _Outcome,
    ) -> tuple[int, JsonObj]:
        metric_selector = _selector_text(metric.selector)
        if metric.type == "Pods":
            values = await self.metrics.pod_metrics(
                namespace, metric.name, selector, metric_selector
            )
            proposal = pods_proposal(outcome.current, pods, values, metric.target)
            ready = [values[p.name] for p in pods if p.ready and not p.ignored and p.name in values]
            average = sum(ready) // len(ready) if ready else 0
            return proposal, {"averageValue": format_milli(average)}
        if metric.type == "Object" and metric.described is not None:
            value = await self.metrics.object_metric(
                namespace, metric.described, metric.name, metric_selector
            )
            if metric.target_type == "Value":
                ready_count = sum(1 for p in pods if p.ready and not p.ignored)
                proposal = object_value_proposal(outcome.current, ready_count, value, metric.target)
                return proposal, {"value": format_milli(value)}
            proposal = object_average_proposal(outcome.current, value, metric.target)
            return proposal, {"averageValue": format_milli(value // max(outcome.current, 1))}
        raise MetricsError(
            f"metric type {metric.type!r} is not served on the local cluster (only Pods and "
            "Object metrics from the custom metrics API)"
        )
