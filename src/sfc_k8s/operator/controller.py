"""The ServiceFunctionChain controller: chains + pods -> one CrossConnection per link + status.

Run by ``sfc-k8s controller`` (``sfc_k8s.operator.cli``) and by the tests through
``kopf.testing.KopfRunner`` with ``Controller(config).registry``/``.settings``.

How it works (details in docs/operator.md):

- Kopf indexes hold what a reconcile needs (chains by name and by the label pairs their
  selectors require, pods per namespace and per label, CrossConnections per name, per chain and
  per cluster id), so a reconcile never lists anything from the API and never goes through all
  the chains or pods: its cost is that of its own chain, however many others exist (the scale
  test, tests/integration/operator/test_controller_scale.py). Kopf starts the handlers only once
  every index is filled: a restarted controller never writes a CrossConnection from a partial
  view of the pods.
- Event handlers decide *which* chains an event concerns (a pod: the chains whose selectors match
  it now or matched it before, ``selections``) and kick them into a ``workqueue.WorkQueue``:
  bursts coalesce, one chain is never reconciled twice at once, API failures are retried with
  back-off.
- A reconcile is level-based and idempotent: read the indexes -> ``sfc_k8s.api`` decides
  (``plan_cross_connection``, ``stale_cross_connections``, ``compute_chain_status``) -> only
  differences are written; the status goes through a ``status_writer.StatusWriter``, off the
  path of the CrossConnection writes. Invalid chains get Ready=False / Degraded=True conditions
  saying what to fix, and their existing CrossConnections are left as they were, so a bad edit
  does not cut traffic; other chains are never affected.
- Two replicas use Kopf peering with distinct priorities: only the highest live one handles
  events, the other stays paused until the first one stops or goes silent.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import kopf

from sfc_k8s.api import (
    API_VERSION,
    CHAIN_KIND,
    CHAIN_LABEL,
    CHAIN_PLURAL,
    GROUP,
    VERSION,
    XC_PLURAL,
    ChainInvalid,
    ChainSpec,
    ConditionType,
    CrossConnectionSpec,
    LinkProgramming,
    PodInfo,
    Reason,
    assign_identities,
    compute_chain_status,
    compute_links,
    cross_connection_body,
    functions_of,
    get_condition,
    interface_conflicts,
    invalid_chain_status,
    parse_chain,
    pod_info,
    pod_selection_keys,
    selection_keys,
)
from sfc_k8s.api.chain_plan import (
    Create,
    Patch,
    Refuse,
    StoredCrossConnection,
    link_report,
    plan_cross_connection,
    stale_cross_connections,
)
from sfc_k8s.api.nodes import orphan_finalizers
from sfc_k8s.api.status import status_merge_patch
from sfc_k8s.api.types import ChainStatusBody, ConditionBody, CrossConnectionBody
from sfc_k8s.operator import kopf_toggles
from sfc_k8s.operator.autoscalers import HPA_RESOURCE, Autoscalers
from sfc_k8s.operator.kube import ApiError, KubeClient, object_path
from sfc_k8s.operator.selections import ChainKey, PodKey, Selections
from sfc_k8s.operator.settings import ControllerConfig, connection_info
from sfc_k8s.operator.status_writer import StatusWriter
from sfc_k8s.operator.workqueue import Backoff, WorkQueue

log = logging.getLogger("sfc_k8s.controller")
kopf_toggles.install()  # Kopf's index readiness in O(objects), not O(objects²), at start-up

ObjKey = tuple[str, str]  # (namespace, name)

# Index ids double as the names of the handler keyword arguments Kopf passes them in.
CHAINS_INDEX = "sfc_chains"
PODS_INDEX = "sfc_pods"
XCS_INDEX = "sfc_xcs"
NODES_INDEX = "sfc_nodes"
HPAS_INDEX = "sfc_hpas"

# Chain status writes in flight at once. A burst of status writes (100 chains created together)
# must not fill the connection pool ahead of the latency-critical CrossConnection writes.
STATUS_WRITERS = 4
FLUSH_TIMEOUT = 5.0  # seconds the statuses already computed get to reach the server at exit

XcEntry = StoredCrossConnection  # a CrossConnection as last seen by the index
ORPHAN_ATTEMPTS = 3  # conflicting writes survived while removing a lost node's finalizer
LISTING_CHECK_DELAY = 2.0  # after a listing starts, when its objects are read from the API


@dataclass(frozen=True)
class ChainEntry:
    """A chain as last seen by the index: parsed spec (or why it is invalid) and stored status."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: ChainSpec | None
    error: ChainInvalid | None
    status: Mapping[str, Any]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ChainEntry:
        meta = body.get("metadata") or {}
        spec: ChainSpec | None = None
        error: ChainInvalid | None = None
        try:
            spec = parse_chain(body)
        except ChainInvalid as err:
            error = err
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 0),
            spec=spec,
            error=error,
            status=copy.deepcopy(dict(body.get("status") or {})),
        )

    @property
    def key(self) -> ChainKey:
        return (self.namespace, self.name)

    def reference(self) -> kopf.Body:
        """A body Kopf can post events about."""
        return kopf.Body(
            {
                "apiVersion": API_VERSION,
                "kind": CHAIN_KIND,
                "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
            }
        )


@dataclass
class _ChainMemory:
    """What the controller remembers between reconciles of one chain (lost on restart: fine)."""

    announced_ready: bool | None = None  # Ready state last announced by an event
    generation: int | None = None  # spec generation of the last reconcile


class Controller:
    """Owns the Kopf registry and settings of one controller instance (one replica)."""

    def __init__(self, config: ControllerConfig, *, info: kopf.ConnectionInfo | None = None):
        self.config = config
        self.info = info or connection_info(config.kubeconfig)
        self.priority = config.effective_priority()
        self.registry = kopf.OperatorRegistry()
        self.settings = self._make_settings()
        self.stats: Counter[str] = Counter()  # writes and reconciles, for logs and tests
        self._client = KubeClient(self.info, user_agent="sfc-k8s-controller")
        self._chains_idx: kopf.Index[Any, ChainEntry] | None = None
        self._pods_idx: kopf.Index[Any, PodInfo] | None = None
        self._xcs_idx: kopf.Index[Any, XcEntry] | None = None
        self._nodes_idx: kopf.Index[Any, str] | None = None
        self._hpas_idx: kopf.Index[Any, Mapping[str, Any]] | None = None
        self._autoscalers = Autoscalers(self._client)
        self._queue: WorkQueue[ChainKey] = WorkQueue(
            self.reconcile,
            retry_on=(ApiError,),
            backoff=Backoff(config.retry_delay, config.max_retry_delay),
            on_retry=self._retrying,
        )
        self._statuses: StatusWriter[ChainKey, ChainEntry] = StatusWriter(
            self._patch_status,
            slots=STATUS_WRITERS,
            retry_on=(ApiError,),
            on_error=self._queue.retry,
        )
        self._selections = Selections()
        self._memory: dict[ChainKey, _ChainMemory] = {}
        # What this replica wrote to each CrossConnection, until its watch event shows it: a
        # spec (created or patched), or its deletion.
        self._written_xc: dict[ObjKey, Mapping[str, Any]] = {}
        self._deleted_xc: set[ObjKey] = set()
        self._cluster_ids = ClusterIdBook()
        self._listing_checks: dict[str, asyncio.Task[None]] = {}  # see _check_after_listing
        self._ghost_nodes: set[str] = set()  # in the Node index, not in the API's last list
        self._ghost_pods: set[str] = set()  # uids in the pod index of pods that are gone
        self._register()

    # -- Kopf wiring ---------------------------------------------------------------------------
    def _make_settings(self) -> kopf.OperatorSettings:
        settings = kopf.OperatorSettings()
        settings.peering.standalone = self.config.peering is None
        settings.peering.mandatory = self.config.peering is not None
        settings.peering.name = self.config.peering or "default"
        settings.peering.priority = self.priority
        settings.peering.lifetime = self.config.peering_lifetime
        settings.peering.clusterwide = self.config.clusterwide
        return settings

    def run_kwargs(self) -> dict[str, Any]:
        """Arguments for ``kopf.run``/``kopf.operator`` matching this controller's config."""
        return {
            "registry": self.registry,
            "settings": self.settings,
            "clusterwide": self.config.clusterwide,
            "namespaces": list(self.config.namespaces),
            "standalone": self.config.peering is None,
            "peering_name": self.config.peering,
            "priority": self.priority,
            "liveness_endpoint": self.config.liveness,
        }

    def kopf_args(self) -> list[str]:
        """``kopf run`` arguments for ``KopfRunner`` (registry and settings passed separately)."""
        args = ["run", "--log-format", "plain"]
        args += ["--all-namespaces"] if self.config.clusterwide else []
        for ns in self.config.namespaces:
            args += ["--namespace", ns]
        if self.config.peering is None:
            args += ["--standalone"]
        else:
            args += ["--peering", self.config.peering, "--priority", str(self.priority)]
        return args

    def _register(self) -> None:
        reg = self.registry
        chains = (GROUP, VERSION, CHAIN_PLURAL)
        xcs = (GROUP, VERSION, XC_PLURAL)
        kopf.on.login(registry=reg)(self._login)
        kopf.on.startup(registry=reg)(self._startup)
        kopf.on.cleanup(registry=reg)(self._cleanup)
        kopf.index(*chains, registry=reg, id=CHAINS_INDEX)(_index_chain)
        kopf.index("v1", "pods", registry=reg, id=PODS_INDEX)(_index_pod)
        kopf.index(*xcs, registry=reg, id=XCS_INDEX)(_index_xc)
        kopf.index("v1", "nodes", registry=reg, id=NODES_INDEX)(_index_node)
        ours = {CHAIN_LABEL: kopf.PRESENT}  # the HPAs of functions with ``autoscaling``
        kopf.index(*HPA_RESOURCE, registry=reg, id=HPAS_INDEX, labels=ours)(_index_hpa)
        kopf.on.event(*HPA_RESOURCE, registry=reg, id="hpa_event", labels=ours)(self._on_hpa)
        kopf.on.event(*chains, registry=reg, id="chain_event")(self._on_chain)
        kopf.on.event("v1", "pods", registry=reg, id="pod_event")(self._on_pod)
        kopf.on.event(*xcs, registry=reg, id="xc_event")(self._on_xc)
        kopf.on.event("v1", "nodes", registry=reg, id="node_event")(self._on_node)

    def _login(self, **_: Any) -> kopf.ConnectionInfo:
        return self.info

    async def _startup(self, **_: Any) -> None:
        await self._client.open()
        await self._ensure_peering()
        log.info(
            "controller starting",
            extra={
                "namespaces": list(self.config.namespaces) or "*",
                "peering": self.config.peering,
                "priority": self.priority,
            },
        )

    async def _cleanup(self, **_: Any) -> None:
        for task in self._listing_checks.values():
            task.cancel()
        self._queue.close()
        await self._statuses.flush(FLUSH_TIMEOUT)  # let the statuses computed reach the server
        await self._client.close()
        log.info("controller stopped", extra={"stats": dict(self.stats)})

    async def _on_chain(self, event: kopf.RawEvent, body: kopf.Body, **kwargs: Any) -> None:
        self._bind(kwargs)
        key = _key_of(body)
        if event.get("type") == "DELETED":
            self._forget_chain(key)
            return
        # not one of this replica's recent writes (even a late echo of one): someone else wrote
        # it, or this replica was paused meanwhile; trust the server
        self._statuses.observe(key, body.get("status") or {})
        await self.kick(key)

    async def _on_pod(self, event: kopf.RawEvent, body: kopf.Body, **kwargs: Any) -> None:
        self._bind(kwargs)
        if event.get("type") is None:
            self._check_after_listing("pods", self._check_listed_pods)
        affected = self._chains_for_pod_event(_key_of(body), body, event.get("type"))
        await asyncio.gather(*(self.kick(key) for key in sorted(affected)))

    async def _on_xc(self, event: kopf.RawEvent, body: kopf.Body, **kwargs: Any) -> None:
        self._bind(kwargs)
        key = _key_of(body)
        gone = event.get("type") == "DELETED"
        written = self._written_xc.get(key)
        if gone or (written is not None and written != (body.get("spec") or {})):
            self._written_xc.pop(key, None)  # changed by someone else: trust the index
        if gone or body.get("metadata", {}).get("deletionTimestamp"):
            self._deleted_xc.discard(key)  # the index shows the deletion from now on
        cluster_id = (body.get("spec") or {}).get("clusterId")
        if gone:
            self._cluster_ids.release(key)
        elif key not in self._written_xc and isinstance(cluster_id, int):
            self._cluster_ids.book(key, cluster_id)  # nothing of ours in flight: the server's
        if not gone:
            await self._release_orphans(XcEntry.from_body(body))
        chain = (body.get("metadata", {}).get("labels") or {}).get(CHAIN_LABEL)
        if chain and self._chain_entry((key[0], chain)) is not None:
            await self.kick((key[0], chain))

    async def _on_hpa(self, body: kopf.Body, **kwargs: Any) -> None:
        """A function's HPA changed (its status, mostly): refresh its chain's status."""
        self._bind(kwargs)
        namespace = body.get("metadata", {}).get("namespace") or ""
        chain = (body.get("metadata", {}).get("labels") or {}).get(CHAIN_LABEL)
        if chain and self._chain_entry((namespace, chain)) is not None:
            await self.kick((namespace, chain))

    async def _on_node(self, event: kopf.RawEvent, body: kopf.Body, **kwargs: Any) -> None:
        """A Node deleted: its agent will never release the CrossConnections it programmed.
        Nodes listed (at start, or resuming after a peering pause): ``_check_listed_nodes``."""
        self._bind(kwargs)
        kind = event.get("type")
        if kind is None:
            self._check_after_listing("nodes", self._check_listed_nodes)
            return
        if kind == "DELETED":
            await self._release_all_orphans()
        else:  # a Node of that name exists (again)
            self._ghost_nodes.discard(str(body.get("metadata", {}).get("name") or ""))

    # -- objects deleted while this replica was paused -----------------------------------------
    # Kopf's re-list after a peering pause does not drop what its indexes held from before the
    # pause, and the deletion events of the objects deleted meanwhile never come: such "ghosts"
    # would stay in the index for ever (a lost node's finalizer kept on every CrossConnection, a
    # deleted pod kept as an endpoint). So once a listing of Nodes or Pods is through, what the
    # index held before a fresh read of the API and that read lacks is set aside.
    def _check_after_listing(self, what: str, check: Callable[[], Awaitable[None]]) -> None:
        """Run ``check`` once the listing of ``what`` now starting is through (one at a time)."""
        task = self._listing_checks.get(what)
        if task is None or task.done():
            self._listing_checks[what] = asyncio.create_task(_after(LISTING_CHECK_DELAY, check))

    async def _list_now(self, what: str, path: str) -> list[dict[str, Any]] | None:
        try:
            return await self._client.list(path)
        except ApiError as err:
            log.warning(f"cannot list the {what} to look for deleted ones: {err}")
            return None

    async def _check_listed_nodes(self) -> None:
        # The index is read before the API: what it lacks then is certainly gone.
        indexed = {key for key in self._nodes_idx or () if isinstance(key, str)}
        items = await self._list_now("nodes", object_path("", "v1", "nodes", None))
        if items is None:
            return
        names = {str((item.get("metadata") or {}).get("name") or "") for item in items} - {""}
        self._ghost_nodes = indexed - names
        await self._release_all_orphans(sorted(names))

    async def _check_listed_pods(self) -> None:
        indexed = {pod.uid: pod for pod in self._indexed_pods()}
        listed: set[str] = set()
        for namespace in sorted({pod.namespace for pod in indexed.values()}):
            path = object_path("", "v1", "pods", namespace)
            items = await self._list_now("pods", path)
            if items is None:
                return
            listed.update(str((item.get("metadata") or {}).get("uid")) for item in items)
        gone = [pod for uid, pod in indexed.items() if uid not in listed]
        if not gone:
            return
        self._ghost_pods.update(pod.uid for pod in gone)
        names = ", ".join(f"{pod.namespace}/{pod.name}" for pod in gone[:5])
        log.info(f"{len(gone)} pod(s) deleted while this replica was paused: {names}")
        affected: set[ChainKey] = set()
        for pod in gone:
            affected |= self._selections.pod_deleted(pod.key)
        await asyncio.gather(*(self.kick(key) for key in sorted(affected)))

    def _indexed_pods(self) -> list[PodInfo]:
        if self._pods_idx is None:
            return []
        keys = [key for key in self._pods_idx if key[0] == "ns"]
        return [pod for key in keys for pod in self._pods_idx.get(key, ())]

    async def _release_all_orphans(self, nodes: list[str] | None = None) -> None:
        if self._xcs_idx is None:
            return
        for key in list(self._xcs_idx):
            if key[0] == "name":
                for xc in list(self._xcs_idx.get(key, ())):
                    await self._release_orphans(xc, nodes)

    async def _release_orphans(self, xc: XcEntry, nodes: list[str] | None = None) -> None:
        """Remove the finalizers of agents whose Node no longer exists (``orphan_finalizers``
        against ``nodes``, by default the index's); guarded by resourceVersion. On a conflict
        the object is read again and the removal retried: the write that won may be the last
        event the object ever gets (the lost node's agent never writes again)."""
        if nodes is None:
            if self._nodes_idx is None:
                return
            ghosts = self._ghost_nodes
            nodes = [k for k in self._nodes_idx if isinstance(k, str) and k not in ghosts]
        for _ in range(ORPHAN_ATTEMPTS):
            orphans = orphan_finalizers(xc.finalizers, nodes)
            if not orphans:
                return
            where = f"{xc.namespace}/{xc.name}"
            path = object_path(GROUP, VERSION, XC_PLURAL, xc.namespace, name=xc.name)
            kept = [f for f in xc.finalizers if f not in orphans]
            patch = {"metadata": {"finalizers": kept, "resourceVersion": xc.resource_version}}
            try:
                await self._client.merge_patch(path, patch)
            except ApiError as err:
                if err.status == 409:
                    fresh = await self._read_xc(path)
                    if fresh is None:
                        return
                    xc = fresh
                    continue
                if err.status != 404:
                    log.warning(f"cannot remove finalizers {orphans} of {where}: {err}")
                return
            self.stats["orphan_finalizers"] += len(orphans)
            log.info(
                f"removed finalizer(s) {', '.join(orphans)} of CrossConnection {where}:"
                " their nodes are gone",
                extra={"xc": xc.name},
            )
            return

    async def _read_xc(self, path: str) -> XcEntry | None:
        """The CrossConnection as stored now (None: gone or unreadable, logged)."""
        try:
            return XcEntry.from_body(await self._client.get(path))
        except ApiError as err:
            if err.status != 404:
                log.warning(f"cannot read {path}: {err}")
            return None

    async def _ensure_peering(self) -> None:
        """Create the Kopf peering object(s) if missing: without one, peering replicas wait."""
        if self.config.peering is None:
            return
        kind, plural = (
            ("ClusterKopfPeering", "clusterkopfpeerings")
            if self.config.clusterwide
            else ("KopfPeering", "kopfpeerings")
        )
        for namespace in self.config.namespaces or (None,):
            body = {
                "apiVersion": "kopf.dev/v1",
                "kind": kind,
                "metadata": {"name": self.config.peering},
            }
            try:
                await self._client.create(object_path("kopf.dev", "v1", plural, namespace), body)
            except ApiError as err:
                if err.status == 409:
                    continue
                where = f"namespace {namespace!r}" if namespace else "the cluster"
                raise kopf.PermanentError(
                    f"cannot create {kind} {self.config.peering!r} in {where}: {err}; install "
                    "deploy/kopf-peering.yaml (Kopf's peering CRDs) or run with --standalone"
                ) from err
            log.info(f"created {kind} {self.config.peering!r}", extra={"namespace": namespace})

    def _bind(self, kwargs: Mapping[str, Any]) -> None:
        self._chains_idx = kwargs[CHAINS_INDEX]
        self._pods_idx = kwargs[PODS_INDEX]
        self._xcs_idx = kwargs[XCS_INDEX]
        self._nodes_idx = kwargs[NODES_INDEX]
        self._hpas_idx = kwargs[HPAS_INDEX]

    # -- index lookups ---------------------------------------------------------------------------
    def _chain_entry(self, key: ChainKey) -> ChainEntry | None:
        if self._chains_idx is None:
            return None
        return next(iter(self._chains_idx.get(("name", *key), ())), None)

    def _chains_selecting(
        self, namespace: str, labels: Iterable[Mapping[str, str]]
    ) -> list[ChainEntry]:
        """The valid chains of ``namespace`` that may select a pod with one of ``labels``
        (found through the index by ``pod_selection_keys``; ``functions_of`` decides)."""
        if self._chains_idx is None:
            return []
        keys = {key for pod_labels in labels for key in pod_selection_keys(pod_labels)}
        found = {
            entry.key: entry
            for key in keys
            for entry in self._chains_idx.get(("selects", namespace, key), ())
        }
        return [found[key] for key in sorted(found)]

    def _pods_of(self, chain: ChainSpec) -> list[PodInfo]:
        """Pods selected by any function of ``chain``, found through the label index."""
        assert self._pods_idx is not None
        found: dict[str, PodInfo] = {}
        for fn in chain.functions:
            if fn.selector.match_labels:
                k, v = fn.selector.match_labels[0]
                candidates: Iterable[PodInfo] = self._pods_idx.get(
                    ("label", chain.namespace, k, v), ()
                )
            else:
                candidates = self._pods_idx.get(("ns", chain.namespace), ())
            for pod in candidates:
                if fn.selector.matches(pod.labels) and pod.uid not in self._ghost_pods:
                    found[pod.name] = pod
        return [found[name] for name in sorted(found)]

    def _xc_entry(self, namespace: str, name: str) -> XcEntry | None:
        if self._xcs_idx is None:
            return None
        return next(iter(self._xcs_idx.get(("name", namespace, name), ())), None)

    def _xcs_of_chain(self, namespace: str, chain: str) -> list[XcEntry]:
        if self._xcs_idx is None:
            return []
        return list(self._xcs_idx.get(("chain", namespace, chain), ()))

    def _chains_for_pod_event(
        self, key: PodKey, body: Mapping[str, Any], event_type: str | None
    ) -> set[ChainKey]:
        """Chains to reconcile for a pod event: those selecting it now or at their last pass."""
        if event_type == "DELETED":
            return self._selections.pod_deleted(key)
        info = pod_info(body)
        if not self._selections.pod_changed(info):
            return set()  # nothing the controller looks at has changed (e.g. container status)
        now = {
            (c.namespace, c.name)
            for c in self._chains_selecting(info.namespace, [info.labels])
            if c.spec is not None and functions_of(c.spec, info)
        }
        return now | self._selections.chains_of(key)

    # -- work queue ------------------------------------------------------------------------------
    async def kick(self, key: ChainKey) -> None:
        """Reconcile ``key`` now, or once more after the reconcile already running for it."""
        await self._queue.kick(key)

    def _retrying(self, key: ChainKey, attempt: int, delay: float, err: BaseException) -> None:
        log.warning(
            f"reconcile of chain {key[0]}/{key[1]} failed, retrying in {delay:.1f}s: {err}",
            extra={"chain": f"{key[0]}/{key[1]}", "attempt": attempt},
        )
        self.stats["retry"] += 1

    def _forget_chain(self, key: ChainKey) -> None:
        self._memory.pop(key, None)
        self._queue.forget(key)
        self._statuses.forget(key)
        pods = self._selections.forget_chain(key)
        # chains that left a contested interface to this one may take it now
        for other in sorted(self._selections.sharing(key, pods)):
            self._queue.later(other)
        # CrossConnections go with the chain through their owner reference (garbage collection).
        log.info("chain deleted", extra={"chain": f"{key[0]}/{key[1]}"})

    # -- reconcile -------------------------------------------------------------------------------
    async def reconcile(self, key: ChainKey) -> None:
        """Bring the CrossConnections and the status of chain ``key`` to the desired state."""
        entry = self._chain_entry(key)
        if entry is None:
            return
        self.stats["reconcile"] += 1
        memory = self._memory.setdefault(key, _ChainMemory())
        previous = cast(ChainStatusBody, dict(self._statuses.latest(key, entry.status)))
        if memory.announced_ready is None:
            ready = get_condition(previous.get("conditions") or [], ConditionType.READY)
            memory.announced_ready = bool(ready and ready.get("status") == "True")
        if entry.spec is None:
            assert entry.error is not None
            status = invalid_chain_status(
                entry.error, generation=entry.generation, previous=previous or None
            )
        else:
            status = await self._reconcile_valid(entry, entry.spec, previous or None)
        self._statuses.submit(key, status, context=entry, stored=entry.status)

    async def _reconcile_valid(
        self, entry: ChainEntry, chain: ChainSpec, previous: ChainStatusBody | None
    ) -> ChainStatusBody:
        """Write the chain's CrossConnections; returns its status."""
        pods = self._pods_of(chain)
        sharing_before = self._selections.sharing(entry.key)
        self._selections.record(entry.key, (p.key for p in pods))
        claimed = interface_conflicts(chain, pods, self._contenders(chain, pods))
        specs = compute_links(chain, pods, exclude=claimed)
        programming: dict[str, LinkProgramming] = {}
        problems: dict[Reason, list[str]] = {Reason.NAME_CONFLICT: [], Reason.WRITE_REFUSED: []}
        for i, computed in enumerate(specs):
            name = chain.xc_name(computed.link)
            existing = self._xc_entry(chain.namespace, name)
            spec = specs[i] = self._with_identities(computed, (chain.namespace, name), existing)
            body = cross_connection_body(chain, spec)
            existing, problem = await self._apply_xc(entry, chain, body, existing)
            if problem:
                problems[problem[0]].append(problem[1])
            else:
                programming[spec.link] = link_report(spec, body, existing)
        await self._delete_stale(entry, chain, {chain.xc_name(spec.link) for spec in specs})
        self._kick_sharing(entry, chain, sharing_before)
        status = compute_chain_status(
            chain,
            pods,
            links=specs,
            programming=programming if self.config.require_programmed else None,
            conflicts=problems[Reason.NAME_CONFLICT],
            refusals=problems[Reason.WRITE_REFUSED],
            interface_conflicts=claimed,
            previous=previous,
        )
        hpas = self._hpas_idx.get((chain.namespace, chain.name), ()) if self._hpas_idx else ()
        stored = {str(h["metadata"]["name"]): h for h in hpas}
        await self._autoscalers.apply(chain, pods, stored, status)
        return status

    def _with_identities(
        self, spec: CrossConnectionSpec, key: ObjKey, existing: XcEntry | None
    ) -> CrossConnectionSpec:
        """``spec`` with the ids it had (as this replica wrote it last, else as indexed) and a
        cluster id no other CrossConnection holds (``assign_identities``)."""
        previous = self._written_xc.get(key)
        if previous is None and existing is not None:
            previous = existing.spec
        in_use = _ClusterIdsInUse(self._xcs_idx, self._cluster_ids, key)
        spec = assign_identities(spec, previous, in_use, search_from=self._cluster_ids.floor)
        self._cluster_ids.book(key, spec.cluster_id)  # before any await: see ClusterIdBook
        return spec

    def _kick_sharing(self, entry: ChainEntry, chain: ChainSpec, before: set[ChainKey]) -> None:
        """A new spec may take or release pod interfaces other chains contend for: reconcile
        the chains that share pods with this one, before or after."""
        memory = self._memory[entry.key]
        if memory.generation != chain.generation:
            memory.generation = chain.generation
            for other in sorted(before | self._selections.sharing(entry.key)):
                self._queue.later(other)

    def _contenders(self, chain: ChainSpec, pods: list[PodInfo]) -> list[ChainSpec]:
        """Other chains of the namespace that may select one of ``pods`` (a cheap pre-filter on
        each function's first matchLabels pair; ``interface_conflicts`` decides)."""
        contenders = []
        for entry in self._chains_selecting(chain.namespace, (pod.labels for pod in pods)):
            other = entry.spec
            if other is None or other.name == chain.name or other.seniority > chain.seniority:
                continue
            contenders.append(other)
        return sorted(contenders, key=lambda c: c.seniority)

    # -- CrossConnection writes ------------------------------------------------------------------
    async def _apply_xc(
        self,
        entry: ChainEntry,
        chain: ChainSpec,
        body: CrossConnectionBody,
        existing: XcEntry | None,
    ) -> tuple[XcEntry | None, tuple[Reason, str] | None]:
        """Bring one CrossConnection to ``body`` as ``plan_cross_connection`` says; returns the
        object as now known and, if it could not be written, why: a name conflict (it is not
        this chain's to write) or the API server's refusal."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        action = plan_cross_connection(chain, body, existing, written=self._written_xc.get(key))
        if isinstance(action, Create):
            try:
                await self._create_xc(entry, body)
                return existing, None
            except ApiError as err:
                if err.status != 409:
                    return existing, self._refused(meta["name"], err)
            # created meanwhile (by the other replica, or before a restart): compare with it
            path = object_path(GROUP, VERSION, XC_PLURAL, key[0], name=key[1])
            existing = XcEntry.from_body(await self._client.get(path))
            action = plan_cross_connection(chain, body, existing)
        if isinstance(action, Refuse):
            return existing, (Reason.NAME_CONFLICT, action.message)
        if isinstance(action, Patch):
            try:
                await self._patch_xc(entry, body, action)
            except ApiError as err:
                if err.status == 404:  # deleted meanwhile: created again on the retry
                    raise
                return existing, self._refused(meta["name"], err)
        return existing, None

    async def _create_xc(self, entry: ChainEntry, body: CrossConnectionBody) -> None:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        await self._client.create(object_path(GROUP, VERSION, XC_PLURAL, namespace), body)
        self._written_xc[(namespace, name)] = body["spec"]
        self.stats["xc_create"] += 1
        log.info(
            f"created CrossConnection {namespace}/{name}",
            extra={"chain": f"{namespace}/{entry.name}", "xc": name},
        )
        kopf.info(
            entry.reference(),
            reason="CrossConnectionCreated",
            message=f"created CrossConnection {name}",
        )

    async def _patch_xc(self, entry: ChainEntry, body: CrossConnectionBody, action: Patch) -> None:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        path = object_path(GROUP, VERSION, XC_PLURAL, namespace, name=name)
        try:
            await self._client.merge_patch(path, action.patch)
        except ApiError as err:
            if err.status == 404:  # deleted meanwhile: what this replica wrote is gone too
                self._written_xc.pop((namespace, name), None)
            raise
        desired = body["spec"]
        self._written_xc[(namespace, name)] = desired
        self.stats["xc_patch"] += 1
        log.info(
            f"updated CrossConnection {namespace}/{name}",
            extra={
                "chain": f"{namespace}/{entry.name}",
                "xc": name,
                "endpointsA": desired["a"].get("activeEndpoints"),
                "endpointsB": desired["b"].get("activeEndpoints"),
            },
        )

    def _refused(self, name: str, err: ApiError) -> tuple[Reason, str]:
        """A refusal retrying cannot fix (a 403 of RBAC, a 422), logged and reported on the
        chain; re-raises the others so that the chain is retried."""
        if err.retryable:
            raise err
        message = f"the API server refused CrossConnection {name!r}: {err.reason}: {err.message}"
        log.error(f"{err.method} {err.path}: {message}", extra={"xc": name})
        return Reason.WRITE_REFUSED, message

    async def _delete_stale(self, entry: ChainEntry, chain: ChainSpec, wanted: set[str]) -> None:
        existing = self._xcs_of_chain(chain.namespace, chain.name)
        deleted = {name for ns, name in self._deleted_xc if ns == chain.namespace}
        for name in stale_cross_connections(chain, wanted, existing, deleted=deleted):
            await self._delete_xc(entry, name)

    async def _delete_xc(self, entry: ChainEntry, name: str) -> None:
        path = object_path(GROUP, VERSION, XC_PLURAL, entry.namespace, name=name)
        self._written_xc.pop((entry.namespace, name), None)
        try:
            await self._client.delete(path)
        except ApiError as err:
            if err.status != 404:
                raise
            return  # deleted by someone else meanwhile: not this controller's deletion to announce
        self._deleted_xc.add((entry.namespace, name))
        self.stats["xc_delete"] += 1
        log.info(
            f"deleted CrossConnection {entry.namespace}/{name} (link removed)",
            extra={"chain": f"{entry.namespace}/{entry.name}", "xc": name},
        )
        kopf.info(
            entry.reference(),
            reason="CrossConnectionDeleted",
            message=f"deleted CrossConnection {name}: its link is no longer in the chain",
        )

    # -- status ----------------------------------------------------------------------------------
    async def _patch_status(
        self,
        key: ChainKey,
        entry: ChainEntry,
        status: Mapping[str, Any],
        stored: Mapping[str, Any],
    ) -> bool:
        """Write ``status`` over ``stored`` (the status writer's ``patch``); False: chain gone."""
        path = object_path(
            GROUP, VERSION, CHAIN_PLURAL, entry.namespace, name=entry.name, subresource="status"
        )
        body = status_merge_patch(status, entry.status, stored)
        try:
            await self._client.merge_patch(path, {"status": body})
        except ApiError as err:
            if err.status == 404:  # the chain is gone; its deletion event cleans up
                return False
            raise
        self.stats["status_patch"] += 1
        memory = self._memory.get(key)
        if memory is not None:
            self._announce(entry, stored.get("conditions") or [], status["conditions"], memory)
        return True

    def _announce(
        self,
        entry: ChainEntry,
        old: list[ConditionBody],
        new: list[ConditionBody],
        memory: _ChainMemory,
    ) -> None:
        """Kubernetes events for meaningful transitions; routine re-programming stays quiet."""
        self._announce_degraded(entry, old, new)
        ready = get_condition(new, ConditionType.READY)
        if ready is None:
            return
        is_ready = ready.get("status") == "True"
        ref = entry.reference()
        if is_ready and not memory.announced_ready:
            kopf.info(ref, reason=Reason.READY, message=ready.get("message", ""))
            memory.announced_ready = True
            self.stats["event"] += 1
        elif not is_ready and memory.announced_ready:
            if ready.get("reason") == Reason.FUNCTIONS_NOT_READY:
                kopf.warn(ref, reason=Reason.FUNCTIONS_NOT_READY, message=ready.get("message", ""))
                self.stats["event"] += 1
                memory.announced_ready = False
            elif ready.get("reason") != Reason.NOT_PROGRAMMED:
                memory.announced_ready = False  # announced through Degraded

    def _announce_degraded(
        self, entry: ChainEntry, old: list[ConditionBody], new: list[ConditionBody]
    ) -> None:
        """A Warning when a problem appears or changes reason, ``Recovered`` when it is gone."""
        before = get_condition(old, ConditionType.DEGRADED)
        after = get_condition(new, ConditionType.DEGRADED)
        if after is not None and after.get("status") == "True":
            if before is None or (before.get("status"), before.get("reason")) != (
                "True",
                after.get("reason"),
            ):
                kopf.warn(
                    entry.reference(),
                    reason=after.get("reason", ""),
                    message=after.get("message", ""),
                )
                self.stats["event"] += 1
        elif before is not None and before.get("status") == "True":
            kopf.info(
                entry.reference(), reason="Recovered", message="the chain has no problem any more"
            )
            self.stats["event"] += 1


# The indexers are coroutines: Kopf runs a plain function in its thread pool, a hop per event
# of every pod that costs more than the indexing itself.
async def _index_chain(body: kopf.Body, **_: Any) -> dict[Any, ChainEntry]:
    entry = ChainEntry.from_body(body)
    keys: dict[Any, ChainEntry] = {("name", entry.namespace, entry.name): entry}
    for key in selection_keys(entry.spec) if entry.spec is not None else ():
        keys[("selects", entry.namespace, key)] = entry
    return keys


async def _index_pod(body: kopf.Body, **_: Any) -> dict[Any, PodInfo]:
    info = pod_info(body)
    keys: dict[Any, PodInfo] = {("ns", info.namespace): info}
    for key, value in info.labels.items():
        keys[("label", info.namespace, key, value)] = info
    return keys


async def _index_hpa(body: kopf.Body, **_: Any) -> dict[Any, Mapping[str, Any]]:
    meta = body.get("metadata", {})
    chain = str((meta.get("labels") or {}).get(CHAIN_LABEL))
    hpa = {
        "metadata": dict(meta),
        "spec": dict(body.get("spec", {})),
        "status": dict(body.get("status", {})),
    }
    return {(meta.get("namespace") or "", chain): hpa}


async def _index_xc(body: kopf.Body, **_: Any) -> dict[Any, XcEntry]:
    entry = XcEntry.from_body(body)
    keys: dict[Any, XcEntry] = {("name", entry.namespace, entry.name): entry}
    if entry.chain:
        keys[("chain", entry.namespace, entry.chain)] = entry
    cluster_id = entry.spec.get("clusterId")
    if isinstance(cluster_id, int):
        keys[("cluster-id", cluster_id)] = entry
    return keys


class ClusterIdBook:
    """The cluster id of each CrossConnection as this replica last assigned or saw it.

    An id is booked the moment ``assign_identities`` hands it out, before the write is sent:
    reconciles of other chains run while that write is in flight, and the index shows it only
    once its watch event is back, so without the booking two new links could get the same id
    (and one of them would have to change it later, rebuilding its link on every node).
    """

    def __init__(self) -> None:
        self._by_key: dict[ObjKey, int] = {}
        self._holders: dict[int, set[ObjKey]] = {}
        # Every id below it is booked: where the search for a free id starts.
        self.floor = 1

    def book(self, key: ObjKey, cluster_id: int) -> None:
        self.release(key)
        self._by_key[key] = cluster_id
        self._holders.setdefault(cluster_id, set()).add(key)
        while self.floor in self._holders:
            self.floor += 1

    def release(self, key: ObjKey) -> None:
        old = self._by_key.pop(key, None)
        if old is not None:
            self._holders[old].discard(key)
            if not self._holders[old]:
                del self._holders[old]
                self.floor = min(self.floor, old)

    def get(self, key: ObjKey) -> int | None:
        return self._by_key.get(key)

    def holders(self, cluster_id: int) -> set[ObjKey]:
        return set(self._holders.get(cluster_id, ()))


class _ClusterIdsInUse:
    """The cluster ids held by CrossConnections other than ``me``: as booked by this replica,
    else as indexed."""

    def __init__(
        self, index: kopf.Index[Any, XcEntry] | None, book: ClusterIdBook, me: ObjKey
    ) -> None:
        self._index = index
        self._book = book
        self._me = me

    def __contains__(self, cluster_id: object) -> bool:
        if not isinstance(cluster_id, int):
            return False
        holders = self._book.holders(cluster_id)
        if self._index is not None:
            for xc in self._index.get(("cluster-id", cluster_id), ()):
                key = (xc.namespace, xc.name)
                if self._book.get(key) in (None, cluster_id):  # the booking is newer
                    holders.add(key)
        holders.discard(self._me)
        return bool(holders)


async def _index_node(body: kopf.Body, **_: Any) -> dict[Any, str]:
    name = str(body.get("metadata", {}).get("name") or "")
    return {name: name} if name else {}


async def _after(delay: float, call: Callable[[], Awaitable[None]]) -> None:
    await asyncio.sleep(delay)
    await call()


def _key_of(body: Mapping[str, Any]) -> ObjKey:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def run(config: ControllerConfig) -> int:
    """Run the controller until SIGINT/SIGTERM (``sfc-k8s controller``)."""
    controller = Controller(config)
    kopf.run(**controller.run_kwargs())
    log.info("controller exited", extra={"stats": dict(controller.stats)})
    return 0


__all__ = ["ChainEntry", "Controller", "XcEntry", "run"]
