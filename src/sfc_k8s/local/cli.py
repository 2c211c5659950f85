"""``sfc-k8s local up|down|status|exec|logs|node``: the local cluster as background processes.

``up`` makes the underlay joining the node namespaces (``underlay.py``), starts the supervisor
(``supervisor.py``), then has it start, each as its own process with a log in the state
directory: the API server and one node runtime per node (its kubelet). Then it installs the
operator as on a real cluster, ``kubectl apply -k deploy/``, and the node runtimes run its
controller Deployment and agent DaemonSet as pods (``operator_pods.py``); with ``--operator
processes`` the supervisor runs the controller and one agent per node as bare processes
instead (the CRDs and RBAC of ``deploy/`` applied, service-account kubeconfigs). Last comes
the custom metrics API's provider (``custom_metrics.py``). It records each thing in
``<state>/cluster.json`` before creating it, waits until everything is ready, prints the
kubeconfig path, and is idempotent; on a degraded cluster it repairs (``repair``) and never
removes anything. ``down`` stops the supervisor, then
removes all of it, from the records and then by name prefix, so it also cleans up after a
crash. ``node stop|start`` crash a node and bring it
back (``nodes.py``). Called by ``sfc_k8s.cli`` (the ``local`` subcommand) and by the demo.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sfc_k8s.api.conditions import object_condition
from sfc_k8s.local import custom_metrics, netns, nodes, operator_pods, underlay
from sfc_k8s.local.apiserver.nodelifecycle import DEFAULT_EVICTION_SECONDS, DEFAULT_GRACE_SECONDS
from sfc_k8s.local.credentials import (
    OPERATOR_NAMESPACE,
    SERVICE_ACCOUNTS,
    write_admin_kubeconfig,
    write_component_kubeconfig,
)
from sfc_k8s.local.kube import KubeError, SyncKube, load_kubeconfig
from sfc_k8s.local.layout import (
    BPFFS_BASE,
    Layout,
    default_state_dir,
    list_netns,
    node_name,
    processes_in_netns,
    read_json,
)
from sfc_k8s.local.node.pod import cleanup_record
from sfc_k8s.local.node.runtime import HEARTBEAT_SECONDS
from sfc_k8s.local.paths import crds_dir, default_cni_path, rbac_manifests
from sfc_k8s.local.processes import (
    LocalClusterError,
    Progress,
    alive,
    check_alive,
    ensure_supervisor,
    locked_record,
    python,
    save_fields,
    start_process,
    stop_order,
    stop_processes,
    stop_supervisor,
    tail_log,
    wait_until,
)

__all__ = [
    "KUBECTL",
    "LocalClusterError",
    "Progress",
    "down",
    "main",
    "repair",
    "running",
    "tail_log",
    "up",
]

KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl")
READY_TIMEOUT = 60.0
# How the operator runs: as pods of deploy/'s Deployment and DaemonSet (operator_pods.py), or
# as bare processes the supervisor runs (the controller and one agent per node).
OPERATOR_PODS = "pods"
OPERATOR_PROCESSES = "processes"
OPERATOR_MODES = (OPERATOR_PODS, OPERATOR_PROCESSES)


# -- up -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def running(layout: Layout) -> bool:
    """Whether a cluster recorded in ``layout`` is up (its processes alive but those of nodes
    stopped with ``local node stop``, API answering)."""
    record = read_json(layout.cluster_file)
    procs = record.get("processes") or {}
    if not record.get("complete") or not procs:
        return False
    if not all(alive(info) for name, info in procs.items() if not _of_stopped_node(record, name)):
        return False
    try:
        return SyncKube(load_kubeconfig(layout.kubeconfig)).reachable()
    except KubeError:
        return False


def _of_stopped_node(record: dict[str, Any], process: str) -> bool:
    return any(
        process in (nodes.runtime_process(n), nodes.agent_process(n))
        for n in record.get("stoppedNodes") or []
    )


@dataclass(frozen=True)
class UpOptions:
    """What ``local up`` builds: node count, underlay MTU and the node lifecycle's timings."""

    nodes: int = 1
    mtu: int = underlay.DEFAULT_MTU
    node_grace: float = DEFAULT_GRACE_SECONDS
    eviction_timeout: float = DEFAULT_EVICTION_SECONDS
    operator: str = OPERATOR_PODS

    @property
    def heartbeat(self) -> float:
        """The kubelet's 10 s status updates, or a quarter of a shorter grace period."""
        return min(HEARTBEAT_SECONDS, self.node_grace / 4)

    def check(self) -> None:
        try:
            underlay.check_options(self.nodes, self.mtu)
        except underlay.UnderlayError as err:
            raise LocalClusterError(str(err)) from err
        for flag, value in (
            ("--node-monitor-grace-period", self.node_grace),
            ("--pod-eviction-timeout", self.eviction_timeout),
        ):
            if not 0 < value <= 86400:
                raise LocalClusterError(f"{flag} {value:g}: expected seconds from 0 to 86400")
        if self.operator not in OPERATOR_MODES:
            raise LocalClusterError(
                f"--operator {self.operator}: expected one of {', '.join(OPERATOR_MODES)}"
            )


def up(
    layout: Layout,
    *,
    nodes: int = 1,
    mtu: int = underlay.DEFAULT_MTU,
    node_grace: float = DEFAULT_GRACE_SECONDS,
    eviction_timeout: float = DEFAULT_EVICTION_SECONDS,
    operator: str = OPERATOR_PODS,
    progress: Progress | None = None,
    timeout: float = 60,
) -> Path:
    """Start the local cluster (or find it running) and return its kubeconfig path."""
    progress = progress or Progress()
    options = UpOptions(nodes, mtu, node_grace, eviction_timeout, operator)
    options.check()
    if running(layout):
        progress.say(f"local cluster already up (state {layout.state_dir})")
        return layout.kubeconfig
    existing = read_json(layout.cluster_file)
    if existing.get("complete"):
        repair(layout, existing, progress=progress, timeout=timeout)
        return layout.kubeconfig
    if layout.cluster_file.exists():
        # An up that never finished: nothing of the user's can be in it yet.
        progress.say("cleaning up the remains of a previous, unfinished 'local up'")
        down(layout, progress=Progress(quiet=True))
    progress.say(f"starting the local cluster {layout.cluster_id} in {layout.state_dir}")
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    names = [node_name(i) for i in range(1, nodes + 1)]
    record: dict[str, Any] = {
        "clusterId": layout.cluster_id,
        "netnsPrefix": layout.netns_prefix,
        "nodes": names,
        "bpffsRoots": [layout.node_bpffs(n) for n in names],
        "nodeLifecycle": {
            "gracePeriod": node_grace,
            "evictionTimeout": eviction_timeout,
            "heartbeat": options.heartbeat,
        },
        "operator": operator,
        "created": datetime.now(UTC).isoformat(),
        "processes": {},
    }
    with locked_record(layout) as current:
        current.clear()
        current.update(record)
    try:
        _make_underlay(layout, record, nodes, mtu, progress)
        _up(layout, record, options, progress, timeout)
    except (
        LocalClusterError,
        KubeError,
        OSError,
        subprocess.SubprocessError,
        underlay.UnderlayError,
    ) as err:
        progress.say(f"  failed: {err}")
        progress.say("  tearing down what was started")
        down(layout, progress=Progress(quiet=True))
        raise LocalClusterError(f"local cluster did not start: {err}") from err
    return layout.kubeconfig


def _make_underlay(
    layout: Layout, record: dict[str, Any], nodes: int, mtu: int, progress: Progress
) -> None:
    """The node namespaces joined by the underlay bridge (recorded before it is made)."""
    links = underlay.plan(nodes)
    addresses = ", ".join(f"{link.node} {link.address}" for link in links)
    done = progress.step(f"underlay {underlay.SUBNET} MTU {mtu} ({addresses})")
    save_fields(layout, record, underlay=underlay.record(layout, links, mtu))
    underlay.create(layout, links, mtu)
    done()


def _start_apiserver(
    layout: Layout, record: dict[str, Any], options: UpOptions, timeout: float
) -> str:
    port = _free_port()
    server = f"https://127.0.0.1:{port}"
    write_admin_kubeconfig(layout, server)  # makes the cluster's CA and certificates first
    save_fields(layout, record, server=server)
    since = time.time()
    start_process(
        layout,
        record,
        "apiserver",
        [
            python(), "-m", "sfc_k8s.local.apiserver",
            "--port", str(port),
            "--state-dir", str(layout.state_dir / "apiserver"),
            # the objects survive an API server restart (docs/local-cluster.md, The store)
            "--database", str(layout.state_dir / "apiserver" / "store.db"),
            "--pod-logs", str(layout.pods_dir),  # kubectl logs reads the containers' logs
            "--node-monitor-grace-period", f"{options.node_grace:g}",
            "--pod-eviction-timeout", f"{options.eviction_timeout:g}",
            # HTTPS with the cluster's CA, every request authenticated, RBAC enforced
            "--pki", str(layout.pki_dir),
            # a development cluster: HPAs follow the load in seconds (docs/autoscaling.md)
            "--horizontal-pod-autoscaler-sync-period",
            f"{custom_metrics.HPA_SYNC_SECONDS:g}",
        ],
        {},
    )  # fmt: skip
    kube = SyncKube(load_kubeconfig(layout.kubeconfig))

    def api_up() -> bool:
        check_alive(layout, "apiserver", since)
        return kube.reachable()

    wait_until("the API server", api_up, timeout, str(layout.logs_dir))
    return server


def _register_crds(layout: Layout) -> int:
    crds = sorted(str(p) for p in crds_dir().glob("*.yaml"))
    if crds:
        args = [a for path in crds for a in ("-f", path)]
        _kubectl(layout, "apply", *args)
        _kubectl(layout, "wait", "--for=condition=Established", "--timeout=30s", *args)
    return len(crds)


def _operator_credentials(layout: Layout) -> int:
    """Apply deploy/base's namespace and RBAC as they are, then give the controller and the
    agents kubeconfigs with their service accounts' tokens; returns how many manifests."""
    manifests = rbac_manifests()
    _kubectl(layout, "apply", *(a for path in manifests for a in ("-f", str(path))))
    admin = SyncKube(load_kubeconfig(layout.kubeconfig))
    for component in SERVICE_ACCOUNTS:
        write_component_kubeconfig(layout, admin, component)
    return len(manifests)


def _start_controller(layout: Layout, record: dict[str, Any]) -> None:
    start_process(
        layout,
        record,
        "controller",
        [
            python(), "-m", "sfc_k8s.cli", "controller",
            # its service account's token: it runs with deploy/'s RBAC, nothing more
            "--kubeconfig", str(layout.component_kubeconfig("controller")),
            "--all-namespaces",
            "--standalone",  # one replica here: no Kopf peering object needed
            "--log-format", "plain",
        ],
        {},
    )  # fmt: skip


def _up(
    layout: Layout,
    record: dict[str, Any],
    options: UpOptions,
    progress: Progress,
    timeout: float,
) -> None:
    since = time.time()
    done = progress.step("supervisor (restarts every process that dies)")
    ensure_supervisor(layout, record)
    done()
    done = progress.step("API server")
    server = _start_apiserver(layout, record, options, timeout)
    done(f"on {server}")
    names: list[str] = record["nodes"]
    done = progress.step(f"node runtimes (one per node: {', '.join(names)})")
    for name in names:
        nodes.start_runtime(layout, record, name, options.nodes, options.heartbeat)
    done()
    if options.operator == OPERATOR_PODS:
        _up_operator_pods(layout, options, names, progress, timeout)
        _start_custom_metrics(layout, record, names[0], progress, timeout)
    else:
        _up_operator_processes(layout, record, names, progress, timeout=timeout, since=since)
    save_fields(layout, record, complete=True)
    progress.say(f"local cluster up. kubeconfig: {layout.kubeconfig}")
    progress.say(f"  export KUBECONFIG={layout.kubeconfig}")


def _up_operator_pods(
    layout: Layout, options: UpOptions, names: list[str], progress: Progress, timeout: float
) -> None:
    """deploy/ applied as on a real cluster; its pods run on the nodes (operator_pods.py)."""
    done = progress.step("operator: kubectl apply -k deploy/")
    done(f"{operator_pods.apply(layout, options.mtu, kubectl=KUBECTL)} objects")
    done = progress.step("nodes Ready")
    nodes.wait_nodes_ready(layout, names, timeout)
    done()
    done = progress.step("operator pods: an agent Ready on every node, 2 controllers running")
    operator_pods.wait_running(layout, names, timeout)
    done()


def _up_operator_processes(
    layout: Layout,
    record: dict[str, Any],
    names: list[str],
    progress: Progress,
    *,
    timeout: float,
    since: float,
) -> None:
    """``--operator processes``: the controller and the agents as supervised processes."""
    done = progress.step("CustomResourceDefinitions (deploy/crds)")
    done(f"{_register_crds(layout)} registered")
    done = progress.step("operator RBAC (deploy/base) and service-account kubeconfigs")
    done(f"{_operator_credentials(layout)} manifests applied")
    done = progress.step("nodes Ready")
    nodes.wait_nodes_ready(layout, names, timeout)
    done()
    done = progress.step("controller")
    _start_controller(layout, record)
    done()
    for name in names:
        root = layout.bpffs_root(name)
        done = progress.step(f"agent of {name} (netns {layout.node_netns(name)}, bpffs {root})")
        nodes.start_agent(layout, record, name)
        done()
    # while the agents start (the provider answers without them)
    _start_custom_metrics(layout, record, names[0], progress, timeout)
    done = progress.step("waiting for the agents' metrics and the controller to settle")
    nodes.wait_agents_serving(layout, names, timeout)
    _settle(layout, record, since)
    done()


def _start_custom_metrics(
    layout: Layout, record: dict[str, Any], node: str, progress: Progress, timeout: float
) -> None:
    """The built-in metrics provider behind its APIService (``custom_metrics.py``)."""
    done = progress.step(f"custom metrics API (sfc-k8s metrics-provider on {node})")
    where = custom_metrics.start(
        layout, record, node, lambda *a: _kubectl(layout, *a), timeout=timeout
    )
    done(where)


def _settle(layout: Layout, record: dict[str, Any], since: float) -> None:
    """Kopf has no readiness signal: watch every process stay up for a second."""
    settle_until = time.monotonic() + 1.0
    while time.monotonic() < settle_until:
        for name in record["processes"]:
            check_alive(layout, name, since)
        time.sleep(0.1)


# -- repair -------------------------------------------------------------------------------------


def _down_processes(record: dict[str, Any]) -> list[str]:
    """Processes that should run and do not (those of stopped nodes are meant to be down)."""
    procs = record.get("processes") or {}
    return sorted(n for n, i in procs.items() if not alive(i) and not _of_stopped_node(record, n))


def repair(
    layout: Layout, record: dict[str, Any], *, progress: Progress, timeout: float = READY_TIMEOUT
) -> None:
    """Bring a degraded cluster back: the supervisor if it died, then (through it) every
    process that is down, at once rather than after its back-off, then what of ``deploy/``
    was deleted (``kubectl apply -k``, as a re-install). Objects are kept: only ``local down``
    removes state."""
    dead = _down_processes(record)
    progress.say(
        f"repairing the local cluster {layout.cluster_id} in {layout.state_dir}: "
        f"{', '.join(dead) or 'API server not answering'}"
    )
    done = progress.step("supervisor")
    done("started again" if ensure_supervisor(layout, record) else "running")
    with locked_record(layout) as current:
        for name in _down_processes(current):
            info = current["processes"][name]
            if "waitingUntil" in info:  # in back-off: a repair restarts it now
                info["waitingUntil"] = time.time()
    done = progress.step(f"restarting {', '.join(dead) or 'nothing'}")
    kube = SyncKube(load_kubeconfig(layout.kubeconfig))

    def back() -> bool:
        return not _down_processes(read_json(layout.cluster_file)) and kube.reachable()

    wait_until("the processes to run again", back, timeout, str(layout.logs_dir))
    stopped = set(record.get("stoppedNodes") or [])
    names = [n for n in record.get("nodes") or [] if n not in stopped]
    nodes.wait_nodes_ready(layout, names, timeout)
    done()
    if record.get("operator", OPERATOR_PODS) == OPERATOR_PODS:
        mtu = int((record.get("underlay") or {}).get("mtu", underlay.DEFAULT_MTU))
        done = progress.step("operator: kubectl apply -k deploy/ (restores what was deleted)")
        done(f"{operator_pods.apply(layout, mtu, kubectl=KUBECTL)} objects")
    done = progress.step("agents serving")
    nodes.wait_agents_serving(layout, names, timeout)
    done()
    progress.say(f"local cluster repaired. kubeconfig: {layout.kubeconfig}")


def _kubectl(layout: Layout, *args: str, timeout: float = 60) -> str:
    try:
        proc = subprocess.run(
            [KUBECTL, "--kubeconfig", str(layout.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise LocalClusterError(f"kubectl {' '.join(args)} failed: {err}") from err
    if proc.returncode != 0:
        raise LocalClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


# -- down ---------------------------------------------------------------------------------------


def down(layout: Layout, *, progress: Progress | None = None) -> None:
    """Remove everything the cluster of ``layout`` made: processes, pods, netns, pins, files."""
    progress = progress or Progress()
    done = progress.step("stopping processes (the supervisor first)")
    stop_supervisor(layout)
    record = read_json(layout.cluster_file)  # read after: what the supervisor last started
    stop_processes(record)
    done()
    done = progress.step("removing pods (CNI DEL, namespaces)")
    records = sorted(layout.pods_dir.glob("*/pod.json")) if layout.pods_dir.is_dir() else []
    if records:
        cni_path = default_cni_path()

        async def clean() -> None:
            await asyncio.gather(*(cleanup_record(r, cni_path) for r in records))

        asyncio.run(clean())
    done(f"{len(records)} left by the runtime")
    done = progress.step("removing network namespaces and bpffs pins")
    namespaces = list_netns(layout.netns_prefix)
    # pods first: their processes and veths, then the nodes (agents live there)
    namespaces.sort(key=lambda n: "-pod-" not in n)
    for ns in namespaces:
        for pid in processes_in_netns(ns):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        netns.delete_sync(ns)
    roots = set(record.get("bpffsRoots") or [])
    base = Path(BPFFS_BASE)
    if base.is_dir():
        roots |= {str(p) for p in base.glob(f"{layout.netns_prefix}*")}
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)
    with contextlib.suppress(OSError):
        base.rmdir()  # only if no other cluster uses it
    done(f"{len(namespaces)} namespaces, {len(roots)} bpffs roots")
    done = progress.step(f"removing state files in {layout.state_dir}")
    for name in ("cluster.json", "kubeconfig", "cluster.lock", "supervisor.lock"):
        with contextlib.suppress(OSError):
            (layout.state_dir / name).unlink()
    folders = ("logs", "pods", "ipam", "apiserver", "demo", "pki", "kubeconfigs", "nodes")
    for folder in (*folders, "image", "deploy"):
        shutil.rmtree(layout.state_dir / folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        layout.state_dir.rmdir()
    done()
    progress.say("local cluster down")


# -- status, exec -------------------------------------------------------------------------------


def status(layout: Layout) -> int:
    """Print the cluster's processes, underlay, nodes and pods; 1 if something is not running
    (the processes of a node stopped with ``local node stop`` are expected not to)."""
    record = read_json(layout.cluster_file)
    if not record:
        print(f"no local cluster in {layout.state_dir}: start one with 'sfc-k8s local up'")
        return 1
    print(f"cluster {record.get('clusterId')} in {layout.state_dir}")
    print(f"kubeconfig: {layout.kubeconfig}")
    print(f"API server: {record.get('server')}")
    healthy = _print_processes(record)
    _print_underlay(record)
    try:
        kube = SyncKube(load_kubeconfig(layout.kubeconfig))
        node_items = kube.get("/api/v1/nodes").get("items") or []
        pods = kube.get("/api/v1/pods").get("items") or []
    except KubeError as err:
        print(f"API server not reachable: {err}")
        return 1
    _print_nodes(layout, record, node_items, pods)
    if record.get("operator", OPERATOR_PROCESSES) == OPERATOR_PODS:  # older records: processes
        print(f"operator pods (deploy/, namespace {OPERATOR_NAMESPACE}):")
        print(f"  {'NAME':<40} {'NODE':<8} {'READY':<7} {'RESTARTS':<9} AGE")
        print("\n".join(operator_pods.pods_summary(layout)) or "  none")
    phases: dict[str, int] = {}
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase", "Pending")
        phases[phase] = phases.get(phase, 0) + 1
    summary = ", ".join(f"{n} {p}" for p, n in sorted(phases.items())) or "none"
    print(f"pods: {len(pods)} ({summary})")
    return 0 if healthy and record.get("complete") else 1


def _print_processes(record: dict[str, Any]) -> bool:
    """One line per process: pid, state, restarts by the supervisor and its last exit."""
    print("processes:")
    print(f"  {'NAME':<22} {'PID':<8} {'STATE':<26} {'RESTARTS':<9} LAST EXIT")
    healthy = True
    for name, info in sorted((record.get("processes") or {}).items(), key=_process_order):
        if alive(info):
            state = "running"
        elif _of_stopped_node(record, name):
            state = "stopped (local node stop)"
        else:
            state, healthy = "NOT RUNNING", False
        line = f"  {name:<22} {info['pid']:<8} {state:<26} {info.get('restarts', 0):<9} "
        print(line + _last_exit(info))
    logs = {str(Path(str(i["log"])).parent) for i in (record.get("processes") or {}).values()}
    print(f"  logs: {', '.join(sorted(logs))}/NAME.log")
    return healthy


def _process_order(item: tuple[str, dict[str, Any]]) -> tuple[int, str]:
    return (-stop_order(item[0]), item[0])  # start order: API server first, supervisor last


def _last_exit(info: dict[str, Any]) -> str:
    """``killed by SIGKILL, 12s ago`` or ``-``."""
    if not info.get("lastExit"):
        return "-"
    ago = time.time() - float(info.get("lastExitAt") or 0)
    return f"{info['lastExit']}, {ago:.0f}s ago"


def _print_underlay(record: dict[str, Any]) -> None:
    ul = record.get("underlay") or {}
    if ul:
        print(
            f"underlay: bridge {ul.get('bridge')} in netns {ul.get('netns')}, "
            f"{ul.get('subnet')}, MTU {ul.get('mtu')}"
        )
    timings = record.get("nodeLifecycle") or {}
    if timings:
        print(
            f"node lifecycle: heartbeat every {timings['heartbeat']:g}s, NotReady after "
            f"{timings['gracePeriod']:g}s without one, pods evicted "
            f"{timings['evictionTimeout']:g}s later"
        )


def _node_state(node: dict[str, Any]) -> str:
    """``Ready``, ``NotReady`` (Ready=False) or ``Unknown`` (no heartbeat), as kubectl shows
    the last two both as NotReady."""
    ready = object_condition(node, "Ready") or {}
    if ready.get("status") == "True":
        return "Ready"
    return "NotReady" if ready.get("status") == "False" else "Unknown"


def _print_nodes(
    layout: Layout, record: dict[str, Any], items: list[dict[str, Any]], pods: list[Any]
) -> None:
    print("nodes:")
    stopped = record.get("stoppedNodes") or []
    for node in items:
        name = node["metadata"]["name"]
        addresses = (node.get("status") or {}).get("addresses") or []
        ip = next((a["address"] for a in addresses if a["type"] == "InternalIP"), "-")
        iface = underlay.read_node_interface(layout.node_netns(name))
        link = "-" if iface is None else ("up" if iface.carrier else "down")
        taints = (node.get("spec") or {}).get("taints") or []
        count = sum(1 for p in pods if (p.get("spec") or {}).get("nodeName") == name)
        line = f"  {name:<10} {_node_state(node):<9} {ip:<15} link {link:<4} "
        line += f"netns {layout.node_netns(name)}  pods {count}"
        if taints:
            line += "  taints " + ",".join(f"{t.get('key')}:{t.get('effect')}" for t in taints)
        if name in stopped:
            line += "  (stopped: local node start " + name + ")"
        print(line)


def find_pod(layout: Layout, name: str, namespace: str) -> dict[str, Any]:
    """The pod ``name`` (or the first ready pod of ``deploy/NAME``) in ``namespace``."""
    if not read_json(layout.cluster_file).get("complete"):
        raise LocalClusterError(
            f"no local cluster is up in {layout.state_dir}: start one with 'sfc-k8s local up'"
        )
    kube = SyncKube(load_kubeconfig(layout.kubeconfig))
    if name.startswith(("deploy/", "deployment/")):
        deploy = kube.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name.split('/')[1]}")
        labels = (deploy["spec"].get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        pods = kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)["items"]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        if not live:
            raise LocalClusterError(f"deployment {name} in {namespace} has no pod")
        return min(live, key=lambda p: p["metadata"]["name"])
    try:
        return kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    except KubeError as err:
        raise LocalClusterError(f"pod {namespace}/{name}: {err}") from err


def pod_netns(layout: Layout, name: str, namespace: str) -> str:
    pod = find_pod(layout, name, namespace)
    ns = layout.pod_netns(pod["metadata"]["uid"])
    if not os.path.exists(netns.netns_path(ns)):
        raise LocalClusterError(
            f"pod {namespace}/{pod['metadata']['name']} has no network namespace on this machine "
            "(not started yet, or not on this local cluster)"
        )
    return ns


def exec_in_pod(layout: Layout, name: str, namespace: str, command: list[str]) -> int:
    if not command:
        raise LocalClusterError("give the command after '--': local exec POD -- CMD...")
    ns = pod_netns(layout, name, namespace)
    argv = netns.exec_argv(ns, command)
    sys.stdout.flush()
    os.execvp(argv[0], argv)


def pod_logs(
    layout: Layout, name: str, namespace: str, container: str | None, *, follow: bool = False
) -> int:
    """Print a container's stdout/stderr (what ``kubectl logs`` would show)."""
    pod = find_pod(layout, name, namespace)
    names = [c["name"] for c in pod["spec"].get("containers") or []]
    names += [c["name"] for c in pod["spec"].get("initContainers") or []]
    if container is None:
        if len(names) != 1:
            raise LocalClusterError(f"pod {name} has containers {names}: choose one with -c")
        container = names[0]
    if container not in names:
        raise LocalClusterError(f"pod {name} has no container {container!r} (it has {names})")
    path = layout.pod_dir(pod["metadata"]["uid"]) / f"{container}.log"
    if not path.exists():
        raise LocalClusterError(f"no log yet for {name}/{container} ({path})")
    with open(path, "rb") as f:
        while True:
            data = f.read(65536)
            if data:
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
            elif not follow or not path.exists():
                return 0
            else:
                time.sleep(0.2)


# -- entry point --------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sfc-k8s local",
        description="The local cluster: API server, node runtime, controller and agents as "
        "background processes, nodes and pods as network namespaces.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="default $SFC_K8S_LOCAL_DIR or /var/lib/sfc-k8s-local",
    )
    parser.epilog = "The state directory option may also follow the subcommand."
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the local cluster (idempotent)")
    p_up.add_argument("--nodes", type=int, default=1, help="number of nodes (default 1)")
    p_up.add_argument(
        "--mtu",
        type=int,
        default=underlay.DEFAULT_MTU,
        help=f"the underlay's MTU, given to every node and pod (default {underlay.DEFAULT_MTU})",
    )
    p_up.add_argument(
        "--node-monitor-grace-period",
        type=float,
        default=DEFAULT_GRACE_SECONDS,
        metavar="SECONDS",
        help="a node without heartbeat this long turns NotReady (Unknown) "
        f"(default {DEFAULT_GRACE_SECONDS:g}, as kube-controller-manager)",
    )
    p_up.add_argument(
        "--pod-eviction-timeout",
        type=float,
        default=DEFAULT_EVICTION_SECONDS,
        metavar="SECONDS",
        help="pods on an unreachable node are evicted this long after it turned NotReady "
        f"(default {DEFAULT_EVICTION_SECONDS:g}, Kubernetes' default toleration)",
    )
    p_up.add_argument(
        "--operator",
        choices=OPERATOR_MODES,
        default=OPERATOR_PODS,
        help="run the controller and the agents as pods of deploy/'s Deployment and DaemonSet "
        f"(default, '{OPERATOR_PODS}'), or as bare processes ('{OPERATOR_PROCESSES}')",
    )
    p_up.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    p_up.add_argument("--timeout", type=float, default=READY_TIMEOUT)
    p_down = sub.add_parser("down", help="remove everything the local cluster made")
    p_down.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    p_status = sub.add_parser(
        "status", help="processes, underlay, nodes (readiness, address, link), pods, kubeconfig"
    )
    p_status.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    p_node = sub.add_parser("node", help="crash a node and bring it back: node stop|start NAME")
    p_node.add_argument("action", choices=["stop", "start"])
    p_node.add_argument("node", help="node name, e.g. node-2")
    p_node.add_argument("--timeout", type=float, default=READY_TIMEOUT)
    p_node.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    p_exec = sub.add_parser(
        "exec", help="run a command in a pod's network namespace: exec POD [-n NS] -- CMD..."
    )
    p_exec.add_argument("pod", help="pod name, or deploy/NAME")
    p_exec.add_argument("-n", "--namespace", default="default")
    p_exec.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    p_logs = sub.add_parser("logs", help="a container's output: logs POD [-n NS] [-c C] [-f]")
    p_logs.add_argument("pod", help="pod name, or deploy/NAME")
    p_logs.add_argument("-n", "--namespace", default="default")
    p_logs.add_argument("-c", "--container", default=None)
    p_logs.add_argument("-f", "--follow", action="store_true")
    p_logs.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    args = parser.parse_args(argv)
    args.cmd = command
    return args


def _up_command(layout: Layout, args: argparse.Namespace) -> int:
    up(
        layout,
        nodes=args.nodes,
        mtu=args.mtu,
        node_grace=args.node_monitor_grace_period,
        eviction_timeout=args.pod_eviction_timeout,
        operator=args.operator,
        timeout=args.timeout,
    )
    return 0


def _down_command(layout: Layout) -> int:
    down(layout)
    return 0


def _node_command(layout: Layout, args: argparse.Namespace) -> int:
    if args.action == "stop":
        nodes.stop_node(layout, args.node, progress=Progress())
    else:
        nodes.start_node(layout, args.node, progress=Progress(), timeout=args.timeout)
    return 0


def _run(layout: Layout, args: argparse.Namespace) -> int:
    """Carry out one parsed command; user errors raise ``LocalClusterError``."""
    commands: dict[str, Callable[[], int]] = {
        "up": lambda: _up_command(layout, args),
        "down": lambda: _down_command(layout),
        "status": lambda: status(layout),
        "node": lambda: _node_command(layout, args),
        "logs": lambda: pod_logs(
            layout, args.pod, args.namespace, args.container, follow=args.follow
        ),
        "exec": lambda: exec_in_pod(layout, args.pod, args.namespace, args.cmd),
    }
    return commands[args.command]()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    layout = Layout(args.state_dir or default_state_dir())
    if os.geteuid() != 0:
        print("sfc-k8s local: needs root (network namespaces, bpffs)", file=sys.stderr)
        return 1
    try:
        return _run(layout, args)
    except (LocalClusterError, KubeError, underlay.UnderlayError) as err:
        print(f"sfc-k8s local: {err}", file=sys.stderr)
        return 1
