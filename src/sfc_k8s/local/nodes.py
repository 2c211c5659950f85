"""A local node's own processes, and ``sfc-k8s local node stop|start NAME``.

Every node of a local cluster has, as a real node has, its own kubelet (a node runtime process
serving only that node: ``python -m sfc_k8s.local.node --serve NAME``) and its own node agent
(run inside the node's network namespace: a pod of deploy/'s DaemonSet, which that runtime
runs, or with ``local up --operator processes`` a process of the cluster's own). ``up`` starts
them with the functions here;
``stop_node`` makes the node crash: it is recorded as stopped (so the supervisor leaves its
processes down), its underlay cable is pulled (its bridge port goes down), its runtime, agent
and every process of its pods are killed with SIGKILL, and nothing is cleaned up, so
heartbeats stop and the API server's node lifecycle controller reacts as in a real cluster.
``start_node`` puts the cable back and has the supervisor start the runtime and agent again
from their records: the runtime undoes what its crashed predecessor left and runs the node's pods
again (those not evicted meanwhile), the agent adopts its pinned state. Used by ``cli.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

from sfc_k8s.api.conditions import is_ready
from sfc_k8s.dataplane import tunnel
from sfc_k8s.local import netns, underlay
from sfc_k8s.local.apiserver.nodelifecycle import LIFECYCLE_TAINTS
from sfc_k8s.local.kube import KubeError, SyncKube, load_kubeconfig
from sfc_k8s.local.layout import Layout, pid_alive, processes_in_netns, read_json
from sfc_k8s.local.paths import default_cni_path
from sfc_k8s.local.processes import (
    LocalClusterError,
    Progress,
    alive,
    check_alive,
    ensure_supervisor,
    kill_process,
    locked_record,
    python,
    start_process,
    wait_started,
    wait_until,
)

AGENT_METRICS_PORT = 9469  # the agent's default, inside each node namespace


def runtime_process(node: str) -> str:
    return f"node-runtime-{node}"


def agent_process(node: str) -> str:
    return f"agent-{node}"


def start_runtime(
    layout: Layout, record: dict[str, Any], node: str, nodes: int, heartbeat: float
) -> None:
    """The node's kubelet: the node runtime serving ``node`` alone."""
    start_process(
        layout,
        record,
        runtime_process(node),
        [
            python(), "-m", "sfc_k8s.local.node",
            "--state-dir", str(layout.state_dir),
            "--nodes", str(nodes),
            "--serve", node,
            "--node-status-update-frequency", f"{heartbeat:g}",
            "--cni-path", ":".join(default_cni_path()),
        ],
        {},
    )  # fmt: skip


def start_agent(layout: Layout, record: dict[str, Any], node: str) -> None:
    """The node's agent, in the node's namespace with the host's mounts (its bpffs root), its
    tunnel sized for the underlay (its MTU minus the VXLAN overhead)."""
    root = layout.bpffs_root(node)
    underlay_mtu = int((record.get("underlay") or {}).get("mtu") or underlay.DEFAULT_MTU)
    argv = [
        python(), "-m", "sfc_k8s.cli", "agent",
        "--node", node,
        # the agent's service-account token: deploy/'s RBAC, nothing more
        "--kubeconfig", str(layout.component_kubeconfig("agent")),
        "--bpffs-root", root,
        "--tunnel-mtu", str(tunnel.mtu_for(underlay_mtu)),
        "--log-format", "plain",
    ]  # fmt: skip
    start_process(
        layout,
        record,
        agent_process(node),
        netns.nsenter_argv(layout.node_netns(node), argv),
        {"SFC_K8S_BPFFS_ROOT": root},
    )


def untainted_ready(node: dict[str, Any]) -> bool:
    """Ready, and the lifecycle controller took its unreachable/not-ready taints away."""
    taints = (node.get("spec") or {}).get("taints") or []
    return is_ready(node) and not any(t.get("key") in LIFECYCLE_TAINTS for t in taints)


def wait_nodes_ready(layout: Layout, names: list[str], timeout: float) -> None:
    kube = SyncKube(load_kubeconfig(layout.kubeconfig))
    since = time.time()

    def ready() -> bool:
        for name in names:
            check_alive(layout, runtime_process(name), since)
        try:
            items = kube.get("/api/v1/nodes").get("items") or []
        except KubeError:
            return False
        good = {n["metadata"]["name"] for n in items if untainted_ready(n)}
        return all(name in good for name in names)

    wait_until("the nodes to be Ready", ready, timeout, str(layout.logs_dir))


def wait_agents_serving(layout: Layout, names: list[str], timeout: float) -> None:
    """Until every node's agent answers on its metrics port (a process of the cluster, or the
    node's pod of deploy/'s DaemonSet: host network, so in the node's namespace too)."""
    since = time.time()
    recorded = set(read_json(layout.cluster_file).get("processes") or {})

    def serving() -> bool:
        for name in names:
            if agent_process(name) in recorded:
                check_alive(layout, agent_process(name), since)
        for name in names:
            try:
                netns.connect_in_netns(
                    layout.node_netns(name), "127.0.0.1", AGENT_METRICS_PORT, timeout=1
                ).close()
            except OSError:
                return False
        return True

    wait_until("the agents to serve their metrics", serving, timeout, str(layout.logs_dir))


def _running_record(layout: Layout, name: str) -> dict[str, Any]:
    record = read_json(layout.cluster_file)
    if not record.get("complete"):
        raise LocalClusterError(
            f"no local cluster is up in {layout.state_dir}: start one with 'sfc-k8s local up'"
        )
    nodes = record.get("nodes") or []
    if name not in nodes:
        raise LocalClusterError(f"node {name!r} is not a node of this cluster (it has {nodes})")
    return record


def _kill_node_processes(layout: Layout, record: dict[str, Any], name: str) -> int:
    """SIGKILL the node's runtime and agent, then everything in its namespace and its pods'."""
    killed = 0
    for process in (runtime_process(name), agent_process(name)):
        info = (record.get("processes") or {}).get(process)
        if info is not None and alive(info):
            kill_process(info)
            killed += 1
    namespaces = [layout.node_netns(name)]
    for path in sorted(layout.pods_dir.glob("*/pod.json")) if layout.pods_dir.is_dir() else []:
        pod = read_json(path)
        if pod.get("node") == name and pod.get("netns") and not pod.get("hostNetwork"):
            namespaces.append(str(pod["netns"]))
    pids = [pid for ns in namespaces for pid in processes_in_netns(ns)]
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    deadline = time.monotonic() + 5.0  # SIGKILL is not instant: return once they are gone
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return killed


def stop_node(layout: Layout, name: str, *, progress: Progress) -> None:
    """Crash node ``name`` (see the module docstring); a stopped node stays stopped."""
    _running_record(layout, name)
    with locked_record(layout) as record:  # recorded first: the supervisor, status and up know
        stopped: list[str] = record.setdefault("stoppedNodes", [])
        if name in stopped:
            progress.say(
                f"{name} is already stopped; start it with 'sfc-k8s local node start {name}'"
            )
            return
        stopped.append(name)
    done = progress.step(f"{name}: underlay link down")
    underlay.set_node_link(layout, name, up=False)
    done()
    done = progress.step(f"{name}: killing its runtime, agent and pods (SIGKILL, no clean-up)")
    killed = _kill_node_processes(layout, record, name)
    done(f"{killed} processes")
    timings = record.get("nodeLifecycle") or {}
    grace, eviction = timings.get("gracePeriod", 0), timings.get("evictionTimeout", 0)
    progress.say(
        f"{name} stopped. The API marks it NotReady {grace:g}s after its last heartbeat and "
        f"evicts its pods {eviction:g}s later; 'sfc-k8s local node start {name}' brings it back."
    )


def start_node(layout: Layout, name: str, *, progress: Progress, timeout: float) -> None:
    """Bring a stopped node back: cable in, runtime and agent started again (by the
    supervisor, started too if it died), Ready again."""
    record = _running_record(layout, name)
    procs = record.get("processes") or {}
    names = tuple(p for p in (runtime_process(name), agent_process(name)) if p in procs)
    if name not in (record.get("stoppedNodes") or []) and all(alive(procs[p]) for p in names):
        progress.say(f"{name} is running")
        return
    done = progress.step(f"{name}: underlay link up")
    underlay.set_node_link(layout, name, up=True)
    done()
    done = progress.step(f"{name}: runtime and agent started again")
    ensure_supervisor(layout, record)
    with locked_record(layout) as current:
        for process in names:
            info = current["processes"][process]
            if not alive(info):
                info["pid"] = 0  # a start asked for, not a crash: no back-off, no restart count
                info.pop("waitingUntil", None)
        current["stoppedNodes"] = [n for n in current.get("stoppedNodes") or [] if n != name]
    for process in names:
        wait_started(layout, process)
    done()
    done = progress.step(f"{name}: Ready, and the agent serving")
    wait_nodes_ready(layout, [name], timeout)
    wait_agents_serving(layout, [name], timeout)
    done()
    progress.say(f"{name} is back")
