"""The control loops that run inside the local API server: scheduler, Deployments, DaemonSets, GC.

What kube-scheduler, kube-controller-manager (Deployment, garbage collector, namespace and pod
GC controllers) do in a real cluster, reduced to what the local cluster needs. They run on the
server's event loop, wake up on every relevant store change (plus a slow periodic tick), and
compute the whole desired state in one pass: cheap at the scale of a development cluster. The
passes that go through every pod (Deployments, DaemonSets, scheduler) run only after a change of
a pod, node, Deployment or DaemonSet (and on the tick): the writes of custom objects
(chains, CrossConnections) and Events, most of a busy cluster's writes, must not cost a pass over
thousands of pods each.
Deployments own their Pods directly (no ReplicaSets); DaemonSets are in ``daemonsets.py``; see
docs/local-cluster.md.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import hashlib
import json
import logging
from typing import Any

from sfc_k8s.api.conditions import is_ready
from sfc_k8s.api.timestamps import format_rfc3339, now_rfc3339, parse_rfc3339
from sfc_k8s.local.apiserver.daemonsets import DaemonSetController
from sfc_k8s.local.apiserver.errors import StatusError
from sfc_k8s.local.apiserver.nodelifecycle import (
    DEFAULT_EVICTION_SECONDS,
    DEFAULT_GRACE_SECONDS,
    LIFECYCLE_TAINTS,
    desired_taints,
    due_for_eviction,
    is_lost,
    not_ready_status,
)
from sfc_k8s.local.apiserver.resources import ResourceType
from sfc_k8s.local.apiserver.rootca import RootCAPublisher
from sfc_k8s.local.apiserver.scheduling import NodeLoad, choose_node, owner_uid
from sfc_k8s.local.apiserver.store import Event, Obj, Store, meta

logger = logging.getLogger(__name__)

PODS = ("", "pods")
NODES = ("", "nodes")
NAMESPACES = ("", "namespaces")
DEPLOYMENTS = ("apps", "deployments")
TEMPLATE_HASH_LABEL = "pod-template-hash"
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
TICK_SECONDS = 2.0
DAEMONSETS = ("apps", "daemonsets")
# The resources whose changes the pod-wide passes (Deployments, DaemonSets, scheduler) read.
WORKLOAD_KEYS = frozenset({("", "pods"), ("", "nodes"), ("apps", "deployments"), DAEMONSETS})
SWEEP_SECONDS = 60.0
EVENTS = ("", "events")
LEASES = ("coordination.k8s.io", "leases")
LEASE_NAMESPACE = "kube-node-lease"
# How long a terminating namespace keeps its contents before the namespace controller deletes
# them (a real one takes a few seconds to discover and delete every resource type), so that
# `kubectl delete -f DIR/` with the namespace first still finds the objects it deletes next.
# deletionTimestamp has whole seconds, so the wait is between this and one second less.
NAMESPACE_CONTENT_DELAY = 3.0


def _key(obj: Obj) -> str:
    return f"{meta(obj).get('namespace')}/{meta(obj)['name']}"


def contents_due(namespace: Obj, now: datetime.datetime) -> bool:
    """Whether a namespace has been terminating ``NAMESPACE_CONTENT_DELAY`` and its contents
    are to be deleted now."""
    since = parse_rfc3339(meta(namespace).get("deletionTimestamp"))
    return since is not None and (now - since).total_seconds() >= NAMESPACE_CONTENT_DELAY


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def template_hash(template: Any) -> str:
    """A short, stable, name-safe hash of a pod template (the `pod-template-hash` label)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_HASH_ALPHABET[b % len(_HASH_ALPHABET)] for b in digest[:10])


def _unschedulable_message(pod: Obj) -> str | None:
    """The message of the pod's ``PodScheduled=False, Unschedulable`` condition, if it has one."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable":
            return str(c.get("message", ""))
    return None


class Controllers:
    """All in-process controllers; `run()` is the task the server starts."""

    def __init__(
        self,
        store: Store,
        *,
        node_grace: float = DEFAULT_GRACE_SECONDS,
        eviction_timeout: float = DEFAULT_EVICTION_SECONDS,
        root_ca: str | None = None,
    ) -> None:
        """``root_ca``: the cluster CA (PEM) to publish as ``kube-root-ca.crt``, if it has one;
        ``node_grace``: seconds without heartbeat before a node is ``Ready=Unknown``;
        ``eviction_timeout``: seconds after that before its pods are evicted (unless their
        tolerations say otherwise)."""
        self.store = store
        self.node_grace = node_grace
        self.eviction_timeout = eviction_timeout
        self._wake = asyncio.Event()
        # Work for the garbage collector, gathered from the change stream so that a pass
        # looks at what changed rather than at every object.
        self._gc_objects: set[tuple[tuple[str, str], str, str]] = set()
        self._gc_owners: set[str] = set()
        self._gc_foreground: set[str] = set()
        self._gc_pods = True
        self._workloads_changed = True
        # Pods waiting for a node, as the change stream shows them (None: not known yet, the
        # scheduler's next pass finds them); no pending pod, no scheduling pass.
        self._pending: set[tuple[str, str]] | None = None
        self._sweep_at = 0.0
        self.daemonsets = DaemonSetController(store, template_hash)
        self.root_ca = RootCAPublisher(store, root_ca) if root_ca else None
        store.listeners.append(self._on_event)

    def _on_event(self, key: tuple[str, str], event: Event) -> None:
        md = meta(event.obj)
        refs = md.get("ownerReferences") or []
        if event.type == "DELETED":
            self._gc_owners.add(str(md.get("uid")))
            self._gc_foreground.update(str(r.get("uid")) for r in refs)
        elif refs:
            self._gc_objects.add((key, md.get("namespace", ""), md.get("name", "")))
        if md.get("deletionTimestamp") and "foregroundDeletion" in (md.get("finalizers") or []):
            self._gc_owners.add(str(md.get("uid")))
            self._gc_foreground.add(str(md.get("uid")))
        if key == NODES or (key == PODS and md.get("deletionTimestamp")):
            self._gc_pods = True
        if key in WORKLOAD_KEYS:
            self._workloads_changed = True
        if key == PODS and self._pending is not None:
            name = (md.get("namespace", ""), md.get("name", ""))
            waiting = not (event.obj.get("spec") or {}).get("nodeName")
            if event.type != "DELETED" and waiting and not md.get("deletionTimestamp"):
                self._pending.add(name)
            else:
                self._pending.discard(name)
        if key == NODES:
            self._pending = None  # a node came or changed: the unschedulable may fit now
        self._wake.set()

    def _type(self, key: tuple[str, str]) -> ResourceType:
        rtype = self.store.registry.by_key(key)
        assert rtype is not None, key
        return rtype

    async def run(self) -> None:
        self._wake = asyncio.Event()  # bound to the loop this server (re)starts on
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
            # cancellation that stops the server if it arrives as a change wakes this loop.
            ticked = False
            try:
                async with asyncio.timeout(TICK_SECONDS):
                    await self._wake.wait()
            except TimeoutError:
                ticked = True
            self._wake.clear()
            # Let a burst of writes (a kubectl apply of many objects) land first.
            await asyncio.sleep(0.005)
            try:
                self.reconcile(workloads=ticked or self._workloads_changed)
            except Exception:  # a controller bug must not stop the API server
                logger.exception("controller pass failed")

    def reconcile(self, *, workloads: bool = True) -> None:
        """One pass of every controller; ``workloads``: with those that go through every pod."""
        if workloads:
            self._workloads_changed = False
        pod_wide = (self.sync_deployments, self.daemonsets.sync, self.schedule)
        for step in (
            self.monitor_nodes,
            self.collect_garbage,
            self.finish_namespaces,
            *(pod_wide if workloads else ()),
            *((self.root_ca.sync,) if self.root_ca else ()),
        ):
            try:
                step()
            except StatusError as err:
                logger.warning("controller %s: %s", step.__name__, err.message)

    # ----- garbage collection ----------------------------------------------------------------

    def _sweep(self) -> None:
        """Queue every object for the GC (at start, then every SWEEP_SECONDS as a safety net)."""
        for key, obj in self.store.all_objects():
            md = meta(obj)
            if md.get("ownerReferences"):
                self._gc_objects.add((key, md.get("namespace", ""), md.get("name", "")))
            if "foregroundDeletion" in (md.get("finalizers") or []):
                self._gc_foreground.add(str(md.get("uid")))
        self._gc_pods = True

    def collect_garbage(self) -> None:
        store = self.store
        now = asyncio.get_running_loop().time() if _loop_running() else 0.0
        if now >= self._sweep_at:
            self._sweep_at = now + SWEEP_SECONDS
            self._sweep()
        objects, owners, foreground = self._gc_objects, self._gc_owners, self._gc_foreground
        self._gc_objects, self._gc_owners, self._gc_foreground = set(), set(), set()
        for uid in owners:
            for key, dependent in store.dependents(uid):
                objects.add((key, meta(dependent).get("namespace", ""), meta(dependent)["name"]))
        for key, namespace, name in objects:
            found = store.find(key, namespace or None, name)
            if found is None or meta(found).get("deletionTimestamp"):
                continue
            obj = found
            owners_now = [
                store.by_uid(str(r.get("uid"))) for r in meta(obj).get("ownerReferences") or []
            ]
            if not owners_now:
                continue
            in_foreground = any(
                o is not None
                and meta(o).get("deletionTimestamp")
                and "foregroundDeletion" in (meta(o).get("finalizers") or [])
                for o in owners_now
            )
            if all(o is None for o in owners_now) or in_foreground:
                self._delete(key, obj)
        for uid in foreground:
            owner = store.by_uid(uid)
            if owner is None:
                continue
            md = meta(owner)
            finalizers = md.get("finalizers") or []
            if (
                md.get("deletionTimestamp")
                and "foregroundDeletion" in finalizers
                and not (store.dependents(uid))
            ):
                new = copy.deepcopy(owner)
                meta(new)["finalizers"] = [f for f in finalizers if f != "foregroundDeletion"]
                rtype = store.registry.by_key(store.key_of(uid))
                if rtype is not None:
                    store.update_internal(rtype, new)
        if self._gc_pods:
            self._gc_pods = False
            self._collect_pods()

    def _collect_pods(self) -> None:
        """Remove terminating pods that no running node will ever confirm."""
        store = self.store
        for pod in store.objects(PODS):
            md = meta(pod)
            if md.get("deletionTimestamp") and md.get("deletionGracePeriodSeconds"):
                node = store.find(NODES, None, (pod.get("spec") or {}).get("nodeName") or "")
                if node is None or not is_ready(node):
                    self._delete(PODS, pod, grace=0)

    def _delete(self, key: tuple[str, str], obj: Obj, *, grace: int | None = None) -> None:
        options: dict[str, Any] = {"propagationPolicy": "Background"}
        if grace is not None:
            options["gracePeriodSeconds"] = grace
        try:
            self.store.delete(
                self._type(key), meta(obj).get("namespace"), meta(obj)["name"], options
            )
        except StatusError as err:
            if err.code != 404:
                raise

    # ----- node lifecycle ---------------------------------------------------------------------

    def monitor_nodes(self) -> None:
        """As the node lifecycle controller: a node whose heartbeats (Ready condition, Lease)
        stopped for the grace period turns ``Ready=Unknown``; taints follow the Ready
        condition; pods on a lost node are evicted when their delay runs out
        (``nodelifecycle.py`` decides)."""
        now = datetime.datetime.now(datetime.UTC)
        for stored in self.store.objects(NODES):
            name = meta(stored)["name"]
            lease = self.store.find(LEASES, LEASE_NAMESPACE, name)
            node, new = stored, copy.deepcopy(stored)
            if is_lost(node, lease, now, self.node_grace):
                self._mark_unknown(new, now)
                logger.warning(
                    "node %s: no heartbeat for %.0fs: Ready=Unknown", name, self.node_grace
                )
            taints = desired_taints(new, now)
            if taints != ((new.get("spec") or {}).get("taints") or []):
                new.setdefault("spec", {})["taints"] = taints
                if not taints:
                    new["spec"].pop("taints")
            if new != node:
                node = self.store.update_internal(self._type(NODES), new)
                self._gc_pods = True
            if any(t.get("key") in LIFECYCLE_TAINTS for t in taints):
                self._evict_from(node, now)

    @staticmethod
    def _mark_unknown(node: Obj, now: datetime.datetime) -> None:
        for condition in node["status"]["conditions"]:
            if condition.get("type") == "Ready":
                condition.update(
                    status="Unknown",
                    reason="NodeStatusUnknown",
                    message="Kubelet stopped posting node status.",
                    lastTransitionTime=format_rfc3339(now),
                )

    def _evict_from(self, node: Obj, now: datetime.datetime) -> None:
        """Mark the pods of a lost node not Ready; evict those whose delay ran out."""
        name = meta(node)["name"]
        for stored in self.store.objects(PODS):
            if (stored.get("spec") or {}).get("nodeName") != name:
                continue
            if meta(stored).get("deletionTimestamp") or (stored.get("status") or {}).get(
                "phase"
            ) in ("Succeeded", "Failed"):
                continue
            pod = stored
            status = not_ready_status(stored, now)
            if status is not None:
                pod = self.store.update_internal(self._type(PODS), {**stored, "status": status})
            taint = due_for_eviction(pod, node, now, self.eviction_timeout)
            if taint is not None:
                logger.warning("node %s: evicting pod %s (%s)", name, _key(pod), taint.get("key"))
                self._event(pod, "TaintManagerEviction", f"Marking for deletion Pod {_key(pod)}")
                self._delete(PODS, pod)

    def _event(self, obj: Obj, reason: str, message: str) -> None:
        """A Normal event about ``obj`` from the controller manager."""
        md = meta(obj)
        namespace = md.get("namespace") or "default"
        ts = now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{md['name']}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "v1"),
                "kind": obj.get("kind", "Pod"),
                "name": md["name"],
                "namespace": namespace,
                "uid": md.get("uid"),
            },
            "reason": reason,
            "message": message,
            "type": "Normal",
            "count": 1,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "source": {"component": "taint-eviction-controller"},
            "reportingComponent": "taint-eviction-controller",
        }
        try:
            self.store.create(self._type(EVENTS), namespace, body)
        except StatusError as err:
            logger.warning("cannot post event %s: %s", reason, err.message)

    # ----- namespaces --------------------------------------------------------------------------

    def finish_namespaces(self) -> None:
        """Delete the contents of namespaces terminating for a while, then the namespaces."""
        store = self.store
        now = datetime.datetime.now(datetime.UTC)
        terminating = {
            meta(ns)["name"] for ns in store.objects(NAMESPACES) if contents_due(ns, now)
        }
        if not terminating:
            return
        for key, obj in list(store.all_objects()):
            md = meta(obj)
            if md.get("namespace") in terminating and not md.get("deletionTimestamp"):
                self._delete(key, obj)
        for name in terminating:
            store.remove_namespace_if_empty(name)

    # ----- deployments -------------------------------------------------------------------------

    def sync_deployments(self) -> None:
        store = self.store
        for deploy in store.objects(DEPLOYMENTS):
            if meta(deploy).get("deletionTimestamp"):
                continue
            self._sync_deployment(deploy, store.controlled(PODS, meta(deploy)["uid"]))

    def _sync_deployment(self, deploy: Obj, pods: list[Obj]) -> None:
        spec = deploy.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        template = spec.get("template") or {}
        current_hash = template_hash(template)
        # Like a ReplicaSet: terminating and finished (Succeeded/Failed) pods are not replicas.
        live = [
            p
            for p in pods
            if not meta(p).get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        current = [
            p
            for p in live
            if (meta(p).get("labels") or {}).get(TEMPLATE_HASH_LABEL) == current_hash
        ]
        old = [p for p in live if p not in current]
        if len(current) < desired:
            for _ in range(desired - len(current)):
                current.append(self._create_pod(deploy, template, current_hash))
        elif len(current) > desired:
            for pod in self._deletion_order(current)[: len(current) - desired]:
                self._delete(PODS, pod)
                current.remove(pod)
        ready_current = sum(1 for p in current if is_ready(p))
        keep_old = max(0, desired - ready_current)
        for pod in self._deletion_order(old)[: max(0, len(old) - keep_old)]:
            self._delete(PODS, pod)
            old.remove(pod)
        live = current + old
        ready = sum(1 for p in live if is_ready(p))
        status: dict[str, Any] = {"observedGeneration": meta(deploy).get("generation", 1)}
        for name, value in (
            ("replicas", len(live)),
            ("updatedReplicas", len(current)),
            ("readyReplicas", ready),
            ("availableReplicas", ready),
            ("unavailableReplicas", max(0, desired - ready)),
        ):
            if value:
                status[name] = value
        previous = {c.get("type"): c for c in (deploy.get("status") or {}).get("conditions", [])}
        available = "True" if ready >= desired else "False"
        condition = previous.get("Available")
        if condition is None or condition.get("status") != available:
            condition = {
                "type": "Available",
                "status": available,
                "reason": "MinimumReplicasAvailable"
                if available == "True"
                else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability."
                if available == "True"
                else "Deployment does not have minimum availability.",
                "lastTransitionTime": now_rfc3339(),
                "lastUpdateTime": now_rfc3339(),
            }
        status["conditions"] = [condition]
        if deploy.get("status") != status:
            new = copy.deepcopy(deploy)
            new["status"] = status
            self.store.update_internal(self._type(DEPLOYMENTS), new)

    @staticmethod
    def _deletion_order(pods: list[Obj]) -> list[Obj]:
        """Pods to remove first on scale-down: unscheduled, then not ready, then newest."""
        indexed = list(enumerate(pods))
        indexed.sort(
            key=lambda ip: (
                bool((ip[1].get("spec") or {}).get("nodeName")),
                is_ready(ip[1]),
                -ip[0],
            )
        )
        return [pod for _, pod in indexed]

    def _create_pod(self, deploy: Obj, template: dict[str, Any], pod_hash: str) -> Obj:
        md = meta(deploy)
        tmeta = template.get("metadata") or {}
        pod_meta: dict[str, Any] = {
            "generateName": f"{md['name']}-{pod_hash}-",
            "namespace": md.get("namespace", "default"),
            "labels": {**(tmeta.get("labels") or {}), TEMPLATE_HASH_LABEL: pod_hash},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": md["name"],
                    "uid": md["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        if tmeta.get("annotations"):
            pod_meta["annotations"] = dict(tmeta["annotations"])
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": pod_meta,
            "spec": copy.deepcopy(template.get("spec") or {}),
        }
        return self.store.create(self._type(PODS), pod_meta["namespace"], body)

    # ----- scheduler ---------------------------------------------------------------------------

    def schedule(self) -> None:
        """Bind every pending pod to a node (``scheduling.choose_node``), or say why none fits
        in its ``PodScheduled`` condition. Pods placed in one pass count for the next."""
        store = self.store
        if self._pending is not None and not self._pending:
            return  # every pod has its node: nothing to place, no pass over the pods
        self._pending = set()
        nodes = sorted(store.objects(NODES), key=lambda n: meta(n)["name"])
        loads = {meta(n)["name"]: NodeLoad() for n in nodes}
        pending = []
        for pod in store.objects(PODS):
            spec, status = pod.get("spec") or {}, pod.get("status") or {}
            node_name = spec.get("nodeName")
            if node_name:
                if node_name in loads and status.get("phase") not in ("Succeeded", "Failed"):
                    loads[node_name].add(owner_uid(pod))
            elif not meta(pod).get("deletionTimestamp"):
                pending.append(pod)
        for pod in pending:
            decision = choose_node(pod, nodes, loads)
            if decision.node is None:
                self._pending.add((meta(pod).get("namespace", ""), meta(pod)["name"]))
                if _unschedulable_message(pod) == decision.message:
                    continue  # already said: no copy, no write (a pass must stay cheap)
                new = copy.deepcopy(pod)
                self._set_scheduled(new, "False", "Unschedulable", decision.message)
            else:
                new = copy.deepcopy(pod)
                new["spec"]["nodeName"] = decision.node
                loads[decision.node].add(owner_uid(pod))
                self._set_scheduled(new, "True", "", "")
            store.update_internal(self._type(PODS), new)

    @staticmethod
    def _set_scheduled(pod: Obj, status: str, reason: str, message: str) -> None:
        pod_status = pod.setdefault("status", {})
        conditions = [
            c for c in pod_status.get("conditions", []) if c.get("type") != "PodScheduled"
        ]
        old = next(
            (c for c in pod_status.get("conditions", []) if c.get("type") == "PodScheduled"), None
        )
        if (
            old is not None
            and old.get("status") == status
            and old.get("reason", "") == reason
            and old.get("message", "") == message
        ):
            return
        condition = {"type": "PodScheduled", "status": status, "lastTransitionTime": now_rfc3339()}
        if reason:
            condition["reason"] = reason
            condition["message"] = message
        pod_status["conditions"] = [condition, *conditions]
