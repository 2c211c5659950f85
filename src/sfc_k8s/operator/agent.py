"""The sfc-k8s node agent: keeps this node's data plane equal to the CrossConnections' endpoints.

Run once per node (a DaemonSet; in the local cluster, one process per emulated node, inside the
node's network namespace) as ``sfc-k8s agent --node NODE``; ``sfc_k8s.operator.cli`` dispatches
to ``main``. Tests and benchmarks build a ``NodeAgent`` and run its ``registry``/``settings``
with ``kopf.testing.KopfRunner``.

For every CrossConnection (xc) with endpoints on this node, the agent programs one data-plane
link named ``agent_reconcile.link_name(namespace, name)`` holding the endpoints whose ``node`` is
this node, by host interface, and (with a tunnel, the default of the command line) the link's
endpoints on the other usable nodes, by node address and id (``desired_endpoints``): active ones
get new flows, draining ones keep their sessions only, gone ones are removed (sessions purged).
The handlers are thin: parse, ``agent_reconcile.plan`` (pure, unit-tested), apply, report.
Design points:

- Several agents share every xc, so each one keeps its Kopf state under its own keys: its own
  annotation prefix (``<node>.agent.sfc-k8s.io``) and its own finalizer
  (``sfc-k8s.io/agent-<node>``), added only to xcs that have endpoints (or a link) on its node.
  Its change detection tracks only links it carries (their endpoints and cluster id) plus the
  generation, so a change to another link costs it no data-plane work, only a status refresh.
- Nodes (with a tunnel): watched for their address (InternalIP or the tunnel-address
  annotation) and readiness; a node that stops being usable, or becomes usable again, re-plans
  the links with endpoints on it at once, without waiting for the controller.
- Status: ``status.nodes.<node>`` = programmedEndpoints, observedGeneration, ready, message,
  conditions (InterfacesFitTunnel=False while local interfaces exceed the tunnel's MTU),
  lastUpdate (a JSON merge patch touches only this node's key), written only when it changes.
- A host interface that does not exist: every endpoint that can be programmed already is, and
  the agent reads the endpoint's pod to tell "not yet" (the veth is still being created:
  retried with ``kopf.TemporaryError`` after ``retry_delay``, doubling up to
  ``max_retry_delay``) from "never" (the pod's network-status, or its long readiness, says it
  has no such interface: reported by pod and interface, re-checked every ``max_retry_delay``).
- Restart: ``Dataplane`` adopts the pinned programs and maps (traffic never stops), and the
  resume handlers apply only the difference. Links that no xc explains any more (deleted while
  the agent was down, or with its finalizer forcibly removed) are garbage-collected after a
  fresh list of the xcs, at startup and every ``gc_interval``; only links shaped like agent links
  under the agent's own bpffs root are considered.
- Interfaces: every sfc-cni host interface of the node gets the program when it appears and
  loses its pin when it goes (``agent_ifaces.InterfaceWatch``, rtnetlink events), so links only
  write maps; on from the command line (off with ``--no-attach-interfaces``), off by default
  in ``AgentConfig`` (tests run several nodes' agents in one namespace). An interface made
  again under the same name (the pod's sandbox re-created, as when its node restarts; the
  CrossConnection does not change) re-plans the links that name it as it appears, and every
  plan re-adds an endpoint programmed on an interface that is not the one of that name any
  more (``LinkEndpoint.defunct``), so peers never keep sending to a deleted ifindex.
- Every data-plane change runs on the operator's event loop (micro- to milliseconds each), so
  handlers and garbage collection never change the maps concurrently. The periodic reads that
  grow with the node (the traffic sampler every second, a ``/metrics`` scrape) run in worker
  threads: on the loop they held every reconcile queued behind them (p99 of a pod Ready ->
  programmed over 2 s with 500 chains). They read node-wide maps only, in batch walks, and
  the agent's own tables through references the loop replaces rather than changes
  (``_pods``). A reconcile reads only what it plans from: endpoints, no counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf

from sfc_k8s.api import (
    GROUP,
    VERSION,
    XC_PLURAL,
    CrossConnectionInvalid,
    CrossConnectionSpec,
    EndpointState,
    Side,
    now_rfc3339,
    parse_cross_connection,
)
from sfc_k8s.api.crossconnection import MTU_CONDITION
from sfc_k8s.api.nodes import (
    TUNNEL_ADDRESS_ANNOTATION,
    NodeView,
    agent_finalizer,
    node_view,
)
from sfc_k8s.dataplane import (
    DEFAULT_BPFFS_ROOT,
    SESSIONS_DEFAULT,
    CapacityError,
    Dataplane,
    DataplaneError,
    Endpoint,
    EndpointNotFound,
    EndpointSpec,
    InterfaceNotFound,
    LinkNotFound,
    kernel,
    maglev,
)
from sfc_k8s.dataplane import tunnel as dp_tunnel
from sfc_k8s.dataplane.records import TunnelStatus
from sfc_k8s.naming import is_host_ifname
from sfc_k8s.operator import agent_cni
from sfc_k8s.operator.agent_ifaces import InterfaceWatch
from sfc_k8s.operator.agent_metrics import AgentMetrics, LinkSample
from sfc_k8s.operator.agent_reconcile import (
    ActivateEndpoint,
    AddEndpoint,
    CreateLink,
    DeleteLink,
    DrainEndpoint,
    LinkEndpoint,
    Operation,
    RemoveEndpoint,
    absent_interface,
    after_operation,
    annotation_prefix,
    desired_endpoints,
    desired_projection,
    expire_drains,
    link_name,
    plan,
    retry_delay,
    stale_links,
)
from sfc_k8s.operator.agent_traffic import AgentTraffic, PodTrafficCollector
from sfc_k8s.operator.kube import (
    ApiError,
    KubeClient,
    object_path,
)
from sfc_k8s.operator.pod_traffic import DEFAULT_WINDOW, EndpointReading, PodRef
from sfc_k8s.operator.settings import SettingsError, configure_logging, connection_info

logger = logging.getLogger(__name__)

XC_RESOURCE = (GROUP, VERSION, XC_PLURAL)
DRAIN_CHECK_INTERVAL = 1.0  # seconds between drain-timeout checks of an xc that drains


@dataclass(frozen=True)
class AgentConfig:
    """What one agent runs with; ``main`` fills it from flags and environment."""

    node: str
    kubeconfig: str | None = None
    bpffs_root: str = DEFAULT_BPFFS_ROOT
    session_table_size: int = SESSIONS_DEFAULT  # applies when the data plane is first loaded
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    retry_delay: float = 1.0  # interface not created yet: first retry, then doubling...
    max_retry_delay: float = 30.0  # ...up to this; also the pace of an interface never coming
    interface_grace: float = 30.0  # a Ready pod without network-status has its interfaces by then
    conflict_delay: float = 5.0  # interface held by another link, capacity, other data-plane errors
    gc_interval: float = 300.0
    # The tunnel to other nodes: None runs the agent single-node (local endpoints only, no
    # device; tests in shared namespaces); the command line defaults to the data plane's port.
    tunnel_port: int | None = None
    # The tunnel device's MTU, also set on a device an earlier agent left (0: leave the device's)
    tunnel_mtu: int = dp_tunnel.mtu_for(dp_tunnel.DEFAULT_UNDERLAY_MTU)
    tunnel_address: str = ""  # published on this node's Node (a dedicated data NIC)
    log_format: str = "json"  # json | plain | full (main() configures logging with it)
    verbose: bool = False
    debug: bool = False
    # main() refuses to start without the C Maglev builder (the image sets it: a missing
    # library there is a build fault; in a checkout the pure-Python builder is a fallback)
    require_native_maglev: bool = False
    kernel_check: bool = True  # main() probes the kernel's features first
    cni_server: agent_cni.CniServerOptions | None = None  # serve the sfc-cni shim (docs/cni.md)
    traffic_window: float = DEFAULT_WINDOW  # seconds the per-pod traffic rates average over
    # The program on every sfc-cni host interface as it appears (docs/dataplane.md). The
    # command line turns it on; off here for agents built in-process by tests that emulate
    # several nodes in one network namespace, where every node's interfaces are visible.
    attach_interfaces: bool = False
    attach_only: frozenset[str] | None = None  # those interfaces only (None: every sfc-cni one)


class _NodeDiffBase(kopf.AnnotationsDiffBaseStorage):
    """Kopf change detection on this node's endpoints and the generation only."""

    def __init__(self, node: str) -> None:
        super().__init__(prefix=annotation_prefix(node), key="last-handled-configuration")
        self._node = node

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        essence = desired_projection(body.get("spec") or {}, self._node)
        essence["generation"] = body.get("metadata", {}).get("generation")
        return essence  # type: ignore[return-value]


@dataclass
class _Outcome:
    waiting: list[str] = field(default_factory=list)  # interfaces that do not exist yet
    failures: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    endpoints: list[LinkEndpoint] | None = None  # the link's endpoints afterwards (None: no link)
    replaced: set[str] = field(default_factory=set)  # programmed on interfaces that went

    def count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1


class NodeAgent:
    """One node's agent: a Kopf registry and settings, plus the data plane they drive."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.registry = kopf.OperatorRegistry()
        self.settings = self._make_settings()
        self.traffic = AgentTraffic(
            config.node,
            self._endpoint_readings,
            self._endpoint_sessions,
            window=config.traffic_window,
        )
        self.metrics = AgentMetrics(self._link_samples, add_routes=self.traffic.add_routes)
        self.metrics.registry.register(
            PodTrafficCollector(self._endpoint_readings, self._endpoint_sessions)
        )
        self._dp: Dataplane | None = None
        self.interfaces: InterfaceWatch | None = None
        self._tunnel: TunnelStatus | None = None  # as set up at start (tunnel() runs `ip`)
        self._connection: kopf.ConnectionInfo | None = None
        self._links: dict[str, tuple[str, str]] = {}  # link -> (namespace, xc name) or ("", "")
        self._drained_at: dict[str, dict[str, float]] = {}  # link -> endpoint key -> monotonic
        # Multi-node (with a tunnel only): every Node as last seen (None: not listed yet), the
        # cluster id of each programmed link, and the parsed spec of each link this agent
        # programs, so that a node's loss or return re-plans its links at once.
        self._nodes: dict[str, NodeView] | None = None
        self._cluster_ids: dict[str, int] = {}
        self._specs: dict[str, tuple[str, str, CrossConnectionSpec]] = {}
        # The local pods of each programmed link by host interface, for the traffic sampler's
        # worker thread: replaced, never changed in place, so the thread's one read of the
        # reference is a consistent snapshot while the loop reconciles.
        self._pods: Mapping[str, Mapping[str, PodRef]] = {}
        self._gc_task: asyncio.Task[None] | None = None
        self._adopted: dict[str, list[Endpoint]] = {}  # pinned links' endpoints read at start
        self._listed = False  # the CrossConnections were listed once (API reachable, RBAC right)
        self._kube: KubeClient | None = None  # reads pods whose interfaces are missing
        # Called after each applied operation with the time.monotonic() it started and ended
        # (benchmarks time reactions with it, without polling the maps); quick, never raising.
        self.observers: list[Callable[[Operation, float, float], None]] = []
        self._register()

    # -- wiring ------------------------------------------------------------------------------
    def _make_settings(self) -> kopf.OperatorSettings:
        node = self.config.node
        settings = kopf.OperatorSettings()
        settings.peering.standalone = True  # every node acts; there is nothing to elect
        settings.scanning.disabled = True  # one fixed resource: no CRD/namespace discovery watch
        settings.persistence.finalizer = agent_finalizer(node)
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix=annotation_prefix(node)
        )
        settings.persistence.diffbase_storage = _NodeDiffBase(node)
        settings.posting.level = logging.WARNING  # Kubernetes events for problems only
        return settings

    def _register(self) -> None:
        reg = self.registry
        kopf.on.login(registry=reg)(self._login)
        kopf.on.startup(registry=reg)(self._startup)
        kopf.on.cleanup(registry=reg)(self._cleanup)
        concerns = self._concerns
        kopf.on.resume(*XC_RESOURCE, registry=reg, id="resume", when=concerns)(self._program)
        kopf.on.create(*XC_RESOURCE, registry=reg, id="create", when=concerns)(self._program)
        kopf.on.update(*XC_RESOURCE, registry=reg, id="update", when=concerns)(self._program)
        kopf.on.delete(*XC_RESOURCE, registry=reg, id="release", when=concerns)(self._release)
        if self.config.tunnel_port is not None:
            kopf.on.event("", "v1", "nodes", registry=reg, id="nodes")(self._on_node)
        # Drain timeouts (spec.dataplane.drainTimeoutSeconds) expire without any API event:
        # while some local endpoint drains under a timeout, re-run the reconcile every second.
        kopf.timer(
            *XC_RESOURCE,
            registry=reg,
            id="drain-timeout",
            interval=DRAIN_CHECK_INTERVAL,
            when=self._drain_pending,
        )(self._program)

    @property
    def dataplane(self) -> Dataplane:
        if self._dp is None:
            raise RuntimeError("the agent's data plane is opened by its startup handler")
        return self._dp

    # -- activities --------------------------------------------------------------------------
    async def _login(self, **_: Any) -> kopf.ConnectionInfo:
        # Resolved again at every login, so a rotated service-account token is picked up.
        info = connection_info(self.config.kubeconfig)
        self._connection = info
        return info

    async def _startup(self, logger: kopf.Logger, **_: Any) -> None:
        self._dp = Dataplane(
            self.config.bpffs_root, session_table_size=self.config.session_table_size
        )
        for name in self._dp.links():
            self._links.setdefault(name, ("", ""))
        # Every pinned link's endpoints in one read, for each link's first reconcile (the
        # resume pass): a read per link walks the node's endpoint index each time. This
        # agent is the links' only writer, and each entry is used once, before any change.
        self._adopted = self._dp.endpoints_of(list(self._links), counters=False)
        logger.info(
            f"node {self.config.node}: data plane at {self.config.bpffs_root}"
            f" ({self._dp.opened.summary()}), {len(self._links)} pinned link(s)"
        )
        if self.config.attach_interfaces:
            only = self.config.attach_only
            wanted = is_host_ifname if only is None else only.__contains__
            self.interfaces = InterfaceWatch(self._dp, wanted=wanted)
            self.interfaces.observers.append(self._interface_attached)
            self.interfaces.start(asyncio.get_running_loop())
        if self.config.tunnel_port is not None:
            tun = self._dp.ensure_tunnel(port=self.config.tunnel_port, mtu=self.config.tunnel_mtu)
            self._tunnel = tun
            logger.info(f"tunnel {tun.ifname}: UDP port {tun.port}, MTU {tun.mtu}")
        if self.config.metrics_port is not None:
            await self.metrics.start(
                self.config.metrics_host, self.config.metrics_port, not_ready=self.not_ready
            )
        self._gc_task = asyncio.create_task(self._gc_loop(), name="sfc-k8s-agent-gc")
        self.traffic.start()

    async def _cleanup(self, **_: Any) -> None:
        if self._kube is not None:
            await self._kube.close()
            self._kube = None
        if self._gc_task is not None:
            self._gc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gc_task
            self._gc_task = None
        await self.traffic.stop()
        await self.metrics.stop()
        if self.interfaces is not None:
            self.interfaces.stop()  # the pins stay: the interfaces keep their program
            self.interfaces = None
        if self._dp is not None:
            self._dp.close()  # fds only: the pinned state keeps forwarding
            self._dp = None

    def not_ready(self) -> str | None:
        """Why the agent is not ready (the readiness probe's answer), or None when it is."""
        if self._dp is None:
            return "the data plane is not open yet"
        if not self._listed:
            return "the CrossConnections have not been listed yet"
        return None

    # -- CrossConnection handlers ------------------------------------------------------------
    def _concerns(self, *, spec: kopf.Spec, namespace: str | None, name: str, **_: Any) -> bool:
        """Whether this node has endpoints in the xc or still holds a link for it."""
        if link_name(namespace or "", name) in self._links:
            return True
        node = self.config.node
        return any(
            isinstance(ep, Mapping) and ep.get("node") == node
            for side in Side
            for ep in ((spec.get(side) or {}).get("endpoints") or ())
        )

    async def _program(
        self,
        *,
        body: kopf.Body,
        meta: kopf.Meta,
        status: kopf.Status,
        namespace: str | None,
        name: str,
        patch: kopf.Patch,
        logger: kopf.Logger,
        retry: int = 0,
        **_: Any,
    ) -> None:
        started = time.perf_counter()
        namespace = namespace or ""
        link = link_name(namespace, name)
        generation = meta.get("generation")
        try:
            xc = parse_cross_connection(body)
        except CrossConnectionInvalid as err:
            self.metrics.reconcile_errors.labels("invalid").inc()
            self._report(
                patch=patch,
                status=status,
                generation=generation,
                programmed=sum(not ep.remote for ep in self._programmed(link) or ()),
                problem="; ".join(err.problems),
            )
            raise kopf.PermanentError(f"cannot program link {link!r}: {err}") from err
        await self._ensure_nodes()
        wanted = desired_endpoints(xc, self.config.node, self._nodes)
        try:
            ops, outcome = self._converge(link, namespace, name, xc, wanted)
        except DataplaneError as err:
            self.metrics.reconcile_errors.labels("dataplane").inc()
            raise kopf.TemporaryError(
                f"failed to read link {link!r}: {err}", delay=self.config.conflict_delay
            ) from err
        after = outcome.endpoints
        programmed = None if after is None else sum(not ep.remote for ep in after)
        absent, pending = await self._missing(namespace, xc, outcome.waiting, outcome.replaced)
        problem = "; ".join([*outcome.failures, *absent])
        waiting = _waiting_message(pending)
        message = "; ".join(m for m in (problem, waiting) if m)
        if programmed is None and not wanted:
            self._forget(patch, status)
        else:
            self._report(
                patch=patch,
                status=status,
                generation=generation,
                programmed=programmed or 0,
                problem=problem,
                waiting=waiting,
                oversized=self._oversized(link) if after is not None else {},
            )
        self.metrics.reconcile_seconds.observe(time.perf_counter() - started)
        if ops:
            summary = ", ".join(f"{kind} {n}" for kind, n in sorted(outcome.counts.items()))
            logger.info(f"link {link}: {summary or 'no change'}; {programmed or 0} programmed")
        if outcome.failures:
            self.metrics.reconcile_errors.labels("dataplane").inc()
            raise kopf.TemporaryError(message, delay=self.config.conflict_delay)
        if pending:  # not there yet: back off, from --retry-delay up to --max-retry-delay
            self.metrics.reconcile_errors.labels("interface_missing").inc()
            first, cap = self.config.retry_delay, self.config.max_retry_delay
            raise kopf.TemporaryError(message, delay=retry_delay(retry, first=first, cap=cap))
        if absent:  # never coming: look again now and then (the pod could still be replaced)
            self.metrics.reconcile_errors.labels("pod_lacks_interface").inc()
            raise kopf.TemporaryError(message, delay=self.config.max_retry_delay)

    def _converge(
        self,
        link: str,
        namespace: str,
        name: str,
        xc: CrossConnectionSpec,
        wanted: Mapping[str, LinkEndpoint],
    ) -> tuple[list[Operation], _Outcome]:
        """Plan and apply: bring ``link`` to ``wanted`` (drain timeouts applied); remembers the
        spec so that node changes can re-plan the link. Raises ``DataplaneError`` if the link
        cannot be read."""
        current = self._programmed(link)
        now = time.monotonic()
        drained_at = self._track_drains(link, current, now)
        desired = expire_drains(wanted, drained_at, now, xc.dataplane.drain_timeout_seconds)[0]
        known_cid = self._cluster_id(link) if current is not None else 0
        ops = plan(
            link, desired, current, cluster_id=xc.cluster_id, programmed_cluster_id=known_cid
        )
        outcome = self._apply(ops, namespace, name, current)
        outcome.replaced = {ep.ifname for ep in current or () if ep.defunct}
        self._track_drains(link, outcome.endpoints, time.monotonic())
        if outcome.endpoints is None:
            self._specs.pop(link, None)
            self._index_pods(link, {})
        else:
            self._specs[link] = (namespace, name, xc)
            self._index_pods(link, self._local_pods(namespace, xc))
        return ops, outcome

    def _local_pods(self, namespace: str, xc: CrossConnectionSpec) -> dict[str, PodRef]:
        """The pod behind each of this node's host interfaces in ``xc``."""
        return {
            ep.host_interface: PodRef(namespace, ep.pod, ep.pod_uid)
            for side in Side
            for ep in xc.side(side).on_node(self.config.node)
        }

    def _index_pods(self, link: str, pods: Mapping[str, PodRef]) -> None:
        """Set the link's entry of ``_pods`` (none when empty) by replacing the mapping."""
        if self._pods.get(link, {}) == pods:
            return  # the usual reconcile: nothing to copy
        index = dict(self._pods)
        if pods:
            index[link] = pods
        else:
            index.pop(link, None)
        self._pods = index

    def _cluster_id(self, link: str) -> int:
        """The cluster id of a programmed link (read once after a restart: a status read)."""
        if link not in self._cluster_ids:  # not status(): that walks the session tables
            self._cluster_ids[link] = self.dataplane.cluster_id(link)
        return self._cluster_ids[link]

    def _oversized(self, link: str) -> dict[str, int]:
        try:
            return self.dataplane.oversized(link, tun=self._tunnel)
        except DataplaneError:
            return {}

    # -- Nodes -------------------------------------------------------------------------------
    async def _ensure_nodes(self) -> None:
        """List the Nodes once before the first link is planned (the watch keeps them fresh
        afterwards): without them every remote endpoint would look lost, and a restarted
        agent would drop the remote endpoints it had pinned."""
        if self.config.tunnel_port is None or self._nodes is not None:
            return
        if self._connection is None:
            raise kopf.TemporaryError("not logged in yet", delay=0.5)
        try:
            async with KubeClient(
                self._connection, user_agent=f"sfc-k8s-agent/{self.config.node}"
            ) as client:
                items = await client.list(object_path("", "v1", "nodes", None))
        except ApiError as err:
            raise kopf.TemporaryError(f"cannot list nodes: {err}", delay=2.0) from err
        if self._nodes is None:  # the watch may have filled it meanwhile: it is newer
            self._nodes = {view.name: view for view in map(node_view, items)}

    async def _on_node(self, event: kopf.RawEvent, logger: kopf.Logger, **_: Any) -> None:
        """A Node changed: when its usability or address changed, re-plan every link that has
        endpoints on it (at once, not at the next CrossConnection event)."""
        body = event.get("object") or {}
        view = node_view(body)
        if not view.name or self._nodes is None:
            # Not listed yet: a map built from the first few events would lack the other
            # nodes, and the first plan would take their endpoints out. The list made before
            # that plan (_ensure_nodes) reads them all; the heartbeats bring later changes.
            return
        before = self._nodes.get(view.name)
        if event.get("type") == "DELETED":
            self._nodes.pop(view.name, None)
            after: NodeView | None = None
        else:
            self._nodes[view.name] = after = view
        if view.name == self.config.node:
            await self._publish_address(body, logger)
        if _reach(before) == _reach(after):
            return
        logger.info(f"node {view.name}: {_describe_node(after)}")
        self._replan(view.name, logger)

    def _replan(self, node: str, logger: kopf.Logger | logging.Logger) -> None:
        """Re-plan the links with endpoints on ``node`` (another node's agent status reports
        are refreshed by the next CrossConnection event)."""
        if node != self.config.node:
            links = [link for link, (_, _, xc) in self._specs.items() if node in xc.nodes]
            self._replan_links(links, f"node {node} changed", logger)

    def _interface_attached(self, ifname: str, ifindex: int, when: float) -> None:
        """A host interface appeared (``InterfaceWatch`` observer): the links with a local
        endpoint on it (``_pods``, by host interface) are re-planned at once. That endpoint
        may be programmed on an interface of the same name that is gone (the pod's sandbox was
        made again, as after its node restarted), which no CrossConnection change corrects."""
        links = [link for link, pods in self._pods.items() if ifname in pods]
        self._replan_links(links, f"interface {ifname} appeared", logger)

    def _replan_links(
        self, links: Iterable[str], reason: str, logger: kopf.Logger | logging.Logger
    ) -> None:
        """Bring ``links`` to their last spec again (their status is refreshed by the next
        CrossConnection event)."""
        for link in sorted(links):
            if link not in self._specs:
                continue  # deleted by an earlier re-plan of this loop
            namespace, name, xc = self._specs[link]
            wanted = desired_endpoints(xc, self.config.node, self._nodes)
            try:
                ops, outcome = self._converge(link, namespace, name, xc, wanted)
            except DataplaneError as err:
                logger.warning(f"link {link}: cannot re-plan after {reason}: {err}")
                continue
            if ops:
                summary = ", ".join(f"{k} {n}" for k, n in sorted(outcome.counts.items()))
                logger.info(f"link {link}: {reason}: {summary or 'no change'}")
            for failure in outcome.failures:
                logger.warning(f"link {link}: {failure}")

    async def _publish_address(self, body: Mapping[str, Any], logger: kopf.Logger) -> None:
        """With ``--tunnel-address``, put it on this node's Node for the other agents."""
        address = self.config.tunnel_address
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        if not address or annotations.get(TUNNEL_ADDRESS_ANNOTATION) == address:
            return
        if self._connection is None:
            return
        path = object_path("", "v1", "nodes", None, name=self.config.node)
        patch = {"metadata": {"annotations": {TUNNEL_ADDRESS_ANNOTATION: address}}}
        try:
            async with KubeClient(
                self._connection, user_agent=f"sfc-k8s-agent/{self.config.node}"
            ) as client:
                await client.merge_patch(path, patch)
        except ApiError as err:
            logger.warning(f"cannot publish tunnel address {address} on node: {err}")

    async def _missing(
        self,
        namespace: str,
        xc: CrossConnectionSpec,
        waiting: Sequence[str],
        coming: Collection[str] = (),
    ) -> tuple[list[str], list[str]]:
        """Sort the host interfaces that do not exist into those the pod will never have (a
        message each, naming the pod and its interface) and those still awaited (described).
        ``coming``: interfaces that were here and went (a sandbox being made again): awaited,
        whatever the pod's network-status (which still describes the old sandbox) says."""
        if not waiting:
            return [], []
        by_host = {
            ep.host_interface: ep for side in Side for ep in xc.side(side).on_node(self.config.node)
        }
        pods: dict[str, Mapping[str, Any] | None] = {}
        now = datetime.datetime.now(datetime.UTC)
        absent: list[str] = []
        pending: list[str] = []
        for ifname in sorted(set(waiting)):
            ep = by_host.get(ifname)
            if ep is None:
                pending.append(ifname)
                continue
            if ifname not in coming:
                if ep.pod not in pods:
                    pods[ep.pod] = await self._read_pod(namespace, ep.pod)
                grace = self.config.interface_grace
                problem = absent_interface(ep, namespace, pods[ep.pod], now=now, grace=grace)
                if problem:
                    absent.append(problem)
                    continue
            pending.append(f"{ep.interface} of {namespace}/{ep.pod} ({ifname})")
        return absent, pending

    async def _read_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The Pod body (None: gone, or unreadable: then nothing is concluded from it)."""
        if self._connection is None:
            return None
        if self._kube is None:
            self._kube = KubeClient(
                self._connection, user_agent=f"sfc-k8s-agent/{self.config.node}"
            )
            await self._kube.open()
        try:
            return await self._kube.get(object_path("", "v1", "pods", namespace, name=name))
        except ApiError as err:
            if err.status != 404:
                logger.warning("cannot read pod %s/%s: %s", namespace, name, err)
            return None

    async def _release(
        self, *, namespace: str | None, name: str, logger: kopf.Logger, **_: Any
    ) -> None:
        link = link_name(namespace or "", name)
        try:
            self.dataplane.delete_link(link)
            self.metrics.operations.labels("delete_link").inc()
            logger.info(f"link {link}: deleted with its sessions")
        except LinkNotFound:
            pass
        except DataplaneError as err:
            self.metrics.reconcile_errors.labels("dataplane").inc()
            raise kopf.TemporaryError(
                f"failed to delete link {link!r}: {err}", delay=self.config.conflict_delay
            ) from err
        self._forget_link(link)

    def _forget_link(self, link: str) -> None:
        self._adopted.pop(link, None)
        self._links.pop(link, None)
        self._specs.pop(link, None)
        self._index_pods(link, {})
        self._cluster_ids.pop(link, None)

    # -- data plane --------------------------------------------------------------------------
    def _programmed(self, link: str) -> list[LinkEndpoint] | None:
        # endpoints(), not status(): status() also walks the node's whole session table; and
        # no counters: the plan reads states, names, ids and ifindexes only.
        try:
            adopted = self._adopted.pop(link, None)
            endpoints = (
                self.dataplane.endpoints(link, counters=False) if adopted is None else adopted
            )
        except LinkNotFound:
            self._forget_link(link)
            return None
        return [
            LinkEndpoint(ep.side, ep.ifname, ep.state, ep.id, ep.node, _defunct(ep))
            for ep in endpoints
        ]

    def _track_drains(
        self, link: str, programmed: Sequence[LinkEndpoint] | None, now: float
    ) -> dict[str, float]:
        """When each endpoint programmed as draining began to drain (first seen, after a
        restart); forgets endpoints no longer draining. Returns the link's marks."""
        if programmed is None:
            self._drained_at.pop(link, None)
            return {}
        previous = self._drained_at.get(link, {})
        marks = {
            ep.key: previous.get(ep.key, now)
            for ep in programmed
            if ep.mode is EndpointState.DRAINING
        }
        if marks:
            self._drained_at[link] = marks
        else:
            self._drained_at.pop(link, None)
        return marks

    def _drain_pending(self, *, spec: kopf.Spec, **_: Any) -> bool:
        """Whether the xc has a drain timeout and draining endpoints on this node."""
        if (spec.get("dataplane") or {}).get("drainTimeoutSeconds") is None:
            return False
        node = self.config.node
        return any(
            isinstance(ep, Mapping)
            and ep.get("node") == node
            and ep.get("state") == EndpointState.DRAINING
            for side in Side
            for ep in ((spec.get(side) or {}).get("endpoints") or ())
        )

    def _apply(
        self,
        ops: Sequence[Operation],
        namespace: str,
        name: str,
        current: Sequence[LinkEndpoint] | None,
    ) -> _Outcome:
        outcome = _Outcome()
        state = None if current is None else {ep.ifname: ep for ep in current}
        for op in ops:
            op_started = time.monotonic()
            try:
                kind, skipped = self._run(op)
            except InterfaceNotFound:
                if isinstance(op, AddEndpoint):
                    outcome.waiting.append(op.ifname)
                    continue
                outcome.failures.append(f"{_describe(op)}: interface not found")
                continue
            except (CapacityError, DataplaneError) as err:
                outcome.failures.append(f"{_describe(op)}: {err}")
                if isinstance(op, CreateLink):
                    break  # the endpoint operations would all fail on the missing link
                continue
            outcome.waiting += skipped
            state = after_operation(state, op, skipped=skipped)
            if isinstance(op, DeleteLink):
                self._forget_link(op.link)
            else:
                self._links[op.link] = (namespace, name)
            if isinstance(op, CreateLink):
                self._cluster_ids.pop(op.link, None)  # read back when needed
            self.metrics.operations.labels(kind).inc()
            outcome.count(kind)
            if self.observers:
                now = time.monotonic()
                for observer in self.observers:
                    observer(op, op_started, now)
        outcome.endpoints = None if state is None else list(state.values())
        return outcome

    def _run(self, op: Operation) -> tuple[str, list[str]]:
        """One data-plane call: the operation's kind, and the interfaces a ``CreateLink`` left
        out because they do not exist."""
        dp = self.dataplane
        match op:
            case CreateLink():
                return "create_link", self._create_link(op)
            case DeleteLink(link=link):
                with contextlib.suppress(LinkNotFound):
                    dp.delete_link(link)
                return "delete_link", []
            case AddEndpoint(link=link, side=side, ifname=ifname, id=ident, node=node):
                dp.add_endpoint(link, side, ifname, node=node, endpoint_id=ident)
                return "add_endpoint", []
            case ActivateEndpoint(link=link, side=side, ifname=ifname, id=ident):
                dp.activate_endpoint(link, side, ifname, endpoint_id=0 if ifname else ident)
                return "activate_endpoint", []
            case DrainEndpoint(link=link, side=side, ifname=ifname, id=ident):
                dp.drain_endpoint(link, side, ifname, endpoint_id=0 if ifname else ident)
                return "drain_endpoint", []
            case RemoveEndpoint(link=link, side=side, ifname=ifname, id=ident):
                with contextlib.suppress(EndpointNotFound):
                    dp.remove_endpoint(link, side, ifname, endpoint_id=0 if ifname else ident)
                return "remove_endpoint", []

    def _create_link(self, op: CreateLink) -> list[str]:
        """Create the link with its remote endpoints and the local ones whose interface
        exists; returns the keys (interfaces) of the missing ones."""
        sides = (op.side_a, op.side_b)
        present = [
            [ep for ep in side if ep.remote or _interface_exists(ep.ifname)] for side in sides
        ]
        missing = [
            ep.key
            for side, kept in zip(sides, present, strict=True)
            for ep in side
            if ep not in kept
        ]
        specs = [[_spec(ep) for ep in kept] for kept in present]
        try:
            self.dataplane.create_link(
                op.link, side_a=specs[0], side_b=specs[1], cluster_id=op.cluster_id
            )
        except InterfaceNotFound:  # one vanished meanwhile: start with the remote ones only
            remote = [[_spec(ep) for ep in side if ep.remote] for side in sides]
            self.dataplane.create_link(
                op.link, side_a=remote[0], side_b=remote[1], cluster_id=op.cluster_id
            )
            return [ep.key for side in sides for ep in side if not ep.remote]
        return missing

    def _link_samples(self) -> Iterator[LinkSample]:
        """Every link's status, for a metrics scrape (rendered in a worker thread)."""
        dp = self._dp
        if dp is None:
            return
        for status in dp.statuses():  # one walk of each node-wide map for every link
            namespace, name = self._links.get(status.name, ("", ""))
            yield LinkSample(namespace, name, status)

    def _endpoint_sessions(self) -> Mapping[str, int]:
        """Live sessions per local host interface (one walk of the session tables; AgentTraffic
        runs it in a worker thread)."""
        dp = self._dp
        return dp.endpoint_sessions() if dp is not None else {}

    def _endpoint_readings(self, live: Mapping[str, int]) -> list[EndpointReading]:
        """The counters of every programmed local endpoint whose pod an xc names, for the
        traffic rates, with ``live`` sessions per host interface (``_endpoint_sessions``).
        Runs in a worker thread: one batch read of every local endpoint's counters (a read
        per link walked the node's endpoint index and looked each counter up: seconds per
        sample with a thousand links), joined with the ``_pods`` snapshot."""
        dp = self._dp
        if dp is None:
            return []
        pods_by_link = self._pods  # one read: the loop replaces it, never changes it
        counters = dp.local_counters()
        readings = []
        for link, pods in pods_by_link.items():
            for ifname, pod in pods.items():
                c = counters.get(ifname)
                if c is not None:  # None: not programmed (yet, or any more)
                    readings.append(
                        EndpointReading(
                            f"{link}/{ifname}", pod, c.tx_packets, c.tx_bytes, live.get(ifname, 0)
                        )
                    )
        return readings

    # -- status ------------------------------------------------------------------------------
    def _report(
        self,
        *,
        patch: kopf.Patch,
        status: Mapping[str, Any],
        generation: int | None,
        programmed: int,
        problem: str,
        waiting: str = "",
        oversized: Mapping[str, int] | None = None,
    ) -> None:
        """Write this node's entry: ``problem`` needs a person (the controller calls the chain
        Degraded); ``waiting`` is transient (interfaces not created yet: not programmed yet)."""
        entry: dict[str, Any] = {
            "programmedEndpoints": programmed,
            "observedGeneration": generation,
            "ready": not problem and not waiting,
            "message": problem,
            "waiting": waiting or None,
            # None: a merge patch removes a condition that no longer holds
            "conditions": mtu_conditions(oversized, self._tunnel_mtu()) if oversized else None,
        }
        current = (status.get("nodes") or {}).get(self.config.node) or {}
        if all(current.get(key) == value for key, value in entry.items()):
            return  # unchanged: no write, no event for every other watcher
        entry["lastUpdate"] = now_rfc3339(micro=True)
        patch.status["nodes"] = {self.config.node: entry}

    def _tunnel_mtu(self) -> int:
        tun = self._tunnel or self.dataplane.tunnel()
        return tun.mtu if tun is not None else 0

    def _forget(self, patch: kopf.Patch, status: Mapping[str, Any]) -> None:
        if self.config.node in (status.get("nodes") or {}):
            patch.status["nodes"] = {self.config.node: None}  # merge patch: remove the key

    # -- garbage collection ------------------------------------------------------------------
    async def _gc_loop(self) -> None:
        while True:
            delay = self.config.gc_interval
            try:
                removed = await self.collect_garbage()
                if removed:
                    logger.info("removed %d stale link(s): %s", len(removed), ", ".join(removed))
            except ApiError as err:
                logger.warning("garbage collection of stale links skipped: %s", err)
                delay = min(delay, 10.0)
            await asyncio.sleep(delay)

    async def _list_cross_connections(self, info: kopf.ConnectionInfo) -> list[tuple[str, str]]:
        """(namespace, name) of every CrossConnection the agent watches."""
        scopes: Sequence[str | None] = self.config.namespaces or (None,)
        paths = [object_path(GROUP, VERSION, XC_PLURAL, namespace) for namespace in scopes]
        found: list[tuple[str, str]] = []
        async with KubeClient(info, user_agent=f"sfc-k8s-agent/{self.config.node}") as client:
            for path in paths:
                for item in await client.list(path):
                    meta = item.get("metadata") or {}
                    found.append((str(meta.get("namespace")), str(meta.get("name"))))
        return found

    async def collect_garbage(self) -> list[str]:
        """Delete pinned agent links that no CrossConnection explains; returns their names."""
        while self._connection is None:  # Kopf logs in right after the startup handlers
            await asyncio.sleep(0.05)
        pinned = self.dataplane.links()  # before the list: links created later are never stale
        wanted = {
            link_name(namespace, name)
            for namespace, name in await self._list_cross_connections(self._connection)
        }
        self._listed = True
        removed = []
        for link in stale_links(pinned, wanted, namespaces=self.config.namespaces or None):
            try:
                self.dataplane.delete_link(link)
                self.metrics.operations.labels("delete_link").inc()
                removed.append(link)
            except LinkNotFound:
                pass
            self._links.pop(link, None)
            self._adopted.pop(link, None)
        return removed


def mtu_conditions(oversized: Mapping[str, int], tunnel_mtu: int) -> list[dict[str, str]]:
    """The node's condition on a link whose local interfaces are larger than the tunnel: their
    full-size frames to other nodes are dropped (counted as TOO_BIG), never delivered."""
    listed = ", ".join(f"{ifname} ({mtu})" for ifname, mtu in sorted(oversized.items()))
    return [
        {
            "type": MTU_CONDITION,
            "status": "False",
            "reason": "MTUTooLarge",
            "message": (
                f"interface(s) {listed} have a larger MTU than the tunnel's {tunnel_mtu}: frames"
                " over it to other nodes are dropped; give the network's sfc-cni an mtu of at"
                f" most {tunnel_mtu}"
            ),
        }
    ]


def _spec(ep: LinkEndpoint) -> EndpointSpec:
    """The data plane's description of an endpoint to add."""
    return EndpointSpec(ifname=ep.ifname, node=ep.node, id=ep.id)


def _defunct(ep: Endpoint) -> bool:
    """Whether a programmed local endpoint's interface is gone or is another one of the same
    name now (one ioctl: every reconcile asks it of the link's local endpoints)."""
    if ep.node or not ep.ifindex or not ep.ifname:
        return False
    try:
        return socket.if_nametoindex(ep.ifname) != ep.ifindex
    except OSError:
        return True


def _reach(view: NodeView | None) -> tuple[bool, str]:
    """What of a Node matters to the other agents' tables: usable, and at which address."""
    return (False, "") if view is None else (view.usable, view.address)


def _describe_node(view: NodeView | None) -> str:
    if view is None:
        return "deleted: its endpoints leave this node's tables"
    if not view.usable:
        why = view.problem if view.ready else "not Ready"
        return f"{why}: its endpoints leave this node's tables"
    return f"usable at {view.address}: its endpoints return to this node's tables"


def _interface_exists(ifname: str) -> bool:
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True


def _describe(op: Operation) -> str:
    match op:
        case CreateLink(link=link):
            return f"failed to create link {link!r}"
        case DeleteLink(link=link):
            return f"failed to delete link {link!r}"
        case AddEndpoint(link=link, side=side, ifname=ifname):
            return f"failed to add {ifname!r} to side {side} of link {link!r}"
        case ActivateEndpoint(link=link, side=side, ifname=ifname):
            return f"failed to re-activate {ifname!r} on side {side} of link {link!r}"
        case DrainEndpoint(link=link, side=side, ifname=ifname):
            return f"failed to drain {ifname!r} on side {side} of link {link!r}"
        case RemoveEndpoint(link=link, side=side, ifname=ifname):
            return f"failed to remove {ifname!r} from side {side} of link {link!r}"


def _waiting_message(pending: Sequence[str]) -> str:
    """What the node still waits for ("" for nothing). Stable from one retry to the next, so
    retries write no status."""
    if not pending:
        return ""
    return (
        f"waiting for interface(s) {', '.join(pending)}: not created yet on this node"
        " (pod networking still being set up); will retry"
    )


# -- command line ------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="sfc-k8s agent",
        description="Run the node agent: program this node's data plane from CrossConnections.",
    )
    parser.add_argument(
        "--node",
        default=env("SFC_K8S_NODE") or env("NODE_NAME"),
        help="this node's name, as in the endpoints' 'node' (env SFC_K8S_NODE or NODE_NAME)",
    )
    parser.add_argument(
        "--kubeconfig",
        default=env("SFC_K8S_KUBECONFIG") or env("KUBECONFIG"),
        help="kubeconfig file (env SFC_K8S_KUBECONFIG or KUBECONFIG; default: service account)",
    )
    parser.add_argument(
        "--bpffs-root",
        default=env("SFC_K8S_BPFFS_ROOT", DEFAULT_BPFFS_ROOT),
        help=f"where the data plane is pinned (env SFC_K8S_BPFFS_ROOT; {DEFAULT_BPFFS_ROOT})",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(env("SFC_K8S_METRICS_PORT", "9469")),
        help="Prometheus metrics port, 0 = off (env SFC_K8S_METRICS_PORT; 9469)",
    )
    parser.add_argument("--metrics-host", default="0.0.0.0")
    parser.add_argument(
        "--traffic-window",
        type=float,
        default=DEFAULT_WINDOW,
        metavar="SECONDS",
        help=f"the per-pod traffic rates (/traffic/pods) average over this ({DEFAULT_WINDOW:g})",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        default=[n for n in (env("SFC_K8S_NAMESPACES") or "").split(",") if n],
        help="watch only this namespace (repeatable; env SFC_K8S_NAMESPACES, comma-separated)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="the default")
    parser.add_argument(
        "--session-table-size",
        type=int,
        default=int(env("SFC_K8S_SESSION_TABLE_SIZE", str(SESSIONS_DEFAULT))),
        help="sessions the node-wide table holds (first load of the data plane only)",
    )
    parser.add_argument(
        "--retry-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="first retry while an interface is not created yet; doubles each time (1)",
    )
    parser.add_argument(
        "--max-retry-delay",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="longest retry delay; also how often an interface a pod lacks is re-checked (30)",
    )
    parser.add_argument("--gc-interval", type=float, default=300.0, metavar="SECONDS")
    parser.add_argument(
        "--tunnel-port",
        type=int,
        default=int(env("SFC_K8S_TUNNEL_PORT", str(dp_tunnel.DEFAULT_PORT))),
        help="UDP port of the tunnel to other nodes; 0: no tunnel, this node's endpoints only"
        f" (env SFC_K8S_TUNNEL_PORT; {dp_tunnel.DEFAULT_PORT})",
    )
    parser.add_argument(
        "--tunnel-mtu",
        type=int,
        default=AgentConfig.tunnel_mtu,
        help="MTU of the tunnel device: the underlay's minus"
        f" {dp_tunnel.OVERHEAD_IPV4}, set on the device when it differs (0: keep the device's;"
        f" {AgentConfig.tunnel_mtu}, for a {dp_tunnel.DEFAULT_UNDERLAY_MTU}-byte underlay)",
    )
    parser.add_argument(
        "--tunnel-address",
        default=env("SFC_K8S_TUNNEL_ADDRESS", ""),
        help="this node's underlay IPv4 address when it is not the Node's InternalIP (a data"
        f" NIC); published as the {TUNNEL_ADDRESS_ANNOTATION} annotation of the Node",
    )
    parser.add_argument(
        "--log-format", choices=["json", "plain", "full"], default=env("SFC_K8S_LOG_FORMAT", "json")
    )
    parser.add_argument(
        "--require-native-maglev",
        action="store_true",
        default=env("SFC_K8S_REQUIRE_NATIVE_MAGLEV", "") in ("1", "true"),
        help="refuse to start without the C Maglev builder (env SFC_K8S_REQUIRE_NATIVE_MAGLEV=1)",
    )
    parser.add_argument(
        "--no-kernel-check",
        dest="kernel_check",
        action="store_false",
        help="skip the kernel feature probe at start",
    )
    parser.add_argument(
        "--no-attach-interfaces",
        dest="attach_interfaces",
        action="store_false",
        help="attach the program to an interface only when a link takes it, not when its pod"
        " appears (slower links: an attach each; docs/dataplane.md)",
    )
    agent_cni.add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--debug", action="store_true")
    return parser


def config_from_args(argv: Sequence[str]) -> AgentConfig:
    parser = _parser()
    args = parser.parse_args(list(argv))
    if not args.node:
        parser.error("--node is required (or set SFC_K8S_NODE / NODE_NAME)")
    if args.metrics_port < 0:
        parser.error("--metrics-port must be 0 (off) or a port number")
    if args.traffic_window <= 1:
        parser.error(f"--traffic-window {args.traffic_window:g}: expected more than 1 second")
    if not 0 <= args.tunnel_port <= 65535:
        parser.error(f"--tunnel-port {args.tunnel_port}: expected 1 to 65535, or 0 (no tunnel)")
    if (
        args.tunnel_address
        and not node_view(
            {"status": {"addresses": [{"type": "InternalIP", "address": args.tunnel_address}]}}
        ).address
    ):
        parser.error(f"--tunnel-address {args.tunnel_address!r}: expected a unicast IPv4 address")
    return AgentConfig(
        node=args.node,
        kubeconfig=args.kubeconfig or None,
        bpffs_root=args.bpffs_root,
        session_table_size=args.session_table_size,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port or None,
        traffic_window=args.traffic_window,
        attach_interfaces=args.attach_interfaces,  # on unless --no-attach-interfaces
        namespaces=() if args.all_namespaces else tuple(dict.fromkeys(args.namespaces)),
        retry_delay=args.retry_delay,
        max_retry_delay=args.max_retry_delay,
        gc_interval=args.gc_interval,
        tunnel_port=args.tunnel_port or None,
        tunnel_mtu=args.tunnel_mtu,
        tunnel_address=args.tunnel_address,
        log_format=args.log_format,
        verbose=args.verbose,
        debug=args.debug,
        require_native_maglev=args.require_native_maglev,
        kernel_check=args.kernel_check,
        cni_server=agent_cni.options_from_args(args),
    )


def preflight(
    config: AgentConfig,
    *,
    check_kernel: Callable[[], kernel.Assessment] = kernel.check,
    native_maglev: Callable[[], bool] = maglev.native_available,
) -> str | None:
    """What stops this agent from running on this node (a message), or None; logs the rest."""
    if config.kernel_check:
        try:
            assessment = check_kernel()
        except (DataplaneError, OSError) as err:
            return f"the kernel feature probe failed: {err} (the agent runs privileged, as root)"
        if not assessment.ok:
            return assessment.message
        logger.info(assessment.message)
    if config.require_native_maglev and not native_maglev():
        return (
            f"the C Maglev builder {maglev.NATIVE_PATH} is missing or does not load"
            " (--require-native-maglev): the image was built without it"
        )
    return None


def credentials_problem(config: AgentConfig) -> str | None:
    """Why the agent has no usable credentials (a message), or None.

    Checked before Kopf starts: Kopf retries a failing login forever, so an unreadable
    kubeconfig would otherwise leave the agent running and doing nothing.
    """
    try:
        connection_info(config.kubeconfig)
    except SettingsError as err:
        return str(err)
    return None


def main(argv: list[str]) -> int:
    """``sfc-k8s agent ...``: run until SIGINT/SIGTERM; returns the exit status."""
    if argv and argv[0] == "agent":  # tolerate being handed the subcommand name too
        argv = argv[1:]
    config = config_from_args(argv)
    configure_logging(config.log_format, verbose=config.verbose, debug=config.debug)
    problem = preflight(config) or credentials_problem(config)
    if problem is not None:
        logger.error("cannot start: %s", problem)
        print(f"sfc-k8s agent: {problem}", file=sys.stderr)
        return 1
    agent = NodeAgent(config)
    with agent_cni.serving(config.cni_server):  # the sfc-cni shim's server, beside Kopf
        kopf.run(
            registry=agent.registry,
            settings=agent.settings,
            standalone=True,
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
        )
    return 0
