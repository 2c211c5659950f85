"""The local node runtime: the kubelet role for the emulated nodes.

One process serves some or all emulated nodes of a local cluster (``python -m
sfc_k8s.local.node``; ``sfc-k8s local up`` starts one per node with ``--serve``, so that a node
can crash alone). For each node it creates the node's network namespace if the underlay has
not (the "host" of that node: pods' host-side veths live there, and its agent runs there),
finds the node's address and MTU on its underlay interface, registers a ``Node`` object with
that ``InternalIP`` and a ``Ready`` condition and keeps its heartbeats (the condition and the
node's Lease), and opens API endpoints inside the namespace (``127.0.0.1:<api port>`` and the
``kubernetes`` Service's ``10.96.0.1:443``, forwarded to the API server) so that processes of
the node reach the API server with the same kubeconfig as the host, and pods in-cluster. It
runs a ``PodWorker`` for every pod bound to its nodes (the API server schedules, as
kube-scheduler).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import urllib.parse
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sfc_k8s import __version__
from sfc_k8s.api.timestamps import now_rfc3339
from sfc_k8s.local import netns, underlay
from sfc_k8s.local.forward import pipe
from sfc_k8s.local.kube import (
    ConflictError,
    GoneError,
    JsonObj,
    KubeClient,
    KubeError,
    NotFoundError,
)
from sfc_k8s.local.layout import Layout, pod_cidr, read_json
from sfc_k8s.local.node.pod import (
    NodeContext,
    PodWorker,
    adoptable,
    cleanup_record,
)

log = logging.getLogger("sfc_k8s.local.node")

HEARTBEAT_SECONDS = 10.0  # the kubelet's --node-status-update-frequency default
NODE_LABEL = "node.sfc-k8s.io/local"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
# The `kubernetes` Service's address and port as pods see them (kind's first ClusterIP): every
# node namespace holds the address on its loopback (as kube-proxy's IPVS mode holds Service
# addresses on a dummy device), so that host-network pods reach it locally and the other pods
# through their default route to the node.
API_SERVICE_ADDRESS = "10.96.0.1"
API_SERVICE_PORT = 443


@dataclass(frozen=True)
class NodeSpec:
    name: str
    index: int  # 1-based; picks the pod CIDR 10.244.<index>.0/24

    @property
    def pod_cidr(self) -> str:
        return pod_cidr(self.index)

    @property
    def gateway_ip(self) -> str:
        """The node's address on its pod network (the ptp plugin's gateway, 10.244.<i>.1)."""
        return f"10.244.{self.index}.1"


@dataclass(frozen=True)
class NodeAddress:
    """Where a node is reached: its InternalIP and the MTU its pods get."""

    internal_ip: str
    mtu: int


async def discover_address(spec: NodeSpec, netns_name: str) -> NodeAddress:
    """The node's address as a kubelet finds it: from its underlay interface, if it has one
    (``local up`` and the tests give every node one), else its pod-network gateway."""
    iface = await asyncio.to_thread(underlay.read_node_interface, netns_name)
    if iface is None:
        return NodeAddress(spec.gateway_ip, underlay.DEFAULT_MTU)
    return NodeAddress(iface.address, iface.mtu)


class NodeRuntime:
    """Runs the emulated nodes ``nodes`` of the cluster laid out in ``layout``."""

    def __init__(
        self,
        kube: KubeClient,
        layout: Layout,
        nodes: list[NodeSpec],
        cni_path: list[str],
        *,
        pod_network: bool = True,
        api_proxy: bool = True,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.kube = kube
        self.layout = layout
        self.nodes = {n.name: n for n in nodes}
        self.cni_path = cni_path
        self.pod_network = pod_network
        self.api_proxy = api_proxy
        self.heartbeat = heartbeat
        self.addresses: dict[str, NodeAddress] = {}
        self.contexts: dict[str, NodeContext] = {}
        self.workers: dict[str, PodWorker] = {}
        self._servers: list[asyncio.Server] = []
        self._transitions: dict[str, tuple[bool, str]] = {}  # node -> (ready, since)
        self._tasks: list[asyncio.Task[None]] = []
        self._adoptable: set[Path] = set()  # records of pods left running by a crashed runtime
        self.ready = asyncio.Event()

    # -- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        """Clean up after a previous crash, create the nodes, and start watching pods."""
        await self._cleanup_stale_pods()
        for spec in self.nodes.values():
            ns = self.layout.node_netns(spec.name)
            await netns.create(ns)
            address = await discover_address(spec, ns)
            self.addresses[spec.name] = address
            self.contexts[spec.name] = NodeContext(
                kube=self.kube,
                layout=self.layout,
                name=spec.name,
                netns=ns,
                pod_cidr=spec.pod_cidr,
                host_ip=address.internal_ip,
                cni_path=self.cni_path,
                pod_network=self.pod_network,
                mtu=address.mtu,
            )
            if self.api_proxy and await self._start_api_proxy(ns):
                self.contexts[spec.name].api_service = (API_SERVICE_ADDRESS, API_SERVICE_PORT)
            await self._register(spec)
        self._tasks.append(asyncio.create_task(self._heartbeat()))
        self._tasks.append(asyncio.create_task(self._watch_pods()))

    async def stop(self) -> None:
        """Stop every pod here (no grace: the cluster is going away) and the background work."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(w.shutdown() for w in list(self.workers.values())))
        for server in self._servers:
            server.close()
        for spec in self.nodes.values():
            with contextlib.suppress(KubeError):
                await self._set_node_ready(spec, ready=False)

    async def _cleanup_stale_pods(self) -> None:
        """Undo what a crashed runtime of these nodes left (another runtime's pods stay),
        but for pods still running whole: those are adopted when the API lists them."""
        if not self.layout.pods_dir.is_dir():
            return
        records = []
        for path in sorted(self.layout.pods_dir.glob("*/pod.json")):
            node = read_json(path).get("node")
            if node is not None and node not in self.nodes:
                continue
            if node is not None and adoptable(path):
                self._adoptable.add(path)
            else:  # unreadable records go too
                records.append(path)
        await asyncio.gather(*(cleanup_record(r, self.cni_path) for r in records))

    async def _cleanup_unclaimed(self, listed: set[str]) -> None:
        """Records kept for adoption whose pod the API no longer has, or is deleting: undone
        (a deleting pod with no worker is confirmed at once by ``_handle``)."""
        gone = [p for p in self._adoptable if read_json(p).get("uid") not in listed]
        self._adoptable.clear()
        await asyncio.gather(*(cleanup_record(r, self.cni_path) for r in gone))

    # -- the API endpoint inside each node namespace -----------------------------------------

    async def _start_api_proxy(self, ns: str) -> bool:
        """Forward ``127.0.0.1:<api port>`` and the ``kubernetes`` Service's address in the
        node's namespace to the API server; False if it is not on this machine's loopback."""
        url = urllib.parse.urlsplit(self.kube.conn.server)
        host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
        if host not in ("127.0.0.1", "localhost"):
            return False
        await netns.run_ip("-n", ns, "addr", "replace", f"{API_SERVICE_ADDRESS}/32", "dev", "lo")
        sockets = [
            await asyncio.to_thread(netns.listen_in_netns, ns, "127.0.0.1", port),
            await asyncio.to_thread(
                netns.listen_in_netns, ns, API_SERVICE_ADDRESS, API_SERVICE_PORT
            ),
        ]

        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        for sock in sockets:
            self._servers.append(await asyncio.start_server(forward, sock=sock))
        return True

    # -- Node objects ------------------------------------------------------------------------

    def _transition_time(self, node: str, ready: bool, now: str) -> str:
        """When the node's readiness last changed: kept while it stays (a heartbeat is not a
        transition), so that readers can tell how long a node has been Ready."""
        last = self._transitions.get(node)
        if last is None or last[0] != ready:
            last = self._transitions[node] = (ready, now)
        return last[1]

    def _node_status(self, spec: NodeSpec, *, ready: bool) -> JsonObj:
        ts = now_rfc3339()
        cpus = str(os.cpu_count() or 1)
        capacity = {"cpu": cpus, "memory": _memory(), "pods": "110", "ephemeral-storage": "10Gi"}
        return {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "Unknown",
                    "reason": "KubeletReady" if ready else "NodeStatusUnknown",
                    "message": "sfc-k8s local node runtime is posting ready status"
                    if ready
                    else "the local node runtime stopped",
                    "lastHeartbeatTime": ts,
                    "lastTransitionTime": self._transition_time(spec.name, ready, ts),
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.addresses[spec.name].internal_ip},
                {"type": "Hostname", "address": spec.name},
            ],
            "capacity": capacity,
            "allocatable": capacity,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                    platform.machine(), platform.machine()
                ),
                "operatingSystem": "linux",
                "osImage": "sfc-k8s local node (network namespace)",
                "kernelVersion": platform.release(),
                "kubeletVersion": f"v1.32.0-sfc-k8s-{__version__}",
                "kubeProxyVersion": "",
                "containerRuntimeVersion": "sfc-local://processes",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }

    async def _register(self, spec: NodeSpec) -> None:
        body: JsonObj = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": spec.name,
                "labels": {
                    "kubernetes.io/hostname": spec.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    NODE_LABEL: "true",
                },
                "annotations": {"sfc-k8s.io/netns": self.layout.node_netns(spec.name)},
            },
            "spec": {"podCIDR": spec.pod_cidr, "podCIDRs": [spec.pod_cidr]},
        }
        try:
            await self.kube.create("/api/v1/nodes", body)
        except ConflictError:
            await self.kube.patch(f"/api/v1/nodes/{spec.name}", {"metadata": body["metadata"]})
        await self._set_node_ready(spec, ready=True)
        await self._renew_lease(spec)

    async def _renew_lease(self, spec: NodeSpec) -> None:
        """The node's heartbeat Lease in ``kube-node-lease``, renewed as the kubelet does."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{spec.name}"
        renew = now_rfc3339(micro=True)
        try:
            await self.kube.patch(path, {"spec": {"renewTime": renew}})
        except NotFoundError:
            body: JsonObj = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": spec.name, "namespace": LEASE_NAMESPACE},
                "spec": {
                    "holderIdentity": spec.name,
                    "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                    "renewTime": renew,
                },
            }
            with contextlib.suppress(ConflictError):
                await self.kube.create(path.rsplit("/", 1)[0], body)

    async def _set_node_ready(self, spec: NodeSpec, *, ready: bool) -> None:
        status = self._node_status(spec, ready=ready)
        await self.kube.patch(f"/api/v1/nodes/{spec.name}/status", {"status": status})

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            for spec in self.nodes.values():
                try:
                    await self._set_node_ready(spec, ready=True)
                    await self._renew_lease(spec)
                except NotFoundError:
                    with contextlib.suppress(KubeError):
                        await self._register(spec)
                except KubeError as err:
                    log.warning("node %s: heartbeat failed: %s", spec.name, err)

    # -- pods --------------------------------------------------------------------------------

    async def _watch_pods(self) -> None:
        while True:
            try:
                listing = await self.kube.get("/api/v1/pods")
                rv = str(listing.get("metadata", {}).get("resourceVersion", ""))
                seen, live = set(), set()
                for pod in listing.get("items") or []:
                    seen.add(pod["metadata"]["uid"])
                    if not pod["metadata"].get("deletionTimestamp"):
                        live.add(pod["metadata"]["uid"])
                    self._handle(pod)
                for uid in list(self.workers):
                    if uid not in seen:
                        self._forget(uid)
                await self._cleanup_unclaimed(live)
                self.ready.set()
                while True:
                    async for kind, obj in self.kube.watch("/api/v1/pods", resource_version=rv):
                        rv = str(obj.get("metadata", {}).get("resourceVersion") or rv)
                        if kind == "BOOKMARK":
                            continue
                        if kind == "DELETED":
                            self._forget(obj["metadata"]["uid"])
                        else:
                            self._handle(obj)
            except GoneError:
                continue
            except KubeError as err:
                log.warning("pod watch interrupted (%s); listing again", err)
                await asyncio.sleep(1.0)

    def _forget(self, uid: str) -> None:
        worker = self.workers.get(uid)
        if worker is not None:
            worker.mark_gone()

    def _handle(self, pod: JsonObj) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        uid, node = meta["uid"], spec.get("nodeName") or ""
        if node not in self.contexts:  # unscheduled (the API server schedules) or elsewhere
            return
        worker = self.workers.get(uid)
        if worker is not None:
            worker.update(pod)
            return
        if meta.get("deletionTimestamp"):
            # Nothing of it runs here (a runtime restart cleaned it up): confirm at once.
            self._spawn(self._confirm(pod))
            return
        worker = PodWorker(self.contexts[node], pod)
        self.workers[uid] = worker
        worker.task.add_done_callback(self._worker_done(uid))

    def _worker_done(self, uid: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            worker = self.workers.pop(uid, None)
            if worker is not None and worker.crashed and not worker.terminating:
                self._spawn(self._start_again(worker.path, uid))

        return done

    async def _start_again(self, path: str, uid: str) -> None:
        """After a worker ended on a bug: start the pod again if it still exists as it was."""
        await asyncio.sleep(1.0)
        try:
            pod = await self.kube.get(path)
        except KubeError:
            return
        if pod["metadata"].get("uid") == uid and uid not in self.workers:
            self._handle(pod)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.append(task)

        def done(t: asyncio.Task[None]) -> None:
            if t in self._tasks:
                self._tasks.remove(t)

        task.add_done_callback(done)

    async def _confirm(self, pod: JsonObj) -> None:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        with contextlib.suppress(KubeError):
            await self.kube.delete(path, grace_period_seconds=0, uid=meta["uid"])


def _memory() -> str:
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        return "1Gi"
    return f"{kib}Ki"
