"""One pod on a local node: its sandbox (network namespace + CNI), containers, probes, status.

A ``PodWorker`` is created by the node runtime for every pod bound to its node and lives until
the pod is gone. It plays the kubelet's pod worker: create the network namespace, attach the
networks the Multus way (``cni.py``), prepare the volumes (``volumes.py``), start each
container's ``command``/``args`` as a process inside the namespace with its volumes mounted
(``launch.py``) and the in-cluster and downward-API env, restart crashed containers per
``restartPolicy`` with back-off, run startup/readiness/liveness probes (exec here, httpGet and
tcpSocket in ``probes.py``), write ``status`` (phase, conditions, container statuses,
pod IP) and events, and on deletion stop the containers gracefully (SIGTERM, the grace period,
SIGKILL), DEL the networks, remove the namespace and confirm the deletion to the API server.

Everything it creates is recorded in ``<state>/pods/<uid>/pod.json`` before it is created, so
``cleanup_record`` can undo it after a crash of the node. A runtime that restarts after a crash
of its own while the pod's containers still run adopts the pod instead (``adoptable``), as a
restarted kubelet finds its containers running under containerd: same sandbox, same processes,
watched by pid, so the pod's traffic never stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sfc_k8s.api.attachments import NETWORK_STATUS_ANNOTATION
from sfc_k8s.api.timestamps import now_rfc3339
from sfc_k8s.local import netns
from sfc_k8s.local.apiserver.quantity import parse_milli
from sfc_k8s.local.kube import ApiError, KubeClient, KubeError, NotFoundError
from sfc_k8s.local.layout import Layout, processes_in_netns, read_json, write_json
from sfc_k8s.local.node import images, launch, probes
from sfc_k8s.local.node.cni import (
    NETWORKS_ANNOTATION,
    Attachment,
    CniInvoker,
    NetworkAttachmentError,
    PodContext,
    cluster_network_config,
    first_ip,
    network_status,
    parse_nad_config,
    parse_networks,
    runtime_config_for,
)
from sfc_k8s.local.node.volumes import VolumeBuilder, VolumeError, container_mounts

log = logging.getLogger("sfc_k8s.local.node")

JsonObj = dict[str, Any]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RESTART_BACKOFF_MAX = 30.0
SANDBOX_BACKOFF_MAX = 30.0
RUNNING_RESETS_BACKOFF = 10.0  # a container that ran this long restarts without delay
# The node's CNI bin directory (containerd's default, deploy/base/node-config.yaml's cniBinDir):
# searched first, so the plugins the agent's install-cni put on the node are the ones run.
NODE_CNI_BIN_DIR = "/opt/cni/bin"
HOSTS_FILE = "/etc/hosts"
API_SERVICE_NAMES = (
    "kubernetes.default.svc.cluster.local",
    "kubernetes.default.svc",
    "kubernetes.default",
    "kubernetes",
)
TOKEN_RENEW_AT = 0.8  # of a projected token's lifetime, as the kubelet
TOKEN_RETRY_SECONDS = 10.0
ADOPTED_EXIT_CODE = 255  # an adopted process is not our child: its exit status is unknown


@dataclass
class NodeContext:
    """What every pod worker of one node shares."""

    kube: KubeClient
    layout: Layout
    name: str
    netns: str
    pod_cidr: str
    host_ip: str  # the node's InternalIP: pods' hostIP, hostNetwork pods' IP
    cni_path: list[str]
    pod_network: bool = True
    mtu: int = 1500  # the underlay's: eth0 of every pod gets it, as kindnet does
    # Where pods reach the API server (the runtime's forwarder in the node's namespace, on
    # an address every pod of the node routes to): KUBERNETES_SERVICE_HOST and _PORT.
    api_service: tuple[str, int] | None = None

    @property
    def invoker(self) -> CniInvoker:
        root = self.layout.node_root(self.name)
        node_bin = str(root / NODE_CNI_BIN_DIR.lstrip("/"))
        return CniInvoker([node_bin, *self.cni_path], self.netns, node_root=str(root))


class AdoptedProcess:
    """A container process started by a previous runtime, watched through a pidfd; the
    subset of ``asyncio.subprocess.Process`` the pod worker uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fd = os.pidfd_open(pid)
        self._exited = asyncio.Event()
        asyncio.get_running_loop().add_reader(self._fd, self._on_exit)

    def _on_exit(self) -> None:
        asyncio.get_running_loop().remove_reader(self._fd)
        os.close(self._fd)
        self._exited.set()

    @property
    def returncode(self) -> int | None:
        return ADOPTED_EXIT_CODE if self._exited.is_set() else None

    async def wait(self) -> int:
        await self._exited.wait()
        return ADOPTED_EXIT_CODE


def adoptable(record_path: Path) -> bool:
    """Whether the pod of this record still runs as its runtime left it: its namespace (the
    node's for a hostNetwork pod) and the process of every container it started (each in that
    namespace; an init container's pid file goes when it completes)."""
    record = read_json(record_path)
    pid_files = list(record_path.parent.glob("*.pid"))
    if not record or not pid_files:
        return False
    alive = set(processes_in_netns(str(record.get("netns", ""))))
    try:
        return all(int(f.read_text()) in alive for f in pid_files)
    except (OSError, ValueError):
        return False


@dataclass
class Container:
    """The live state of one container of a pod."""

    spec: JsonObj
    restart_count: int = 0
    proc: asyncio.subprocess.Process | AdoptedProcess | None = None
    started_at: str | None = None
    started_mono: float = 0.0
    last_terminated: JsonObj | None = None
    terminated: JsonObj | None = None
    waiting: tuple[str, str] = ("ContainerCreating", "")
    probe_ready: bool = False
    startup_done: bool = False  # its startupProbe succeeded since it last started
    finished: bool = False  # exited and will not be restarted
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def started(self) -> bool:
        """Running, and its startup probe (if any) succeeded."""
        return self.running and (self.startup_done or not self.spec.get("startupProbe"))

    @property
    def ready(self) -> bool:
        if not self.started:
            return False
        return self.probe_ready if self.spec.get("readinessProbe") else True

    def status(self, pod_uid: str) -> JsonObj:
        state: JsonObj
        if self.running:
            state = {"running": {"startedAt": self.started_at}}
        elif self.terminated is not None and (self.finished or self.waiting[0] == ""):
            state = {"terminated": self.terminated}
        else:
            reason, message = self.waiting
            state = {"waiting": {"reason": reason or "ContainerCreating"}}
            if message:
                state["waiting"]["message"] = message
        status: JsonObj = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }
        if self.proc is not None:
            status["containerID"] = f"sfc-local://{pod_uid}/{self.name}/{self.restart_count}"
        return status


class PodWorker:
    """Drives one pod from creation to confirmed deletion (see the module docstring)."""

    def __init__(self, node: NodeContext, pod: JsonObj) -> None:
        self.node = node
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta.get("namespace", "default")
        self.name: str = meta["name"]
        # hostNetwork pods run in the node's namespace and get no CNI networks (as with Multus).
        self.host_network = bool(pod["spec"].get("hostNetwork"))
        self.netns = node.netns if self.host_network else node.layout.pod_netns(self.uid)
        self.dir = node.layout.pod_dir(self.uid)
        self.attachments: list[Attachment] = []
        self.containers = [Container(spec=c) for c in pod["spec"].get("containers") or []]
        self.init_containers = [Container(spec=c) for c in pod["spec"].get("initContainers") or []]
        self.init_failed = False
        self.changed = asyncio.Event()
        self.dirty = asyncio.Event()
        self.sandbox_ready = False
        self.pod_ip: str | None = None
        self.volume_paths: dict[str, Path] | None = None  # host path of each volume
        self.read_only_volumes: set[str] = set()
        self.start_time = now_rfc3339()
        self.seen_mono = time.monotonic()  # when the runtime first saw the pod
        self._ready_logged = False
        self.gone = False  # the API object no longer exists
        self.shutting_down = False  # the runtime stops: kill fast, confirm nothing
        self.crashed = False  # ended on a bug, not a deletion: the runtime starts it again
        self._tasks: list[asyncio.Task[None]] = []
        self._token_renewal: asyncio.Task[None] | None = None
        self._event_counts: dict[tuple[str, str], tuple[str, int]] = {}
        self._transitions: dict[tuple[str, bool], str] = {}
        self.task = asyncio.create_task(self._run(), name=f"pod {self.namespace}/{self.name}")

    # -- inputs from the runtime -------------------------------------------------------------

    def update(self, pod: JsonObj) -> None:
        self.pod = pod
        self.changed.set()

    def mark_gone(self) -> None:
        self.gone = True
        self.changed.set()

    async def shutdown(self) -> None:
        self.shutting_down = True
        self.changed.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    @property
    def terminating(self) -> bool:
        deleting = bool(self.pod["metadata"].get("deletionTimestamp"))
        return self.gone or self.shutting_down or deleting

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    # -- main flow ---------------------------------------------------------------------------

    async def _run(self) -> None:
        status_task = asyncio.create_task(self._status_loop())
        try:
            if self._adopt():
                self._start_containers()
            else:
                await self._start_sandbox()
                await self._mount_volumes()
                if not self.terminating and await self._run_init_containers():
                    self._start_containers()
            while not self.terminating:
                self.changed.clear()
                await self.changed.wait()
        except Exception:
            log.exception(
                "pod %s/%s: unexpected error; starting it again", self.namespace, self.name
            )
            self.crashed = True
        finally:
            try:
                await self._teardown()
            finally:
                self.dirty.set()
                await asyncio.sleep(0)
                status_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await status_task
        deleting = bool(self.pod["metadata"].get("deletionTimestamp"))
        if deleting and not self.gone and not self.shutting_down:
            await self._confirm_deletion()

    def _adopt(self) -> bool:
        """Take over the sandbox and the running containers a crashed runtime left."""
        path = self.dir / "pod.json"
        if not adoptable(path) or read_json(path).get("uid") != self.uid:
            return False
        self.attachments = [Attachment.from_json(a) for a in read_json(path)["attachments"]]
        self.pod_ip = next(
            (first_ip(a.result) for a in self.attachments if a.default and first_ip(a.result)),
            self.node.host_ip if self.host_network else None,
        )
        statuses = {
            s.get("name"): s for s in (self.pod.get("status") or {}).get("containerStatuses") or []
        }
        for c in self.containers:
            pid_file = self.dir / f"{c.name}.pid"
            if not pid_file.exists():
                continue
            c.proc = AdoptedProcess(int(pid_file.read_text()))
            known = statuses.get(c.name) or {}
            c.restart_count = int(known.get("restartCount") or 0)
            c.started_at = ((known.get("state") or {}).get("running") or {}).get("startedAt")
            c.started_at = c.started_at or now_rfc3339()
            c.started_mono, c.waiting = time.monotonic(), ("", "")
            c.probe_ready = bool(known.get("ready"))  # kept until a probe says otherwise
            c.startup_done = bool(known.get("started"))
        for c in self.init_containers:
            c.finished = True
            c.terminated = {"exitCode": 0, "reason": "Completed"}
        self.sandbox_ready = True
        self.dirty.set()
        log.info("pod %s/%s: adopted its running sandbox", self.namespace, self.name)
        return True

    async def _start_sandbox(self) -> None:
        backoff = 1.0
        while not self.terminating:
            try:
                await self._setup_sandbox()
                return
            except NetworkAttachmentError as err:
                message = f"failed to set up the pod network: {err}"
                log.warning("pod %s/%s: %s", self.namespace, self.name, message)
                for c in self.containers:
                    c.waiting = ("ContainerCreating", message)
                self.dirty.set()
                await self.event("Warning", "FailedCreatePodSandBox", message)
            await self._wait_changed(backoff)
            backoff = min(backoff * 2, SANDBOX_BACKOFF_MAX)

    async def _wait_changed(self, timeout: float) -> None:
        self.changed.clear()
        if self.terminating:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout)

    def _pod_context(self) -> PodContext:
        return PodContext(
            namespace=self.namespace,
            name=self.name,
            uid=self.uid,
            netns=netns.netns_path(self.netns),
            container_id=self.uid.replace("-", ""),
        )

    def _record(self) -> None:
        write_json(
            self.dir / "pod.json",
            {
                "namespace": self.namespace,
                "name": self.name,
                "uid": self.uid,
                "node": self.node.name,
                "netns": self.netns,
                "nodeNetns": self.node.netns,
                "containerId": self._pod_context().container_id,
                "hostNetwork": self.host_network,
                "attachments": [a.to_json() for a in self.attachments],
            },
        )

    async def _wanted_attachments(self) -> list[Attachment]:
        wanted: list[Attachment] = []
        if self.node.pod_network:
            name = f"sfc-local-{self.node.layout.cluster_id}-{self.node.name}"
            config = cluster_network_config(
                name, self.node.pod_cidr, str(self.node.layout.ipam_dir), mtu=self.node.mtu
            )
            wanted.append(Attachment(network=name, ifname="eth0", config=config, default=True))
        annotations = self.pod["metadata"].get("annotations") or {}
        selections = parse_networks(annotations.get(NETWORKS_ANNOTATION, ""), self.namespace)
        used = {a.ifname for a in wanted}
        for index, sel in enumerate(selections, start=1):
            ifname = sel.interface or f"net{index}"
            if ifname in used:
                raise NetworkAttachmentError(
                    f"interface {ifname!r} is requested twice in {NETWORKS_ANNOTATION}"
                )
            used.add(ifname)
            path = (
                f"/apis/k8s.cni.cncf.io/v1/namespaces/{sel.namespace}"
                f"/network-attachment-definitions/{sel.name}"
            )
            try:
                nad = await self.node.kube.get(path)
            except NotFoundError as err:
                raise NetworkAttachmentError(
                    f"NetworkAttachmentDefinition {sel.key} not found"
                ) from err
            except KubeError as err:
                raise NetworkAttachmentError(
                    f"cannot read NetworkAttachmentDefinition {sel.key}: {err}"
                ) from err
            wanted.append(
                Attachment(
                    network=sel.key,
                    ifname=ifname,
                    config=parse_nad_config(nad),
                    runtime_config=runtime_config_for(sel),
                )
            )
        return wanted

    async def _setup_sandbox(self) -> None:
        start = time.monotonic()
        if self.host_network:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._record()
            self.pod_ip = self.node.host_ip
            self.sandbox_ready = True
            self.dirty.set()
            return
        wanted = await self._wanted_attachments()
        self.dir.mkdir(parents=True, exist_ok=True)
        # Recorded before any ADD: a crash mid-ADD still gets its DEL (DEL is idempotent).
        self.attachments = wanted
        self._record()
        try:
            await netns.create(self.netns)
        except netns.NetnsError as err:
            await self._release_network()
            raise NetworkAttachmentError(str(err)) from err
        ctx = self._pod_context()
        invoker = self.node.invoker
        # Each network is its own plugin call on its own interface: run them side by side (the
        # plugins are safe to run concurrently) rather than one after the other as Multus does.
        results = await asyncio.gather(
            *(invoker.add(att, ctx) for att in wanted), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self._release_network()
            first = errors[0]
            if isinstance(first, NetworkAttachmentError):
                raise first
            raise NetworkAttachmentError(f"CNI ADD failed: {first!r}") from first
        self._record()
        log.info(
            "pod %s/%s: sandbox ready in %.0f ms (%s)",
            self.namespace,
            self.name,
            (time.monotonic() - start) * 1000,
            ", ".join(f"{a.ifname}={a.network}" for a in wanted),
        )
        self.pod_ip = next(
            (first_ip(a.result) for a in self.attachments if a.default and first_ip(a.result)),
            None,
        )
        status = [network_status(a) for a in self.attachments]
        if status:
            annotations = {NETWORK_STATUS_ANNOTATION: _json_dumps(status)}
            with contextlib.suppress(KubeError):
                await self.node.kube.patch(self.path, {"metadata": {"annotations": annotations}})
        self.sandbox_ready = True
        self.dirty.set()

    async def _mount_volumes(self) -> None:
        """Prepare the pod's volumes (``volumes.py``), retrying with back-off as the kubelet
        does (a ConfigMap created after the pod still gets mounted)."""
        backoff = 1.0
        while not self.terminating:
            try:
                await self._prepare_volumes()
                return
            except VolumeError as err:
                message = f"MountVolume.SetUp failed for {err}"
                log.warning("pod %s/%s: %s", self.namespace, self.name, message)
                for c in self.init_containers + self.containers:
                    c.waiting = ("ContainerCreating", message)
                self.dirty.set()
                await self.event("Warning", "FailedMount", message)
            await self._wait_changed(backoff)
            backoff = min(backoff * 2, SANDBOX_BACKOFF_MAX)

    async def _prepare_volumes(self) -> None:
        builder = VolumeBuilder(
            self.node.kube, self.node.layout, self.node.name, self.pod, self._fields()
        )
        self.volume_paths = await builder.prepare()
        self.read_only_volumes = builder.read_only()
        self._write_hosts()
        lifetime = builder.token_lifetime()
        if lifetime is not None and self._token_renewal is None:
            self._token_renewal = asyncio.create_task(self._renew_tokens(lifetime))
            self._tasks.append(self._token_renewal)

    def _write_hosts(self) -> None:
        """The pod's ``/etc/hosts``, as the kubelet manages it: the node's, the pod's own name
        (its own network), and the names of the ``kubernetes`` Service, which the cluster DNS
        would answer (the local cluster has no DNS server; Kopf's in-cluster login and every
        client library name ``kubernetes.default.svc``)."""
        try:
            lines = [Path(HOSTS_FILE).read_text().rstrip("\n")]
        except OSError:
            lines = ["127.0.0.1\tlocalhost"]
        if self.pod_ip and not self.host_network:
            lines.append(f"{self.pod_ip}\t{self.name}")
        if self.node.api_service is not None:
            lines.append(f"{self.node.api_service[0]}\t{' '.join(API_SERVICE_NAMES)}")
        write_text_atomic(self.dir / "hosts", "\n".join(lines) + "\n")

    def _hosts_mount(self, mounts: list[launch.Mount]) -> list[launch.Mount]:
        hosts = self.dir / "hosts"
        if not hosts.exists() or any(m.target == HOSTS_FILE for m in mounts):
            return []
        return [launch.Mount(str(hosts), HOSTS_FILE)]

    async def _renew_tokens(self, lifetime: int) -> None:
        """Write the projected volumes again (a new token, fresh ConfigMaps) at 80 % of the
        tokens' lifetime, as the kubelet does; while the API server is away, retry soon."""
        delay = lifetime * TOKEN_RENEW_AT
        while not self.terminating:
            await asyncio.sleep(delay)
            try:
                await self.node.kube.get(self.path)  # the API answers: a token can be had
                builder = VolumeBuilder(
                    self.node.kube, self.node.layout, self.node.name, self.pod, self._fields()
                )
                await builder.prepare()
                delay = lifetime * TOKEN_RENEW_AT
                log.info("pod %s/%s: service-account token renewed", self.namespace, self.name)
            except (KubeError, VolumeError) as err:
                log.warning("pod %s/%s: token renewal: %s", self.namespace, self.name, err)
                delay = min(TOKEN_RETRY_SECONDS, lifetime * (1 - TOKEN_RENEW_AT) / 4)

    async def _release_network(self) -> None:
        ctx = self._pod_context()
        invoker = self.node.invoker
        results = await asyncio.gather(
            *(invoker.delete(att, ctx) for att in self.attachments), return_exceptions=True
        )
        for att, result in zip(self.attachments, results, strict=True):
            if isinstance(result, NetworkAttachmentError):
                log.warning(
                    "pod %s/%s: CNI DEL of %s failed: %s",
                    self.namespace,
                    self.name,
                    att.network,
                    result,
                )
            elif isinstance(result, BaseException):
                raise result
        self.attachments.clear()
        self._record()
        if not self.host_network:
            with contextlib.suppress(netns.NetnsError):
                await netns.delete(self.netns)
        self.sandbox_ready = False

    # -- containers --------------------------------------------------------------------------

    def _start_containers(self) -> None:
        for c in self.containers:
            self._tasks.append(asyncio.create_task(self._supervise(c)))
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                if c.spec.get(kind):
                    self._tasks.append(asyncio.create_task(self._probe_loop(c, kind)))

    async def _run_init_containers(self) -> bool:
        """Run each init container to completion, in order; False if the pod cannot start."""
        policy = self.pod["spec"].get("restartPolicy", "Always")
        for c in self.init_containers:
            delay = 0.0
            while True:
                if self.terminating:
                    return False
                try:
                    c.proc = await self._spawn(c)
                except OSError as err:
                    c.waiting = ("CreateContainerError", str(err))
                    self.init_failed = True
                    self.dirty.set()
                    await self.event("Warning", "Failed", f"Error: {err}")
                    return False
                c.started_at, c.started_mono = now_rfc3339(), time.monotonic()
                c.terminated, c.waiting = None, ("", "")
                self.dirty.set()
                code = await c.proc.wait()
                with contextlib.suppress(OSError):  # only running containers' pids are kept
                    (self.dir / f"{c.name}.pid").unlink()
                c.terminated = {
                    "exitCode": code if code >= 0 else 128 - code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": c.started_at,
                    "finishedAt": now_rfc3339(),
                }
                if code == 0 or policy == "Never":
                    c.finished = True
                    self.init_failed = code != 0
                    self.dirty.set()
                    if code != 0:
                        return False
                    break
                delay = min(max(delay * 2, 1.0), RESTART_BACKOFF_MAX)
                c.last_terminated = c.terminated
                c.waiting = ("CrashLoopBackOff", f"back-off {delay:.0f}s restarting init container")
                self.dirty.set()
                await self._sleep_unless_terminating(delay)
                c.restart_count += 1
        return True

    def _fields(self) -> dict[str, str]:
        """The downward API's values (``fieldRef``) for this pod."""
        meta = self.pod["metadata"]
        fields = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.node.name,
            "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", "default"),
            "status.podIP": self.pod_ip or "",
            "status.podIPs": self.pod_ip or "",
            "status.hostIP": self.node.host_ip,
            "status.hostIPs": self.node.host_ip,
        }
        for group in ("labels", "annotations"):
            items = meta.get(group) or {}
            for key, value in items.items():
                fields[f"metadata.{group}['{key}']"] = str(value)
            fields[f"metadata.{group}"] = "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
        return fields

    def _service_env(self) -> dict[str, str]:
        """The in-cluster configuration every container gets (the ``kubernetes`` Service)."""
        if self.node.api_service is None:
            return {}
        host, port = self.node.api_service
        return {
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
            f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
            f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
        }

    def _env(self, spec: JsonObj) -> dict[str, str]:
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": self.name, "HOME": "/root"}
        env.update(self._service_env())
        fields = self._fields()
        for item in spec.get("env") or []:
            name = item.get("name")
            if not name:
                continue
            source = item.get("valueFrom") or {}
            if "value" in item:
                env[name] = _expand(str(item["value"]), env)
            elif "fieldRef" in source:
                env[name] = fields.get(str(source["fieldRef"].get("fieldPath", "")), "")
            elif "resourceFieldRef" in source:
                env[name] = resource_value(self.pod["spec"], spec, source["resourceFieldRef"])
        return env

    def _argv(self, spec: JsonObj) -> list[str]:
        return images.container_argv(spec)

    async def _launch_argv(
        self, c: Container, argv: list[str], status_fd: int | None = None
    ) -> list[str]:
        """``argv`` run as a process of container ``c``: its netns, its volumes at their
        mount paths in a mount namespace of its own (``launch.py``, which closes
        ``status_fd`` when it runs ``argv`` or writes why it could not)."""
        if self.volume_paths is None:  # an adopted pod's container restarting
            try:
                await self._prepare_volumes()
            except VolumeError as err:
                raise OSError(f"MountVolume.SetUp failed for {err}") from err
        assert self.volume_paths is not None
        (self.dir / "rootfs").mkdir(exist_ok=True)
        try:
            mounts = container_mounts(c.spec, self.volume_paths, self.read_only_volumes)
        except VolumeError as err:
            raise OSError(str(err)) from err
        # the image's own files first: a volume mounted inside them stays visible
        mounts = images.image_mounts(self.node.layout, str(c.spec.get("image") or "")) + mounts
        mounts += self._hosts_mount(mounts)
        spec = launch.Spec(
            argv,
            netns=netns.netns_path(self.netns),
            mounts=mounts,
            cwd=c.spec.get("workingDir") or "/",
            status_fd=status_fd,
            root_staging=str(self.dir / "rootfs"),
        )
        return launch.command_line(sys.executable, spec)

    async def _spawn(self, c: Container) -> asyncio.subprocess.Process:
        argv = self._argv(c.spec)
        if not argv:
            raise OSError(
                f"container {c.name!r} has no command or args: the local cluster ignores images, "
                "so every container needs an explicit command"
            )
        log_path = self.dir / f"{c.name}.log"
        status_read, status_write = os.pipe()
        try:
            launch = await self._launch_argv(c, argv, status_write)
            with open(log_path, "ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    *launch,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    env=self._env(c.spec),
                    cwd="/",
                    start_new_session=True,
                    pass_fds=(status_write,),
                )
        except BaseException:
            os.close(status_read)
            raise
        finally:
            os.close(status_write)
        failure = await asyncio.to_thread(_read_to_end, status_read)
        if failure:
            await proc.wait()
            raise OSError(failure)
        with contextlib.suppress(OSError):
            (self.dir / f"{c.name}.pid").write_text(str(proc.pid))
        return proc

    async def _supervise(self, c: Container) -> None:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        delay = 0.0
        while not self.terminating and not c.stop.is_set():
            if not c.running and not await self._start_container(c):  # adopted: running
                return
            assert c.proc is not None
            code = await c.proc.wait()
            ran = time.monotonic() - c.started_mono
            c.terminated = {
                "exitCode": code if code >= 0 else 128 - code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": c.started_at,
                "finishedAt": now_rfc3339(),
            }
            if code < 0:
                c.terminated["signal"] = -code
            c.probe_ready = c.startup_done = False
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if self.terminating or c.stop.is_set() or not restart:
                c.finished = True
                self.dirty.set()
                return
            delay = 0.0 if ran >= RUNNING_RESETS_BACKOFF else min(max(delay * 2, 1.0), 30.0)
            c.last_terminated = c.terminated
            c.waiting = ("CrashLoopBackOff", f"back-off {delay:.0f}s restarting failed container")
            self.dirty.set()
            if delay:
                await self.event(
                    "Warning", "BackOff", f"Back-off {delay:.0f}s restarting container {c.name}"
                )
                await self._sleep_unless_terminating(delay)
            if self.terminating:
                c.finished = True
                self.dirty.set()
                return
            c.restart_count += 1

    async def _start_container(self, c: Container) -> bool:
        try:
            c.proc = await self._spawn(c)
        except OSError as err:
            c.waiting = ("CreateContainerError", str(err))
            c.terminated = None
            self.dirty.set()
            await self.event("Warning", "Failed", f"Error: {err}")
            return False
        c.started_at = now_rfc3339()
        c.started_mono = time.monotonic()
        c.terminated = None
        c.waiting = ("", "")
        c.probe_ready = c.startup_done = False
        self.dirty.set()
        await self.event("Normal", "Started", f"Started container {c.name}")
        return True

    async def _sleep_unless_terminating(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.terminating and (left := end - time.monotonic()) > 0:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    async def _probe_loop(self, c: Container, kind: str) -> None:
        """Run one probe of a container for as long as the pod lives. Liveness and readiness
        wait for the startup probe, which stops once it succeeded (until a restart)."""
        probe: JsonObj = c.spec[kind]
        period = float(probe.get("periodSeconds", 10))
        success_needed = int(probe.get("successThreshold", 1))
        failures_allowed = int(probe.get("failureThreshold", 3))
        started_for: float | None = None
        ok_count = fail_count = 0
        while not self.terminating:
            if not c.running or (c.started == (kind == "startupProbe")):
                ok_count = fail_count = 0
                started_for = None if not c.running else started_for
                await asyncio.sleep(0.05)
                continue
            if started_for != c.started_mono:
                started_for = c.started_mono
                await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)))
                if not c.running or self.terminating:
                    continue
            ok, detail = await self._run_probe(c, probe)
            if ok:
                ok_count, fail_count = ok_count + 1, 0
                if ok_count >= success_needed:
                    self._probe_passed(c, kind)
            else:
                ok_count, fail_count = 0, fail_count + 1
                if await self._probe_failed(c, kind, detail, fail_count >= failures_allowed):
                    fail_count = 0
            await asyncio.sleep(period)

    def _probe_passed(self, c: Container, kind: str) -> None:
        if kind == "readinessProbe" and not c.probe_ready:
            c.probe_ready = True
            self.dirty.set()
        elif kind == "startupProbe" and not c.startup_done:
            c.startup_done = True
            self.dirty.set()

    async def _probe_failed(self, c: Container, kind: str, detail: str, final: bool) -> bool:
        """Report a failed probe; once ``final`` act on it. True if the container was killed."""
        what = kind.removesuffix("Probe")
        await self.event("Warning", "Unhealthy", f"{what.capitalize()} probe failed: {detail}")
        if not final:
            return False
        if kind == "readinessProbe":
            if c.probe_ready:
                c.probe_ready = False
                self.dirty.set()
            return False
        if c.proc is None or not c.running:
            return False
        await self.event("Normal", "Killing", f"Container {c.name} failed {what} probe")
        _signal_group(c.proc.pid, signal.SIGKILL)
        return True

    async def _run_probe(self, c: Container, probe: JsonObj) -> tuple[bool, str]:
        timeout = float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            return await probes.http_get(self.netns, probe, c.spec, self.pod_ip or "")
        if "tcpSocket" in probe:
            return await probes.tcp_socket(self.netns, probe, c.spec, self.pod_ip or "")
        if "exec" in probe:
            argv = [str(x) for x in (probe["exec"].get("command") or [])]
            try:
                launch = await self._launch_argv(c, argv)
            except OSError as err:
                return False, str(err)
            proc = await asyncio.create_subprocess_exec(
                *launch,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self._env(c.spec),
                start_new_session=True,
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), timeout)
            except TimeoutError:
                _signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
                return False, f"command timed out after {timeout:g}s"
            return proc.returncode == 0, out.decode(errors="replace").strip()[-300:]
        return True, "probe type not emulated (exec, httpGet, tcpSocket are): counted as success"

    # -- termination -------------------------------------------------------------------------

    def _grace(self) -> float:
        if self.shutting_down:
            return 0.0
        meta_grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        spec_grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        grace = float(meta_grace if meta_grace is not None else spec_grace)
        return min(grace, 2.0) if self.gone else grace

    async def _teardown(self) -> None:
        everything = self.init_containers + self.containers
        for c in everything:
            c.stop.set()
        grace = self._grace()
        running = [c for c in everything if c.proc is not None and c.running]
        if running and grace > 0:
            await self.event("Normal", "Killing", f"Stopping containers (grace period {grace:g}s)")
            for c in running:
                assert c.proc is not None
                _signal_group(c.proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(c.proc.wait() for c in running if c.proc)), grace
                )
        for c in everything:
            if c.proc is not None and c.running:
                _signal_group(c.proc.pid, signal.SIGKILL)
        for c in everything:
            if c.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    await c.proc.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Anything else still in the namespace (a probe, an orphan of a container) goes too.
        for pid in [] if self.host_network else processes_in_netns(self.netns):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        # Only content the runtime wrote (emptyDir, ConfigMap, Secret...): hostPath volumes
        # live in the node's tree and stay. Nothing is mounted on the host to undo: each
        # container's mounts went with its mount namespace.
        shutil.rmtree(self.dir / "volumes", ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.dir / "rootfs").rmdir()
        await self._release_network()
        with contextlib.suppress(OSError):
            (self.dir / "pod.json").unlink()

    async def _confirm_deletion(self) -> None:
        for attempt in range(5):
            try:
                await self.node.kube.delete(self.path, grace_period_seconds=0, uid=self.uid)
                return
            except (NotFoundError, ApiError) as err:
                if isinstance(err, NotFoundError) or err.status == 409:
                    return
                log.warning("pod %s/%s: confirming deletion: %s", self.namespace, self.name, err)
            except KubeError as err:
                log.warning("pod %s/%s: confirming deletion: %s", self.namespace, self.name, err)
            await asyncio.sleep(0.2 * (attempt + 1))

    # -- status and events -------------------------------------------------------------------

    def _ready(self) -> bool:
        return bool(self.containers) and all(c.ready for c in self.containers)

    def _initialized(self) -> bool:
        return all(
            c.finished and (c.terminated or {}).get("exitCode") == 0 for c in self.init_containers
        )

    def _phase(self) -> str:
        if self.init_failed:
            return "Failed"
        if not all(c.finished for c in self.init_containers):
            return "Pending"
        if not self.sandbox_ready and not any(c.terminated for c in self.containers):
            return "Pending"
        if any(c.proc is None for c in self.containers):
            return "Pending"
        if self.containers and all(c.finished for c in self.containers):
            ok = all((c.terminated or {}).get("exitCode") == 0 for c in self.containers)
            return "Succeeded" if ok else "Failed"
        return "Running"

    def status(self) -> JsonObj:
        ts = now_rfc3339()
        ready = self._ready()

        def cond(kind: str, value: bool, reason: str = "") -> JsonObj:
            c: JsonObj = {"type": kind, "status": "True" if value else "False"}
            c["lastTransitionTime"] = self._transitions.setdefault((kind, value), ts)
            c["lastProbeTime"] = None
            if reason and not value:
                c["reason"] = reason
            return c

        status: JsonObj = {
            "phase": self._phase(),
            "hostIP": self.node.host_ip,
            "hostIPs": [{"ip": self.node.host_ip}],
            "startTime": self.start_time,
            "qosClass": "BestEffort",
            "conditions": [
                cond("PodReadyToStartContainers", self.sandbox_ready),
                cond("Initialized", self._initialized(), "ContainersNotInitialized"),
                cond("ContainersReady", ready, "ContainersNotReady"),
                cond("Ready", ready, "ContainersNotReady"),
                cond("PodScheduled", True),
            ],
            "containerStatuses": [c.status(self.uid) for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status(self.uid) for c in self.init_containers]
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        return status

    async def _status_loop(self) -> None:
        last: JsonObj | None = None
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            status = self.status()
            if status == last:
                continue
            try:
                await self.node.kube.patch(self.path + "/status", {"status": status})
                last = status
                if not self._ready_logged and self._ready():
                    self._ready_logged = True
                    log.info(
                        "pod %s/%s Ready %.0f ms after the runtime saw it",
                        self.namespace,
                        self.name,
                        (time.monotonic() - self.seen_mono) * 1000,
                    )
            except NotFoundError:
                return
            except KubeError as err:
                log.warning("pod %s/%s: status update failed: %s", self.namespace, self.name, err)
                await asyncio.sleep(0.5)
                self.dirty.set()
            await asyncio.sleep(0.02)  # coalesce bursts of changes into one write

    async def event(self, kind: str, reason: str, message: str) -> None:
        """Post (or count again) a pod event, as the kubelet does."""
        ts = now_rfc3339()
        key = (reason, message)
        base = f"/api/v1/namespaces/{self.namespace}/events"
        try:
            if key in self._event_counts:
                name, count = self._event_counts[key]
                await self.node.kube.patch(
                    f"{base}/{name}", {"count": count + 1, "lastTimestamp": ts}
                )
                self._event_counts[key] = (name, count + 1)
                return
            name = f"{self.name}.{uuid.uuid4().hex[:16]}"
            await self.node.kube.create(
                base,
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": name, "namespace": self.namespace},
                    "involvedObject": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": self.name,
                        "namespace": self.namespace,
                        "uid": self.uid,
                    },
                    "reason": reason,
                    "message": message,
                    "type": kind,
                    "count": 1,
                    "firstTimestamp": ts,
                    "lastTimestamp": ts,
                    "source": {"component": "kubelet", "host": self.node.name},
                    "reportingComponent": "kubelet",
                    "reportingInstance": self.node.name,
                },
            )
            self._event_counts[key] = (name, 1)
        except KubeError as err:
            log.warning(
                "pod %s/%s: cannot post event %s: %s", self.namespace, self.name, reason, err
            )


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` references to earlier variables."""
    for key, val in env.items():
        value = value.replace(f"$({key})", val)
    return value


def resource_value(pod_spec: JsonObj, container: JsonObj, ref: JsonObj) -> str:
    """A ``resourceFieldRef`` (``limits.cpu``, ``requests.memory``...) in units of its
    ``divisor`` (default 1), rounded up as the kubelet does; a limit not set reads as the
    machine's capacity, a request not set as the limit."""
    name = str(ref.get("containerName") or container.get("name", ""))
    target = next((c for c in pod_spec.get("containers") or [] if c.get("name") == name), container)
    kind, _, resource = str(ref.get("resource", "")).partition(".")
    resources = target.get("resources") or {}
    value = (resources.get(kind) or {}).get(resource)
    if value is None and kind == "requests":
        value = (resources.get("limits") or {}).get(resource)
    if value is None:
        value = os.cpu_count() or 1 if resource == "cpu" else _memory_bytes()
    divisor = parse_milli(ref.get("divisor") or 1)
    amount = -(-parse_milli(value) // divisor)  # rounded up
    return str(max(amount, 1) if resource == "cpu" else amount)


def _memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _read_to_end(fd: int) -> str:
    """Everything written to pipe ``fd`` until its writers closed it; ``fd`` is closed."""
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _json_dumps(doc: object) -> str:
    return json.dumps(doc, separators=(",", ":"))


async def cleanup_record(record_path: Path, cni_path: list[str]) -> None:
    """Undo a pod sandbox from its record after a crash: processes, CNI attachments, netns."""
    record = read_json(record_path)
    if not record:
        with contextlib.suppress(OSError):
            record_path.unlink()
        return
    host_network = bool(record.get("hostNetwork"))
    pod_netns = "" if host_network else str(record.get("netns", ""))
    for pid in processes_in_netns(pod_netns) if pod_netns else []:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if host_network:  # in the node's namespace: only the pod's own process groups
        in_node = set(processes_in_netns(str(record.get("nodeNetns", ""))))
        for pid_file in record_path.parent.glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pid_file.read_text())
                if pid in in_node:  # not a recycled pid of some other process
                    _signal_group(pid, signal.SIGKILL)
    ctx = PodContext(
        namespace=str(record.get("namespace", "")),
        name=str(record.get("name", "")),
        uid=str(record.get("uid", "")),
        netns=netns.netns_path(pod_netns),
        container_id=str(record.get("containerId", "")),
    )
    invoker = CniInvoker(cni_path, record.get("nodeNetns") or None)
    if invoker.node_netns and not os.path.exists(netns.netns_path(invoker.node_netns)):
        invoker.node_netns = None
    for doc in reversed(record.get("attachments") or []):
        try:
            await invoker.delete(Attachment.from_json(doc), ctx)
        except NetworkAttachmentError as err:
            log.warning("cleanup of pod %s/%s: %s", ctx.namespace, ctx.name, err)
    if pod_netns:
        with contextlib.suppress(netns.NetnsError):
            await netns.delete(pod_netns)
    shutil.rmtree(record_path.parent / "volumes", ignore_errors=True)
    with contextlib.suppress(OSError):
        record_path.unlink()
