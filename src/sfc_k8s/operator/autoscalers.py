"""The controller's HorizontalPodAutoscalers: one per chain function with ``autoscaling``.

Called by ``sfc_k8s.operator.controller.Controller`` at the end of each chain reconcile with the
chain, its pods and the HPAs its index holds (those labelled with the chain); decisions are
``sfc_k8s.api.autoscaling``'s. For each function with an ``autoscaling`` block: find its
workload (named, or from its pods' controller owners; a ReplicaSet's Deployment read once and
remembered), render the HPA, create it or replace it when it differs (the HPA's own status and
``spec.replicas`` of the workload are never touched), and report it in the function's status.
HPAs of the chain whose function lost its block (or left the chain) are deleted. The chain is
the HPAs' controlling owner, so deleting the chain deletes them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sfc_k8s.api.autoscaling import FUNCTION_LABEL, hpa_name, hpa_status, render_hpa, workload_of
from sfc_k8s.api.models import ChainSpec, PodInfo
from sfc_k8s.api.pods import functions_of
from sfc_k8s.api.types import ChainStatusBody
from sfc_k8s.operator.kube import ApiError, KubeClient, object_path

log = logging.getLogger("sfc_k8s.controller")

HPA_RESOURCE = ("autoscaling", "v2", "horizontalpodautoscalers")


def _differs(desired: Mapping[str, Any], stored: Mapping[str, Any], stored_as: Any) -> bool:
    """Whether the stored HPA lacks what the controller renders: its spec (as the server
    stored it after the controller's last write of this same rendering: admission defaults
    and canonical quantities change it), labels or owner."""
    want, have = desired["metadata"], stored.get("metadata") or {}
    labels = have.get("labels") or {}
    spec = stored.get("spec")
    return (
        (spec != desired["spec"] and spec != stored_as)
        or any(labels.get(k) != v for k, v in want["labels"].items())
        or have.get("ownerReferences") != want["ownerReferences"]
    )


class Autoscalers:
    """Creates, replaces and deletes the chain functions' HPAs."""

    def __init__(self, client: KubeClient) -> None:
        self._client = client
        self._deployment_of: dict[tuple[str, str], str] = {}  # (ns, ReplicaSet) -> Deployment
        # (ns, HPA) -> (spec rendered, spec the server stored from it) at the last write
        self._written: dict[tuple[str, str], tuple[Any, Any]] = {}

    async def apply(
        self,
        chain: ChainSpec,
        pods: Iterable[PodInfo],
        stored: Mapping[str, Mapping[str, Any]],
        status: ChainStatusBody,
    ) -> None:
        """Bring the chain's HPAs to its spec (``stored``: by name, as indexed) and add each
        function's view of its HPA to ``status``."""
        owners: dict[str, list[tuple[str, str]]] = {}
        for pod in pods:
            if not pod.terminating:
                for fn in functions_of(chain, pod):
                    owners.setdefault(fn.name, []).append(pod.owner)
        wanted = set()
        for fn in chain.functions:
            if fn.autoscaling is None:
                continue
            name = hpa_name(chain, fn)
            wanted.add(name)
            found = owners.get(fn.name, [])
            deployments = await self._deployments(chain.namespace, found)
            workload, problem = workload_of(fn, found, deployments)
            current = stored.get(name)
            if workload is not None:
                current = await self._ensure(
                    render_hpa(chain, fn, fn.autoscaling, workload), current
                )
            entry = status.setdefault("functions", {}).setdefault(fn.name, {})
            entry["autoscaling"] = hpa_status(current, name, problem)
        for name, hpa in sorted(stored.items()):
            labels = (hpa.get("metadata") or {}).get("labels") or {}
            if name not in wanted and labels.get(FUNCTION_LABEL):
                await self._delete(chain.namespace, name)

    async def _deployments(
        self, namespace: str, owners: Iterable[tuple[str, str]]
    ) -> dict[str, str]:
        """ReplicaSet name -> its controlling Deployment, for the ReplicaSets among ``owners``."""
        result = {}
        for kind, name in set(owners):
            if kind != "ReplicaSet":
                continue
            key = (namespace, name)
            if key not in self._deployment_of:
                path = object_path("apps", "v1", "replicasets", namespace, name=name)
                try:
                    body = await self._client.get(path)
                except ApiError as err:
                    if err.status == 404:
                        continue
                    raise
                refs = (body.get("metadata") or {}).get("ownerReferences") or []
                owner: Mapping[str, Any] = next((r for r in refs if r.get("controller")), {})
                if owner.get("kind") != "Deployment":
                    continue
                self._deployment_of[key] = str(owner.get("name"))
            result[name] = self._deployment_of[key]
        return result

    async def _ensure(
        self, desired: dict[str, Any], current: Mapping[str, Any] | None
    ) -> Mapping[str, Any]:
        meta = desired["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        rendered, stored_as = self._written.get((namespace, name), (None, None))
        if current is None:
            try:
                created = await self._client.create(object_path(*HPA_RESOURCE, namespace), desired)
            except ApiError as err:
                if err.status != 409:  # 409: created by an earlier pass, not indexed yet
                    raise
                return await self._client.get(object_path(*HPA_RESOURCE, namespace, name=name))
            self._written[(namespace, name)] = (desired["spec"], created.get("spec"))
            log.info("created HPA", extra={"hpa": f"{namespace}/{name}"})
            return created
        if not _differs(desired, current, stored_as if rendered == desired["spec"] else None):
            return current
        have = current.get("metadata") or {}
        body = {
            **desired,
            "metadata": {
                **meta,
                "labels": {**(have.get("labels") or {}), **meta["labels"]},
                "resourceVersion": have.get("resourceVersion"),
            },
        }
        path = object_path(*HPA_RESOURCE, namespace, name=name)
        replaced = await self._client.request("PUT", path, body=body)
        self._written[(namespace, name)] = (desired["spec"], replaced.get("spec"))
        log.info("updated HPA", extra={"hpa": f"{namespace}/{name}"})
        return replaced

    async def _delete(self, namespace: str, name: str) -> None:
        try:
            await self._client.delete(object_path(*HPA_RESOURCE, namespace, name=name))
        except ApiError as err:
            if err.status != 404:
                raise
        log.info("deleted HPA", extra={"hpa": f"{namespace}/{name}"})
