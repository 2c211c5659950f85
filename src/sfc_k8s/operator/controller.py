"""The ServiceFunctionChain controller: chains + pods -> one CrossConnection per link + status.

Run by ``sfc-k8s controller`` (``sfc_k8s.operator.cli``) and by the tests through
``kopf.testing.KopfRunner`` with ``Controller(config).registry``/``.settings``.

How it works (details in docs/operator.md):

- Kopf indexes hold what a reconcile needs (chains per namespace, pods per namespace and per
  label, CrossConnections per name and per chain), so a reconcile never lists anything from the
  API, and Kopf starts the handlers only once every index is filled: a restarted controller never
  writes a CrossConnection from a partial view of the pods.
- Event handlers decide *which* chains an event concerns (a pod: the chains whose selectors match
  it now or matched it before) and call ``kick``; ``kick`` coalesces bursts (a chain being
  reconciled is only marked dirty and reconciled once more afterwards) and schedules retries
  with exponential backoff when the API fails.
- A reconcile is level-based and idempotent: parse -> ``sfc_k8s.api`` computes the desired
  CrossConnections and status -> only differences are written. Invalid chains get Ready=False /
  Degraded=True conditions saying what to fix, and their existing CrossConnections are left as
  they were, so a bad edit does not cut traffic; other chains are never affected.
- Two replicas use Kopf peering with distinct priorities: only the highest live one handles
  events, the other stays paused until the first one stops or goes silent.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import Counter, deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from sfc_k8s.api import (
    API_VERSION,
    CHAIN_KIND,
    CHAIN_LABEL,
    CHAIN_PLURAL,
    GROUP,
    LINK_LABEL,
    VERSION,
    XC_PLURAL,
    ChainInvalid,
    ChainSpec,
    ConditionType,
    LinkProgramming,
    PodInfo,
    Reason,
    compute_chain_status,
    compute_links,
    cross_connection_body,
    functions_of,
    get_condition,
    interface_conflicts,
    invalid_chain_status,
    link_programming,
    parse_chain,
    pod_info,
)
from sfc_k8s.api.types import ChainStatusBody, ConditionBody, CrossConnectionBody
from sfc_k8s.operator.kube import KubeApiError, KubeClient, object_path
from sfc_k8s.operator.settings import ControllerConfig, connection_info

log = logging.getLogger("sfc_k8s.controller")

ChainKey = tuple[str, str]  # (namespace, name)
ObjKey = tuple[str, str]  # (namespace, name)

# Index ids double as the names of the handler keyword arguments Kopf passes them in.
CHAINS_INDEX = "sfc_chains"
PODS_INDEX = "sfc_pods"
XCS_INDEX = "sfc_xcs"

# Chain status writes in flight at once. A burst of status writes (100 chains created together)
# must not fill the connection pool ahead of the latency-critical CrossConnection writes.
STATUS_WRITERS = 4


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

    def reference(self) -> kopf.Body:
        """A body Kopf can post events about."""
        return kopf.Body(
            {
                "apiVersion": API_VERSION,
                "kind": CHAIN_KIND,
                "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
            }
        )


@dataclass(frozen=True)
class XcEntry:
    """A CrossConnection as last seen by the index."""

    namespace: str
    name: str
    chain: str | None
    owner_uid: str | None
    generation: int | None
    labels: Mapping[str, str]
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    deleting: bool = False  # deletionTimestamp set: agents are still removing it

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> XcEntry:
        meta = body.get("metadata") or {}
        owners = [
            o
            for o in meta.get("ownerReferences") or ()
            if o.get("controller") and o.get("kind") == CHAIN_KIND
        ]
        labels = dict(meta.get("labels") or {})
        generation = meta.get("generation")
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            chain=labels.get(CHAIN_LABEL),
            owner_uid=str(owners[0].get("uid")) if owners else None,
            generation=int(generation) if generation is not None else None,
            labels=labels,
            spec=copy.deepcopy(dict(body.get("spec") or {})),
            status=copy.deepcopy(dict(body.get("status") or {})),
            deleting=meta.get("deletionTimestamp") is not None,
        )

    def programming(self) -> LinkProgramming:
        meta = {} if self.generation is None else {"generation": self.generation}
        return link_programming({"metadata": meta, "spec": self.spec, "status": self.status})


@dataclass
class _ChainMemory:
    """What the controller remembers between reconciles of one chain (lost on restart: fine)."""

    pods: set[ObjKey] = field(default_factory=set)  # pods selected at the last reconcile
    status: ChainStatusBody | None = None  # last status written
    announced_ready: bool | None = None  # Ready state last announced by an event
    attempts: int = 0  # consecutive failed reconciles
    generation: int | None = None  # spec generation of the last reconcile
    pending: tuple[ChainEntry, ChainStatusBody] | None = None  # status waiting to be written
    written: deque[Mapping[str, Any]] = field(default_factory=lambda: deque(maxlen=8))
    writer: asyncio.Task[None] | None = None  # writes pending statuses, off the reconcile path
    retry: asyncio.Task[None] | None = None


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
        self._running: set[ChainKey] = set()
        self._dirty: set[ChainKey] = set()
        self._memory: dict[ChainKey, _ChainMemory] = {}
        self._pod_seen: dict[ObjKey, PodInfo] = {}
        self._pod_chains: dict[ObjKey, set[ChainKey]] = {}
        self._written_xc: dict[ObjKey, Mapping[str, Any]] = {}
        self._deleted_xc: set[ObjKey] = set()  # deleted by this replica, event not seen yet
        self._status_slots = asyncio.Semaphore(STATUS_WRITERS)
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

        @kopf.on.login(registry=reg)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return self.info

        @kopf.on.startup(registry=reg)
        async def startup(**_: Any) -> None:
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

        @kopf.on.cleanup(registry=reg)
        async def cleanup(**_: Any) -> None:
            for memory in self._memory.values():
                if memory.retry is not None:
                    memory.retry.cancel()
            writers = [m.writer for m in self._memory.values() if m.writer is not None]
            if writers:  # let the statuses already computed reach the server
                await asyncio.wait(writers, timeout=5)
            await self._client.close()
            log.info("controller stopped", extra={"stats": dict(self.stats)})

        @kopf.index(*chains, registry=reg, id=CHAINS_INDEX)
        def index_chain(body: kopf.Body, **_: Any) -> dict[Any, ChainEntry]:
            entry = ChainEntry.from_body(body)
            return {entry.namespace: entry}

        @kopf.index("v1", "pods", registry=reg, id=PODS_INDEX)
        def index_pod(body: kopf.Body, **_: Any) -> dict[Any, PodInfo]:
            info = pod_info(body)
            keys: dict[Any, PodInfo] = {("ns", info.namespace): info}
            for key, value in info.labels.items():
                keys[("label", info.namespace, key, value)] = info
            return keys

        @kopf.index(*xcs, registry=reg, id=XCS_INDEX)
        def index_xc(body: kopf.Body, **_: Any) -> dict[Any, XcEntry]:
            entry = XcEntry.from_body(body)
            keys: dict[Any, XcEntry] = {("name", entry.namespace, entry.name): entry}
            if entry.chain:
                keys[("chain", entry.namespace, entry.chain)] = entry
            return keys

        @kopf.on.event(*chains, registry=reg)
        async def chain_event(event: kopf.RawEvent, body: kopf.Body, **kwargs: Any) -> None:
            self._bind(kwargs)
            key = _key_of(body)
            if event.get("type") == "DELETED":
                self._forget_chain(key)
                return
            memory = self._memory.get(key)
            stored = body.get("status") or {}
            if memory is not None and not any(stored == s for s in memory.written):
                # not one of this replica's recent writes (even a late echo of one): someone else
                # wrote it, or this replica was paused meanwhile; trust the server
                memory.status = None
            await self.kick(key)

        @kopf.on.event("v1", "pods", registry=reg)
        async def pod_event(event: kopf.RawEvent, body: kopf.Body, **kwargs: Any) -> None:
            self._bind(kwargs)
            affected = self._chains_for_pod_event(_key_of(body), body, event.get("type"))
            await asyncio.gather(*(self.kick(key) for key in sorted(affected)))

        @kopf.on.event(*xcs, registry=reg)
        async def xc_event(event: kopf.RawEvent, body: kopf.Body, **kwargs: Any) -> None:
            self._bind(kwargs)
            key = _key_of(body)
            namespace = key[0]
            written = self._written_xc.get(key)
            if event.get("type") == "DELETED" or (
                written is not None and written != (body.get("spec") or {})
            ):
                self._written_xc.pop(key, None)  # changed by someone else: trust the index
            if event.get("type") == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
                self._deleted_xc.discard(key)  # the index shows the deletion from now on
            chain = (body.get("metadata", {}).get("labels") or {}).get(CHAIN_LABEL)
            if chain and self._chain_entry((namespace, chain)) is not None:
                await self.kick((namespace, chain))

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
            except KubeApiError as err:
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

    # -- index lookups ---------------------------------------------------------------------------
    def _chain_entry(self, key: ChainKey) -> ChainEntry | None:
        if self._chains_idx is None:
            return None
        namespace, name = key
        return next((c for c in self._chains_idx.get(namespace, ()) if c.name == name), None)

    def _chains_in(self, namespace: str) -> Collection[ChainEntry]:
        if self._chains_idx is None:
            return ()
        return self._chains_idx.get(namespace, ())

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
                if fn.selector.matches(pod.labels):
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
        self, key: ObjKey, body: Mapping[str, Any], event_type: str | None
    ) -> set[ChainKey]:
        """Chains to reconcile for a pod event: those selecting it now or at their last pass."""
        previous = self._pod_chains.get(key, set())
        if event_type == "DELETED":
            self._pod_seen.pop(key, None)
            self._pod_chains.pop(key, None)
            return set(previous)
        info = pod_info(body)
        if self._pod_seen.get(key) == info:
            return set()  # nothing the controller looks at has changed (e.g. container status)
        self._pod_seen[key] = info
        now = {
            (c.namespace, c.name)
            for c in self._chains_in(info.namespace)
            if c.spec is not None and functions_of(c.spec, info)
        }
        return now | previous

    # -- work queue ------------------------------------------------------------------------------
    async def kick(self, key: ChainKey) -> None:
        """Reconcile ``key`` now, or once more after the reconcile already running for it."""
        if key in self._running:
            self._dirty.add(key)
            return
        self._running.add(key)
        try:
            while True:
                self._dirty.discard(key)
                if not await self._reconcile_guarded(key) or key not in self._dirty:
                    break
        finally:
            self._running.discard(key)

    async def _reconcile_guarded(self, key: ChainKey) -> bool:
        memory = self._memory.setdefault(key, _ChainMemory())
        try:
            await self.reconcile(key)
        except KubeApiError as err:
            self._schedule_retry(key, memory, err)
            return False
        memory.attempts = 0
        return True

    def _schedule_retry(self, key: ChainKey, memory: _ChainMemory, err: KubeApiError) -> None:
        memory.attempts += 1
        delay = min(
            self.config.retry_delay * 2 ** (memory.attempts - 1), self.config.max_retry_delay
        )
        log.warning(
            f"reconcile of chain {key[0]}/{key[1]} failed, retrying in {delay:.1f}s: {err}",
            extra={"chain": f"{key[0]}/{key[1]}", "attempt": memory.attempts},
        )
        self.stats["retry"] += 1
        if memory.retry is None or memory.retry.done():
            memory.retry = asyncio.create_task(self._retry_later(key, delay))

    async def _retry_later(self, key: ChainKey, delay: float) -> None:
        await asyncio.sleep(delay)
        memory = self._memory.get(key)
        if memory is not None:
            memory.retry = None
            await self.kick(key)

    def _forget_chain(self, key: ChainKey) -> None:
        memory = self._memory.pop(key, None)
        if memory is not None and memory.retry is not None:
            memory.retry.cancel()
        if memory is not None and memory.writer is not None:
            memory.writer.cancel()
        for pod in memory.pods if memory else ():
            self._pod_chains.get(pod, set()).discard(key)
        # chains that left a contested interface to this one may take it now
        for other in sorted(self._sharing(key, memory.pods if memory else ())):
            self._kick_soon(other)
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
        previous = memory.pending[1] if memory.pending else (memory.status or entry.status)
        if memory.announced_ready is None:
            ready = get_condition(previous.get("conditions") or [], ConditionType.READY)
            memory.announced_ready = bool(ready and ready.get("status") == "True")
        if entry.error is not None or entry.spec is None:
            assert entry.error is not None
            status = invalid_chain_status(
                entry.error,
                generation=entry.generation,
                previous=cast(ChainStatusBody, dict(previous)) or None,
            )
            self._queue_status(key, entry, status, memory)
            return

        chain = entry.spec
        pods = self._pods_of(chain)
        sharing_before = self._sharing(key, memory.pods)
        self._remember_pods(key, memory, pods)
        claimed = interface_conflicts(chain, pods, self._contenders(chain, pods))
        specs = compute_links(chain, pods, exclude=claimed)
        programming: dict[str, LinkProgramming] = {}
        conflicts: list[str] = []
        wanted: set[str] = set()
        for spec in specs:
            body = cross_connection_body(chain, spec)
            name = body["metadata"]["name"]
            wanted.add(name)
            existing = self._xc_entry(chain.namespace, name)
            conflict = await self._apply_xc(entry, body, existing)
            if conflict:
                conflicts.append(conflict)
            elif existing is None or existing.spec != body["spec"]:
                # the agents have not seen this endpoint set yet
                programming[spec.link] = LinkProgramming(waiting=tuple(sorted(spec.nodes)))
            else:
                programming[spec.link] = existing.programming()
        for stale in self._xcs_of_chain(chain.namespace, chain.name):
            if (
                stale.name not in wanted
                and stale.owner_uid in (chain.uid, None)
                and not stale.deleting  # deleted already, agents still hold their finalizers
                and (stale.namespace, stale.name) not in self._deleted_xc
            ):
                await self._delete_xc(entry, stale.name)

        status = compute_chain_status(
            chain,
            pods,
            links=specs,
            programming=programming if self.config.require_programmed else None,
            conflicts=conflicts,
            interface_conflicts=claimed,
            previous=cast(ChainStatusBody, dict(previous)) or None,
        )
        self._queue_status(key, entry, status, memory)
        if memory.generation != chain.generation:
            # a new spec may take or release pod interfaces other chains contend for
            memory.generation = chain.generation
            for other in sorted(sharing_before | self._sharing(key, memory.pods)):
                self._kick_soon(other)

    def _sharing(self, key: ChainKey, pods: Iterable[ObjKey]) -> set[ChainKey]:
        """Other chains that selected one of ``pods`` at their last reconcile."""
        found: set[ChainKey] = set()
        for pod in pods:
            found |= self._pod_chains.get(pod, set())
        found.discard(key)
        return found

    def _contenders(self, chain: ChainSpec, pods: list[PodInfo]) -> list[ChainSpec]:
        """Other chains of the namespace that may select one of ``pods`` (a cheap pre-filter on
        each function's first matchLabels pair; ``interface_conflicts`` decides)."""
        pairs = {item for pod in pods for item in pod.labels.items()}
        contenders = []
        for entry in self._chains_in(chain.namespace):
            other = entry.spec
            if other is None or other.name == chain.name or other.seniority > chain.seniority:
                continue
            if any(
                not fn.selector.match_labels or fn.selector.match_labels[0] in pairs
                for fn in other.functions
            ):
                contenders.append(other)
        return contenders

    def _kick_soon(self, key: ChainKey) -> None:
        """Reconcile ``key`` in the background (from within a reconcile of another chain)."""
        memory = self._memory.setdefault(key, _ChainMemory())
        if memory.retry is None or memory.retry.done():
            memory.retry = asyncio.create_task(self._retry_later(key, 0))

    def _remember_pods(self, key: ChainKey, memory: _ChainMemory, pods: list[PodInfo]) -> None:
        """Record which pods the chain selects, so that a pod leaving it kicks it."""
        current = {p.key for p in pods}
        for pod in memory.pods - current:
            self._pod_chains.get(pod, set()).discard(key)
        for pod in current - memory.pods:
            self._pod_chains.setdefault(pod, set()).add(key)
        memory.pods = current

    async def _apply_xc(
        self, entry: ChainEntry, body: CrossConnectionBody, existing: XcEntry | None
    ) -> str | None:
        """Create or patch one CrossConnection; returns a conflict message instead of acting
        on an object that belongs to another chain."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        key = (namespace, name)
        collection = object_path(GROUP, VERSION, XC_PLURAL, namespace)
        path = object_path(GROUP, VERSION, XC_PLURAL, namespace, name=name)
        desired = body["spec"]
        if existing is None and key not in self._written_xc:
            try:
                await self._client.create(collection, body)
            except KubeApiError as err:
                if err.status != 409:
                    return self._refused(name, err)
                existing = XcEntry.from_body(await self._client.get(path))
            else:
                self._written_xc[key] = desired
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
                return None
        if existing is not None and existing.chain not in (None, entry.name):
            return (
                f"CrossConnection {name!r} already exists for chain {existing.chain!r}; "
                "rename this chain or the link"
            )
        current = self._written_xc.get(key, existing.spec if existing else None)
        owned = existing is None or (
            existing.owner_uid == entry.uid
            and existing.labels.get(CHAIN_LABEL) == entry.name
            and existing.labels.get(LINK_LABEL) == desired["link"]
        )
        if current == desired and owned:
            return None
        patch: dict[str, Any] = {"spec": {**desired, "dataplane": desired.get("dataplane")}}
        if not owned:
            patch["metadata"] = {
                "labels": meta["labels"],
                "ownerReferences": meta["ownerReferences"],
            }
        try:
            await self._client.merge_patch(path, patch)
        except KubeApiError as err:
            if err.status == 404:  # deleted meanwhile: create it again on the next pass
                self._written_xc.pop(key, None)
                raise
            return self._refused(name, err)
        self._written_xc[key] = desired
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
        return None

    def _refused(self, name: str, err: KubeApiError) -> str:
        if err.retryable:
            raise err
        return f"the API server refused CrossConnection {name!r}: {err.reason}: {err.detail}"

    async def _delete_xc(self, entry: ChainEntry, name: str) -> None:
        path = object_path(GROUP, VERSION, XC_PLURAL, entry.namespace, name=name)
        self._written_xc.pop((entry.namespace, name), None)
        try:
            await self._client.delete(path)
        except KubeApiError as err:
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

    def _queue_status(
        self, key: ChainKey, entry: ChainEntry, status: ChainStatusBody, memory: _ChainMemory
    ) -> None:
        """Hand ``status`` to the chain's status writer. A status write is slow on servers that
        evaluate the chain's CEL rules on every write; the next CrossConnection update of the
        chain must not wait for it. Successive statuses coalesce: only the last one is written."""
        memory.pending = (entry, status)
        if memory.writer is None or memory.writer.done():
            memory.writer = asyncio.create_task(self._status_writer(key, memory))

    async def _status_writer(self, key: ChainKey, memory: _ChainMemory) -> None:
        while memory.pending is not None:
            async with self._status_slots:  # leave connections to the CrossConnection writes
                entry, status = memory.pending or (None, None)
                memory.pending = None
                if entry is None or status is None:
                    return
                try:
                    await self._write_status(entry, status, memory)
                except KubeApiError as err:
                    self._schedule_retry(key, memory, err)
                    return

    async def _write_status(
        self, entry: ChainEntry, status: ChainStatusBody, memory: _ChainMemory
    ) -> None:
        stored: Mapping[str, Any] = memory.status or entry.status
        if _same_status(stored, status):
            memory.status = status
            if not memory.written or memory.written[-1] != status:
                memory.written.append(status)
            return
        body: dict[str, Any] = dict(status)
        for field_name in ("functions", "links"):  # merge patch: removed keys must be nulled
            gone = set(entry.status.get(field_name) or {}) | set(stored.get(field_name) or {})
            gone -= set(body.get(field_name) or {})
            if gone:
                body[field_name] = {**body.get(field_name, {}), **dict.fromkeys(gone)}
        for key in set(entry.status) | set(stored):
            body.setdefault(key, None)
        path = object_path(
            GROUP, VERSION, CHAIN_PLURAL, entry.namespace, name=entry.name, subresource="status"
        )
        try:
            await self._client.merge_patch(path, {"status": body})
        except KubeApiError as err:
            if err.status == 404:  # the chain is gone; its deletion event cleans up
                return
            raise
        self.stats["status_patch"] += 1
        self._announce(entry, stored.get("conditions") or [], status["conditions"], memory)
        memory.status = status
        memory.written.append(status)

    def _announce(
        self,
        entry: ChainEntry,
        old: list[ConditionBody],
        new: list[ConditionBody],
        memory: _ChainMemory,
    ) -> None:
        """Kubernetes events for meaningful transitions; routine re-programming stays quiet."""
        ref = entry.reference()
        before = get_condition(old, ConditionType.DEGRADED)
        after = get_condition(new, ConditionType.DEGRADED)
        if after is not None and after.get("status") == "True":
            if before is None or (before.get("status"), before.get("reason")) != (
                "True",
                after.get("reason"),
            ):
                kopf.warn(ref, reason=after.get("reason", ""), message=after.get("message", ""))
                self.stats["event"] += 1
        elif before is not None and before.get("status") == "True":
            kopf.info(ref, reason="Recovered", message="the chain has no problem any more")
            self.stats["event"] += 1
        ready = get_condition(new, ConditionType.READY)
        if ready is None:
            return
        is_ready = ready.get("status") == "True"
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


def _key_of(body: Mapping[str, Any]) -> ObjKey:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _same_status(stored: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Equal apart from condition timestamps (set_condition keeps them when nothing changed)."""
    return dict(stored) == dict(new)


def run(config: ControllerConfig) -> int:
    """Run the controller until SIGINT/SIGTERM (``sfc-k8s controller``)."""
    controller = Controller(config)
    kopf.run(**controller.run_kwargs())
    log.info("controller exited", extra={"stats": dict(controller.stats)})
    return 0


__all__ = ["ChainEntry", "Controller", "XcEntry", "run"]
