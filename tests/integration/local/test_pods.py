"""Node runtime: pod lifecycle as the kubelet plays it, on real network namespaces.

Covers: scheduling onto the node, Running + Ready + pod IP from the cluster network (ptp),
command/args/env run as processes inside the pod's own network namespace with stdout in the
state directory, exec readiness probes flipping Ready both ways, graceful deletion (SIGTERM,
then SIGKILL after the grace period, namespace and processes removed, object gone), and the
restart policies Always (restartCount, CrashLoopBackOff), OnFailure and Never, a failing
liveness probe killing the container so that it restarts, init containers run to completion in
order before the containers (a failing one with restartPolicy Never fails the pod), and
hostNetwork pods running in the node's namespace (which stays when they go).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from sfc_k8s.local.layout import processes_in_netns
from tests.integration.local.cluster import (
    Cluster,
    condition,
    container_status,
    phase,
    ready,
    wait_for,
)


def test_pod_runs_its_command_in_its_own_namespace(cluster: Cluster) -> None:
    ns = cluster.namespace()
    spec = {
        "containers": [
            {
                "name": "main",
                "image": "ignored",
                "command": ["sh", "-c"],
                "args": ['echo "hello $GREETING from $POD"; ip -o link show; sleep 1000'],
                "env": [
                    {"name": "GREETING", "value": "world"},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ],
            }
        ],
        "terminationGracePeriodSeconds": 1,
    }
    cluster.create_pod(ns, "hello", spec)
    pod = cluster.wait_pod(ns, "hello", ready)
    assert pod["spec"]["nodeName"] == "node-1"
    assert phase(pod) == "Running"
    assert pod["status"]["podIP"].startswith("10.244.1.")
    assert container_status(pod)["state"].get("running")
    netns = cluster.netns(pod)
    assert processes_in_netns(netns), "the container process runs in the pod's namespace"
    log = cluster.layout.pod_dir(pod["metadata"]["uid"]) / "main.log"
    text = wait_for("container output", lambda: "eth0" in _read(log) and _read(log))
    assert "hello world from hello" in text
    assert "lo:" in text and "eth0" in text  # the pod's own interfaces, not the host's

    cluster.delete_pod(ns, "hello")
    cluster.wait_gone(ns, "hello")
    assert not os.path.exists(f"/run/netns/{netns}")


def test_readiness_probe_gates_ready(cluster: Cluster, tmp_path: Path) -> None:
    ns = cluster.namespace()
    flag = tmp_path / f"ready-{secrets.token_hex(4)}"
    spec = {
        "containers": [
            {
                "name": "main",
                "command": ["sleep", "1000"],
                "readinessProbe": {
                    "exec": {"command": ["test", "-f", str(flag)]},
                    "periodSeconds": 1,
                    "failureThreshold": 1,
                },
            }
        ],
        "terminationGracePeriodSeconds": 0,
    }
    cluster.create_pod(ns, "probed", spec)
    pod = cluster.wait_pod(ns, "probed", lambda p: phase(p) == "Running")
    assert not ready(pod)
    assert condition(pod, "ContainersReady") == "False"
    flag.touch()
    cluster.wait_pod(ns, "probed", ready)
    flag.unlink()
    cluster.wait_pod(ns, "probed", lambda p: condition(p, "Ready") == "False")
    events = cluster.events(ns, "probed")
    assert any(e["reason"] == "Unhealthy" for e in events)
    cluster.delete_pod(ns, "probed")
    cluster.wait_gone(ns, "probed")


def test_graceful_deletion_sigterm_then_sigkill(cluster: Cluster) -> None:
    ns = cluster.namespace()
    polite = {
        "containers": [
            {
                "name": "main",
                "command": ["sh", "-c"],
                "args": [
                    "trap 'echo got TERM; sleep 0.5; echo bye; exit 0' TERM; "
                    "echo started; while true; do sleep 0.1; done"
                ],
            }
        ],
        "terminationGracePeriodSeconds": 10,
    }
    stubborn = {
        "containers": [
            {
                "name": "main",
                "command": ["sh", "-c"],
                "args": [
                    "trap 'echo ignoring TERM' TERM; echo started; while true; do sleep 0.1; done"
                ],
            }
        ],
        "terminationGracePeriodSeconds": 30,
    }
    cluster.create_pod(ns, "polite", polite)
    cluster.create_pod(ns, "stubborn", stubborn)
    pods = {n: cluster.wait_pod(ns, n, ready) for n in ("polite", "stubborn")}
    logs = {n: cluster.layout.pod_dir(p["metadata"]["uid"]) / "main.log" for n, p in pods.items()}
    for log in logs.values():
        wait_for("container start", lambda log=log: "started" in _read(log))

    cluster.delete_pod(ns, "polite")
    cluster.delete_pod(ns, "stubborn", grace=1)  # a shorter grace than the spec's 30s
    terminating = cluster.pod(ns, "polite")
    assert terminating is not None and terminating["metadata"].get("deletionTimestamp")
    cluster.wait_gone(ns, "polite")
    cluster.wait_gone(ns, "stubborn", timeout=15)
    assert "got TERM" in _read(logs["polite"]) and "bye" in _read(logs["polite"])
    assert "ignoring TERM" in _read(logs["stubborn"])  # got SIGTERM, survived it, then SIGKILL
    for pod in pods.values():
        netns = cluster.netns(pod)
        assert not os.path.exists(f"/run/netns/{netns}")
    kinds = {e["reason"] for e in cluster.events(ns, "polite")}
    assert {"Started", "Killing"} <= kinds


def test_restart_policies(cluster: Cluster) -> None:
    ns = cluster.namespace()

    def pod_spec(policy: str, code: int) -> dict[str, object]:
        return {
            "restartPolicy": policy,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "command": ["sh", "-c", f"echo run; exit {code}"]}],
        }

    cluster.create_pod(ns, "always", pod_spec("Always", 3))
    cluster.create_pod(ns, "never", pod_spec("Never", 3))
    cluster.create_pod(ns, "onfailure", pod_spec("OnFailure", 0))

    pod = cluster.wait_pod(ns, "always", lambda p: container_status(p).get("restartCount", 0) >= 2)
    status = container_status(pod)
    assert status["lastState"]["terminated"]["exitCode"] == 3
    assert phase(pod) == "Running"
    pod = cluster.wait_pod(ns, "never", lambda p: phase(p) == "Failed")
    assert container_status(pod)["restartCount"] == 0
    assert container_status(pod)["state"]["terminated"]["exitCode"] == 3
    pod = cluster.wait_pod(ns, "onfailure", lambda p: phase(p) == "Succeeded")
    assert container_status(pod)["state"]["terminated"]["reason"] == "Completed"
    assert any(e["reason"] == "BackOff" for e in cluster.events(ns, "always"))
    for name in ("always", "never", "onfailure"):
        cluster.delete_pod(ns, name)
    for name in ("always", "never", "onfailure"):
        cluster.wait_gone(ns, name)


def test_liveness_probe_restarts_the_container(cluster: Cluster) -> None:
    ns = cluster.namespace()
    spec = {
        "terminationGracePeriodSeconds": 0,
        "containers": [
            {
                "name": "main",
                "command": ["sleep", "1000"],
                "livenessProbe": {
                    "exec": {"command": ["false"]},
                    "periodSeconds": 1,
                    "failureThreshold": 1,
                },
            }
        ],
    }
    cluster.create_pod(ns, "unhealthy", spec)
    pod = cluster.wait_pod(
        ns, "unhealthy", lambda p: container_status(p).get("restartCount", 0) >= 1
    )
    assert container_status(pod)["lastState"]["terminated"]["signal"] == 9
    messages = [e["message"] for e in cluster.events(ns, "unhealthy")]
    assert any("failed liveness probe" in m for m in messages)
    cluster.delete_pod(ns, "unhealthy")
    cluster.wait_gone(ns, "unhealthy")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def test_init_containers_run_first_in_order(cluster: Cluster, tmp_path: Path) -> None:
    ns = cluster.namespace()
    trail = tmp_path / "trail"
    spec = {
        "terminationGracePeriodSeconds": 0,
        "initContainers": [
            {"name": "first", "command": ["sh", "-c", f"echo first >> {trail}"]},
            {"name": "second", "command": ["sh", "-c", f"echo second >> {trail}"]},
        ],
        "containers": [
            {"name": "main", "command": ["sh", "-c", f"echo main >> {trail}; sleep 1000"]}
        ],
    }
    cluster.create_pod(ns, "inits", spec)
    pod = cluster.wait_pod(ns, "inits", ready)
    assert condition(pod, "Initialized") == "True"
    states = [s["state"]["terminated"]["reason"] for s in pod["status"]["initContainerStatuses"]]
    assert states == ["Completed", "Completed"]
    wait_for("main's output", lambda: "main" in _read(trail))
    assert _read(trail).split() == ["first", "second", "main"]

    failing = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "initContainers": [{"name": "init", "command": ["false"]}],
        "containers": [{"name": "main", "command": ["sleep", "1000"]}],
    }
    cluster.create_pod(ns, "badinit", failing)
    pod = cluster.wait_pod(ns, "badinit", lambda p: phase(p) == "Failed")
    assert condition(pod, "Initialized") == "False"
    assert "running" not in container_status(pod)["state"]  # main never started
    for name in ("inits", "badinit"):
        cluster.delete_pod(ns, name)
    for name in ("inits", "badinit"):
        cluster.wait_gone(ns, name)


def test_host_network_pod_runs_in_the_node_namespace(cluster: Cluster) -> None:
    ns = cluster.namespace()
    spec = {
        "hostNetwork": True,
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "main", "command": ["sleep", "1000"]}],
    }
    cluster.create_pod(ns, "hostnet", spec)
    pod = cluster.wait_pod(ns, "hostnet", ready)
    node_ns = cluster.layout.node_netns("node-1")
    assert pod["status"]["podIP"] == pod["status"]["hostIP"] == "172.18.0.2"  # the InternalIP
    pids = processes_in_netns(node_ns)
    assert not os.path.exists(f"/run/netns/{cluster.netns(pod)}")
    cluster.delete_pod(ns, "hostnet")
    wait_for("hostnet gone", lambda: cluster.pod(ns, "hostnet") is None)
    wait_for("its process gone", lambda: len(processes_in_netns(node_ns)) < len(pids))
    assert os.path.exists(f"/run/netns/{node_ns}"), "the node namespace stays"
