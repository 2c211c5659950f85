"""A node crashes and comes back: ``sfc-k8s local node stop|start`` on a two-node cluster.

The whole cluster of ``local up`` runs (API server, one runtime per node, controller, agents)
with a short node-monitor grace period and eviction timeout. Covers: ``node stop`` pulls the
node's underlay cable and kills its runtime, agent and pods' processes with no clean-up (their
namespaces stay); its heartbeats (Lease renewals) stop; the API turns it ``Ready=Unknown`` with
the ``node.kubernetes.io/unreachable`` taints within the grace period (plus one controller
pass), evicts its pods after the eviction timeout, and the Deployment's replacements run on
the other node, while a pod tolerating the taint for ever stays, marked not Ready;
``local status`` shows the node Unknown, its link down and its processes
stopped (exit 0); ``local up`` stays a no-op; ``node start`` brings it back Ready and
untainted, the leftovers of the crash are gone, the pod that stayed runs again in a new sandbox,
and a scale-up places replicas on it again.
Bad names get a one-line error; ``local down`` with a node still stopped leaves nothing.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sfc_k8s.local import cli as local_cli
from sfc_k8s.local import operator_pods, underlay
from sfc_k8s.local.kube import MERGE_PATCH, SyncKube, load_kubeconfig
from sfc_k8s.local.layout import Layout, list_netns, pid_alive, processes_in_netns, read_json
from tests.integration.local.cluster import wait_for

GRACE = 3.0
EVICTION = 3.0
CONTROLLER_TICK = 2.0  # the API server's controllers run at least this often


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layout]:
    layout = Layout(tmp_path_factory.mktemp("sfcln") / "state")
    try:
        local_cli.up(
            layout,
            nodes=2,
            node_grace=GRACE,
            eviction_timeout=EVICTION,
            progress=local_cli.Progress(quiet=True),
            timeout=90,
        )
        yield layout
    finally:
        local_cli.down(layout, progress=local_cli.Progress(quiet=True))
        assert list_netns(layout.netns_prefix) == []


def _cli(layout: Layout, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = local_cli.main([*args, "--state-dir", str(layout.state_dir)])
    return code, out.getvalue(), err.getvalue()


def _kube(layout: Layout) -> SyncKube:
    return SyncKube(load_kubeconfig(layout.kubeconfig))


def _node(layout: Layout, name: str) -> dict[str, Any]:
    return _kube(layout).get(f"/api/v1/nodes/{name}")


def _ready(node: dict[str, Any]) -> str:
    return next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready")


def _taints(node: dict[str, Any]) -> set[tuple[str, str]]:
    return {(t["key"], t["effect"]) for t in node["spec"].get("taints") or []}


def _renew_time(layout: Layout, name: str) -> str:
    lease = _kube(layout).get(
        f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
    )
    return str(lease["spec"]["renewTime"])


def _pods(layout: Layout, ns: str) -> list[dict[str, Any]]:
    items = _kube(layout).get(f"/api/v1/namespaces/{ns}/pods", labelSelector="app=nf")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def _running_on(layout: Layout, ns: str) -> dict[str, str]:
    """Pod name -> node, for running and ready pods."""
    return {
        p["metadata"]["name"]: p["spec"]["nodeName"]
        for p in _pods(layout, ns)
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions") or []
        )
    }


def _wait_running(layout: Layout, ns: str, count: int) -> dict[str, str]:
    def probe() -> dict[str, str] | None:
        running = _running_on(layout, ns)
        return running if len(running) == count else None

    return wait_for(f"{count} ready replicas", probe, 60)


def _node_if(layout: Layout, name: str, ready: str) -> dict[str, Any] | None:
    node = _node(layout, name)
    return node if _ready(node) == ready else None


def _create_tolerating_pod(layout: Layout, ns: str) -> None:
    """A pod on node-2 that tolerates the unreachable taint for ever (never evicted)."""
    toleration = {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
    }
    body = {
        "metadata": {"name": "survivor", "namespace": ns},
        "spec": {
            "nodeName": "node-2",
            "tolerations": [toleration],
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": "none", "command": ["sleep", "1000"]}],
        },
    }
    _kube(layout).request("POST", f"/api/v1/namespaces/{ns}/pods", body=body)


def _pod_if_ready(layout: Layout, ns: str, ready: str) -> dict[str, Any] | None:
    pod = _kube(layout).get(f"/api/v1/namespaces/{ns}/pods/survivor")
    conditions = pod.get("status", {}).get("conditions") or []
    return (
        pod
        if {"type": "Ready", "status": ready}
        in [{"type": c["type"], "status": c["status"]} for c in conditions]
        else None
    )


def _deploy(layout: Layout, ns: str, replicas: int) -> None:
    kube = _kube(layout)
    kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    container = {"name": "main", "image": "none", "command": ["sleep", "1000"]}
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "nf", "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "nf"}},
            "template": {
                "metadata": {"labels": {"app": "nf"}},
                "spec": {"terminationGracePeriodSeconds": 0, "containers": [container]},
            },
        },
    }
    kube.request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", body=body)


@dataclass
class Before:
    """What ran on node-2 before its crash."""

    pods: list[str]  # names of the Deployment's replicas there
    pod_netns: list[str]
    pids: list[int]  # its pods', runtime's and agent's
    survivor_netns: str
    survivor_pids: list[int]


def _start_workload(layout: Layout, ns: str) -> Before:
    """Four replicas, two per node, and the tolerating pod on node-2."""
    _deploy(layout, ns, 4)
    placed = _wait_running(layout, ns, 4)
    assert sorted(placed.values()) == ["node-1", "node-1", "node-2", "node-2"]
    _create_tolerating_pod(layout, ns)
    survivor = wait_for("the tolerating pod Ready", lambda: _pod_if_ready(layout, ns, "True"), 60)
    survivor_netns = layout.pod_netns(survivor["metadata"]["uid"])
    on_node2 = [p for p in _pods(layout, ns) if p["spec"]["nodeName"] == "node-2"]
    pod_netns = [layout.pod_netns(p["metadata"]["uid"]) for p in on_node2]
    procs = read_json(layout.cluster_file)["processes"]
    pids = [pid for n in pod_netns for pid in processes_in_netns(n)]
    pids += [
        procs["node-runtime-node-2"]["pid"],
        *operator_pods.container_pids(layout, "agent", "node-2"),
    ]
    assert len(pids) > 2 and all(pid_alive(p) for p in pids)
    return Before(
        pods=[p["metadata"]["name"] for p in on_node2],
        pod_netns=pod_netns,
        pids=pids,
        survivor_netns=survivor_netns,
        survivor_pids=processes_in_netns(survivor_netns),
    )


def _ready_times(layout: Layout, name: str) -> tuple[str, str]:
    """(lastHeartbeatTime, lastTransitionTime) of the node's Ready condition."""
    node = _node(layout, name)
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    return str(ready["lastHeartbeatTime"]), str(ready["lastTransitionTime"])


def _check_lost(layout: Layout, stopped_at: float, renewed: str) -> None:
    """node-2 Unknown and tainted within the grace period (plus a pass and a heartbeat)."""
    bound = GRACE + CONTROLLER_TICK + 2.0
    lost = wait_for("node-2 Unknown", lambda: _node_if(layout, "node-2", "Unknown"), bound)
    assert time.monotonic() - stopped_at <= bound
    assert _taints(lost) == {
        ("node.kubernetes.io/unreachable", "NoSchedule"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
    }
    assert _renew_time(layout, "node-2") == renewed, "no heartbeat since the stop"
    assert _ready(_node(layout, "node-1")) == "True"


def _check_evicted(layout: Layout, ns: str, before: Before) -> None:
    def replaced() -> dict[str, str] | None:
        now = _running_on(layout, ns)
        gone = not any(p["spec"]["nodeName"] == "node-2" for p in _pods(layout, ns))
        return now if gone and len(now) == 4 else None

    moved = wait_for("replicas evicted and replaced on node-1", replaced, EVICTION + 30)
    assert set(moved.values()) == {"node-1"}
    assert not set(moved) & set(before.pods)
    # The pod that tolerates the unreachable taint for ever stays, marked not Ready.
    assert _pod_if_ready(layout, ns, "False") is not None


def _check_status_while_stopped(layout: Layout) -> None:
    code, out, _ = _cli(layout, "status")
    assert code == 0, out
    (line,) = [row for row in out.splitlines() if row.strip().startswith("node-2 ")]
    assert "Unknown" in line and "link down" in line and "stopped" in line
    assert "stopped (local node stop)" in out
    code, out, _ = _cli(layout, "up")
    assert code == 0 and "already up" in out


def _check_returned(layout: Layout, ns: str, before: Before, renewed: str) -> None:
    back = _node(layout, "node-2")
    assert _ready(back) == "True" and not _taints(back)
    assert _renew_time(layout, "node-2") != renewed
    assert not any(Path("/run/netns", n).exists() for n in before.pod_netns), "the leftovers"
    iface = underlay.read_node_interface(layout.node_netns("node-2"))
    assert iface is not None and iface.carrier
    # The pod that was not evicted runs again on the returned node, in a new sandbox.
    wait_for("the tolerating pod Ready again", lambda: _pod_if_ready(layout, ns, "True"), 60)
    again = processes_in_netns(before.survivor_netns)
    assert again and not set(again) & set(before.survivor_pids)
    _kube(layout).request(
        "PATCH",
        f"/apis/apps/v1/namespaces/{ns}/deployments/nf",
        body={"spec": {"replicas": 8}},
        content_type=MERGE_PATCH,
    )
    spread = _wait_running(layout, ns, 8)
    assert sorted(spread.values()).count("node-2") == 4, "new replicas go to the returned node"


def test_node_stop_evicts_and_node_start_returns(cluster: Layout) -> None:
    layout, ns = cluster, "failover"
    before = _start_workload(layout, ns)

    node1_beat, node1_since = _ready_times(layout, "node-1")
    code, out, _ = _cli(layout, "node", "stop", "node-2")
    stopped_at = time.monotonic()
    assert code == 0 and "node-2 stopped" in out
    assert not any(pid_alive(p) for p in before.pids), "killed, as in a crash"
    assert all(Path("/run/netns", n).exists() for n in before.pod_netns), "nothing cleaned up"
    iface = underlay.read_node_interface(layout.node_netns("node-2"))
    assert iface is not None and not iface.carrier, "its underlay link is down"
    renewed = _renew_time(layout, "node-2")
    _check_lost(layout, stopped_at, renewed)
    beat, since = _ready_times(layout, "node-1")
    assert beat > node1_beat and since == node1_since, "heartbeats are not transitions"
    _check_evicted(layout, ns, before)
    _check_status_while_stopped(layout)

    code, out, _ = _cli(layout, "node", "start", "node-2")
    assert code == 0 and "node-2 is back" in out, out
    _check_returned(layout, ns, before, renewed)


def test_node_commands_refuse_bad_names(cluster: Layout) -> None:
    code, _, err = _cli(cluster, "node", "stop", "node-9")
    assert code == 1 and err.count("\n") == 1 and "'node-9' is not a node" in err
    code, out, _ = _cli(cluster, "node", "start", "node-1")
    assert code == 0 and "node-1 is running" in out
    proc = subprocess.run(
        [sys.executable, "-m", "sfc_k8s.cli", "local", "node", "stop", "node-1",
         "--state-dir", str(cluster.state_dir / "nowhere")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "start one with 'sfc-k8s local up'" in proc.stderr


def test_down_after_a_node_stop_leaves_nothing(cluster: Layout) -> None:
    """Last in this module: it removes the module's cluster, with node-1 left crashed."""
    code, out, _ = _cli(cluster, "node", "stop", "node-1")
    assert code == 0 and "node-1 stopped" in out
    pids = [int(p["pid"]) for p in read_json(cluster.cluster_file)["processes"].values()]
    assert local_cli.main(["down", "--state-dir", str(cluster.state_dir)]) == 0
    assert list_netns(cluster.netns_prefix) == []
    assert not cluster.state_dir.exists()
    assert not any(pid_alive(pid) for pid in pids)
