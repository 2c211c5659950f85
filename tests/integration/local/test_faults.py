"""Faults of the local cluster's own processes while traffic crosses the example chain.

A one-node ``local up`` with ``examples/transparent-firewall`` applied with the real kubectl and
Ready, and long-lived TCP flows from the client pod to the server's echo port through the
firewall, every echoed byte checked. First, the operator runs from ``deploy/``: two controller
pods and one agent pod per node in ``sfc-system``, Ready, with the manifests' args, the agent on
the node's network with its CNI shim and socket in the node's own tree. Then, in turn, with
``kill -9`` (SIGKILL):

- the process of the controller replica that leads (Kopf peering), and ``kubectl scale`` of the
  firewall during its outage: the node runtime restarts the container within 5 s (new pid,
  RESTARTS 1 in ``kubectl get pods``, last state exit code 137) and the chain is Ready again
  with the new replicas programmed in the data plane;
- the process of the node's agent pod, with another scale during its outage: the same;
- the API server: back within 5 s on its database with every object, the operator's pods kept
  running meanwhile (same processes), and a scale issued once it answers again is carried out
  by the controller and the agent, whose watches resumed;
- the node runtime: back within 5 s, the node stays Ready, and it adopts the running pods
  (same pods and processes, the host-network agent too, no container restarted, the chain
  still programmed);
- the supervisor: its standby takes over within 5 s (a restart counted), a new standby runs,
  and the node runtime killed next is restarted by it;
- both supervisors (standby first), then the API server and the node runtime: nothing
  restarts them, ``local status`` says NOT RUNNING, and ``local up`` repairs them all,
  removing nothing and re-applying ``deploy/`` (an operator object deleted before is back).

Through all of them the long-lived flows stay byte-exact (the data plane never depends on the
control plane) and every namespace, Deployment and chain keeps its uid. Then a deleted
namespace is Terminating (phase, deletionTimestamp, the ``kubernetes`` finalizer) with its
contents kept for a few seconds and new objects refused; last, ``kubectl delete -f`` of the example
directory (namespace first) exits 0 with no NotFound, the namespace being Terminating for a
few seconds as with a real namespace controller.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from sfc_k8s.local import cli as local_cli
from sfc_k8s.local import operator_pods
from sfc_k8s.local.kube import SyncKube, load_kubeconfig
from sfc_k8s.local.layout import Layout, list_netns, pid_alive, read_json
from sfc_k8s.local.paths import examples_dir
from sfc_k8s.local.processes import STANDBY
from sfc_k8s.local.supervisor import UNKNOWN_EXIT
from sfc_k8s.local.traffic import EchoFlow, open_echo_flows, scrape_agent
from tests.integration.local.cluster import (
    OperatorPod,
    container_status,
    operator_container,
    wait_for,
)

NS = "sfc-demo"
CHAIN = "transparent-firewall"
LINKS = (f"{CHAIN}-client-firewall", f"{CHAIN}-firewall-server")
SERVER_IP = "192.168.100.20"
ECHO_PORT = 7007
METRICS_PORT = 9469
BACK_WITHIN = 5.0  # seconds from kill -9 to the process running again
FLOWS = 6
DOWN_FOR_REPAIR = ("apiserver", "node-runtime-node-1")
OPERATOR_NS = "sfc-system"
REPAIR_WITHIN = 15.0  # `local up` also waits for the node Ready and the agent serving


@dataclass
class Chain:
    layout: Layout
    flows: list[EchoFlow]
    objects: dict[str, str]  # kind/namespace/name -> uid, when the faults began


def _kubectl(layout: Layout, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [local_cli.KUBECTL, "--kubeconfig", str(layout.kubeconfig), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _kube(layout: Layout) -> SyncKube:
    return SyncKube(load_kubeconfig(layout.kubeconfig))


def _objects(layout: Layout) -> dict[str, str]:
    """Every namespace, Deployment and chain of the cluster, by uid."""
    kube = _kube(layout)
    found = {}
    for kind, path in (
        ("ns", "/api/v1/namespaces"),
        ("deploy", "/apis/apps/v1/deployments"),
        ("sfc", "/apis/sfc-k8s.io/v1alpha1/servicefunctionchains"),
    ):
        for item in kube.get(path)["items"]:
            md = item["metadata"]
            found[f"{kind}/{md.get('namespace', '')}/{md['name']}"] = md["uid"]
    return found


def _programmed(layout: Layout, replicas: int) -> bool:
    """The chain is Ready and both links carry exactly ``replicas`` active firewall ends."""
    sfc = _kube(layout).get(
        f"/apis/sfc-k8s.io/v1alpha1/namespaces/{NS}/servicefunctionchains/{CHAIN}"
    )
    conditions = (sfc.get("status") or {}).get("conditions") or []
    if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
        return False
    try:
        snap = scrape_agent(layout.node_netns("node-1"), METRICS_PORT)
    except (OSError, ValueError):
        return False
    for link, side in zip(LINKS, ("b", "a"), strict=True):
        ends = [e for (x, _), e in snap.endpoints.items() if x == link and e.side == side]
        if len(ends) != replicas or any(e.state != "active" for e in ends):
            return False
    return True


def _client_netns(layout: Layout) -> str:
    pods = _kube(layout).get(f"/api/v1/namespaces/{NS}/pods", labelSelector="app=client")
    return layout.pod_netns(pods["items"][0]["metadata"]["uid"])


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    layout = Layout(tmp_path_factory.mktemp("sfclf") / "state")
    flows: list[EchoFlow] = []
    try:
        local_cli.up(layout, progress=local_cli.Progress(quiet=True), timeout=90)
        applied = _kubectl(layout, "apply", "-f", str(examples_dir() / CHAIN))
        assert applied.returncode == 0, applied.stderr
        wait_for("the chain Ready with 2 firewall replicas", lambda: _programmed(layout, 2), 90)
        flows = open_echo_flows(_client_netns(layout), SERVER_IP, ECHO_PORT, FLOWS)
        yield Chain(layout, flows, _objects(layout))
    finally:
        for flow in flows:
            flow.stop()
        local_cli.down(layout, progress=local_cli.Progress(quiet=True))
        assert list_netns(layout.netns_prefix) == []


def _process(layout: Layout, name: str) -> dict[str, Any]:
    info: dict[str, Any] = read_json(layout.cluster_file)["processes"][name]
    return info


def _kill(layout: Layout, name: str) -> tuple[int, float]:
    """SIGKILL process ``name`` (only it, as ``kill -9 PID``); its pid and when."""
    pid = int(_process(layout, name)["pid"])
    os.kill(pid, signal.SIGKILL)
    return pid, time.monotonic()


def _wait_back(
    layout: Layout, name: str, old_pid: int, killed_at: float, *, exit_: str = "killed by SIGKILL"
) -> dict[str, Any]:
    def back() -> dict[str, Any] | None:
        info = _process(layout, name)
        return info if info["pid"] not in (old_pid, 0) and pid_alive(info["pid"]) else None

    info = wait_for(f"{name} running again", back, BACK_WITHIN)
    assert time.monotonic() - killed_at < BACK_WITHIN
    assert info["lastExit"] == exit_
    return info


def _status(layout: Layout) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        local_cli.main(["status", "--state-dir", str(layout.state_dir)])
    return out.getvalue()


def _scale(layout: Layout, replicas: int) -> None:
    scaled = _kubectl(layout, "scale", "deployment/firewall", "-n", NS, f"--replicas={replicas}")
    assert scaled.returncode == 0, scaled.stderr


def _assert_flows_intact(chain: Chain) -> None:
    broken = [f"flow {f.index}: {f.error}" for f in chain.flows if f.broken]
    assert not broken, broken
    before = {f.index: f.bytes_ok for f in chain.flows}
    wait_for("every flow moving", lambda: all(f.bytes_ok > before[f.index] for f in chain.flows))


def _operator_pods(layout: Layout) -> dict[str, list[dict[str, Any]]]:
    pods = _kube(layout).get(f"/api/v1/namespaces/{OPERATOR_NS}/pods")["items"]
    found: dict[str, list[dict[str, Any]]] = {"controller": [], "agent": []}
    for pod in pods:
        found[pod["metadata"]["labels"]["app.kubernetes.io/component"]].append(pod)
    return found


def _manifest_args(kind: str, name: str) -> list[str]:
    """The container args ``deploy/`` declares (the kustomize build a real cluster gets)."""
    built = subprocess.run(
        [local_cli.KUBECTL, "kustomize", str(operator_pods.deploy_dir())],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(built) if d]
    obj = next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
    return [str(a) for a in obj["spec"]["template"]["spec"]["containers"][0]["args"]]


def test_the_operator_runs_as_the_pods_of_deploy(chain: Chain) -> None:
    layout = chain.layout
    procs = read_json(layout.cluster_file)["processes"]
    assert not [n for n in procs if n == "controller" or n.startswith("agent-")], procs

    def all_ready() -> dict[str, list[dict[str, Any]]] | None:
        found = _operator_pods(layout)
        pods = found["controller"] + found["agent"]
        ok = len(found["controller"]) == 2 and len(found["agent"]) == 1
        listed = _kubectl(layout, "get", "pods", "-n", OPERATOR_NS, "--no-headers").stdout
        shown = [line.split()[1:3] for line in listed.splitlines()]
        ok = ok and shown == [["1/1", "Running"]] * 3  # as kubectl shows them
        return found if ok and all(container_status(p).get("ready") for p in pods) else None

    # (a readiness probe may miss its 1 s timeout on a loaded machine: Ready again next period)
    found = wait_for("2 controllers and 1 agent Ready in sfc-system", all_ready, 30)
    controller_args = _manifest_args("Deployment", "sfc-k8s-controller")
    for pod in found["controller"]:
        assert pod["spec"]["containers"][0]["args"] == controller_args
        assert pod["metadata"]["ownerReferences"][0]["kind"] in ("Deployment", "ReplicaSet")
    agent = found["agent"][0]
    assert agent["spec"]["containers"][0]["args"] == _manifest_args("DaemonSet", "sfc-k8s-agent")
    assert agent["spec"]["hostNetwork"] is True and agent["spec"]["nodeName"] == "node-1"
    node = _kube(layout).get("/api/v1/nodes/node-1")
    assert agent["status"]["podIP"] == node["status"]["addresses"][0]["address"]
    init = agent["status"]["initContainerStatuses"][0]
    assert init["name"] == "install-cni" and init["state"]["terminated"]["exitCode"] == 0
    # hostPath volumes in the node's own tree: install-cni's shim, the agent's CNI socket
    root = layout.node_root("node-1")
    assert (root / "opt/cni/bin/sfc-cni").read_bytes()[:4] == b"\x7fELF"
    assert (root / "run/sfc-k8s/cni.sock").is_socket()


def _restarts_column(layout: Layout, pod: str) -> str:
    listed = _kubectl(layout, "get", "pod", pod, "-n", OPERATOR_NS, "--no-headers").stdout
    return listed.split()[3]


def _kill_container(layout: Layout, target: OperatorPod) -> float:
    os.kill(target.pid, signal.SIGKILL)
    return time.monotonic()


def _wait_container_back(layout: Layout, target: OperatorPod, killed_at: float) -> None:
    """The node runtime restarted the killed container: a new process, one more restart."""

    def back() -> dict[str, Any] | None:
        pod = _kube(layout).get(f"/api/v1/namespaces/{OPERATOR_NS}/pods/{target.name}")
        status = container_status(pod)
        pid = operator_pods.container_pid(layout, pod, target.container)
        restarted = status.get("restartCount") == target.restarts + 1
        running = "running" in status.get("state", {}) and pid != target.pid
        return status if restarted and running and pid_alive(pid) else None

    status = wait_for(f"{target.name} running again", back, BACK_WITHIN)
    assert time.monotonic() - killed_at < BACK_WITHIN
    assert status["lastState"]["terminated"]["exitCode"] == 137  # 128 + SIGKILL
    assert _restarts_column(layout, target.name) == str(target.restarts + 1)


def test_killed_controller_replica_comes_back_and_a_scale_during_its_outage_converges(
    chain: Chain,
) -> None:
    leader = operator_container(chain.layout, "controller")
    killed_at = _kill_container(chain.layout, leader)
    _scale(chain.layout, 3)
    _wait_container_back(chain.layout, leader, killed_at)
    wait_for("the chain Ready with 3 replicas", lambda: _programmed(chain.layout, 3), 60)
    _assert_flows_intact(chain)


def test_killed_agent_comes_back_and_a_scale_during_its_outage_converges(chain: Chain) -> None:
    agent = operator_container(chain.layout, "agent", "node-1")
    killed_at = _kill_container(chain.layout, agent)
    _scale(chain.layout, 4)
    _wait_container_back(chain.layout, agent, killed_at)
    wait_for("the chain Ready with 4 replicas", lambda: _programmed(chain.layout, 4), 60)
    _assert_flows_intact(chain)


def _operator_uids(layout: Layout) -> dict[str, list[str]]:
    return {k: [p["metadata"]["uid"] for p in v] for k, v in _operator_pods(layout).items()}


def _container_pids(layout: Layout) -> dict[str, str]:
    """Every running container's pid, by pod directory and container."""
    return {f"{p.parent.name}/{p.stem}": p.read_text() for p in layout.pods_dir.glob("*/*.pid")}


def test_killed_apiserver_comes_back_with_every_object_and_the_operator_resumes(
    chain: Chain,
) -> None:
    operator = _operator_uids(chain.layout)
    pids = _container_pids(chain.layout)
    pid, killed_at = _kill(chain.layout, "apiserver")
    assert _wait_back(chain.layout, "apiserver", pid, killed_at)["restarts"] == 1
    wait_for("the API answering", lambda: _kube(chain.layout).reachable(), BACK_WITHIN)
    assert _objects(chain.layout) == chain.objects
    _scale(chain.layout, 5)
    wait_for("the chain Ready with 5 replicas", lambda: _programmed(chain.layout, 5), 60)
    # the node runtime kept the operator's pods (and all others) running through the outage
    assert _operator_uids(chain.layout) == operator
    kept = _container_pids(chain.layout)
    assert {k: v for k, v in kept.items() if k in pids} == pids
    _assert_flows_intact(chain)


def test_killed_node_runtime_comes_back_and_adopts_the_running_pods(chain: Chain) -> None:
    before = _kube(chain.layout).get("/api/v1/pods")["items"]
    pids = _container_pids(chain.layout)
    pid, killed_at = _kill(chain.layout, "node-runtime-node-1")
    assert _wait_back(chain.layout, "node-runtime-node-1", pid, killed_at)["restarts"] == 1
    node = _kube(chain.layout).get("/api/v1/nodes/node-1")
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    time.sleep(1.0)  # what a runtime that did not adopt would do (tear down, start again) shows
    assert _programmed(chain.layout, 5)
    after = _kube(chain.layout).get("/api/v1/pods")["items"]
    assert {p["metadata"]["uid"] for p in after} == {p["metadata"]["uid"] for p in before}

    def restarts(pods: list[dict[str, Any]]) -> dict[str, int]:
        return {
            f"{p['metadata']['name']}/{c['name']}": c.get("restartCount", 0)
            for p in pods
            for c in p["status"]["containerStatuses"]
        }

    assert restarts(after) == restarts(before)
    assert _container_pids(chain.layout) == pids  # the operator's pods included
    _assert_flows_intact(chain)


def test_killed_supervisor_is_replaced_by_its_standby_which_restarts_the_next_kill(
    chain: Chain,
) -> None:
    standby = _process(chain.layout, "supervisor-standby")["pid"]
    pid, killed_at = _kill(chain.layout, "supervisor")
    info = wait_for(
        "the standby supervising",
        lambda: (i := _process(chain.layout, "supervisor"))["pid"] == standby and i,
        BACK_WITHIN,
    )
    assert info["restarts"] == 1 and info["lastExit"] == UNKNOWN_EXIT
    assert time.monotonic() - killed_at < BACK_WITHIN
    wait_for(
        "a new standby",
        lambda: (
            pid_alive(p := _process(chain.layout, "supervisor-standby")["pid"]) and p != standby
        ),
        BACK_WITHIN,
    )
    pid, killed_at = _kill(chain.layout, "node-runtime-node-1")
    # started by the supervisor that died: the new one cannot read its exit status
    info = _wait_back(chain.layout, "node-runtime-node-1", pid, killed_at, exit_=UNKNOWN_EXIT)
    assert info["restarts"] == 2
    _assert_flows_intact(chain)


def test_with_both_supervisors_killed_up_repairs_and_keeps_every_object(chain: Chain) -> None:
    # an operator object deleted by mistake: the repair re-applies deploy/
    pdb = ("poddisruptionbudget", "sfc-k8s-controller", "-n", OPERATOR_NS)
    assert _kubectl(chain.layout, "delete", *pdb).returncode == 0
    _kill(chain.layout, "supervisor-standby")  # first, or it would take over
    _kill(chain.layout, "supervisor")
    time.sleep(0.3)  # no supervisor: processes killed now stay down
    for name in DOWN_FOR_REPAIR:
        _kill(chain.layout, name)
    time.sleep(1.0)
    status = _status(chain.layout)
    for name in ("supervisor", "supervisor-standby", *DOWN_FOR_REPAIR):
        assert not pid_alive(_process(chain.layout, name)["pid"])
        assert "NOT RUNNING" in next(x for x in status.splitlines() if x.split()[:1] == [name])
    started = time.monotonic()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = local_cli.main(["up", "--state-dir", str(chain.layout.state_dir)])
    assert code == 0 and "repaired" in out.getvalue(), out.getvalue()
    assert time.monotonic() - started < REPAIR_WITHIN
    wait_for("a standby again", lambda: pid_alive(_process(chain.layout, STANDBY)["pid"]))
    for name in ("supervisor", *DOWN_FOR_REPAIR):
        assert pid_alive(_process(chain.layout, name)["pid"])
    assert local_cli.running(chain.layout)
    assert _objects(chain.layout) == chain.objects
    assert _kubectl(chain.layout, "get", *pdb).returncode == 0
    _assert_flows_intact(chain)


def test_a_deleted_namespace_is_terminating_before_its_contents_go(chain: Chain) -> None:
    layout = chain.layout
    assert _kubectl(layout, "create", "namespace", "scratch").returncode == 0
    assert _kubectl(layout, "create", "configmap", "kept", "-n", "scratch").returncode == 0
    assert _kubectl(layout, "delete", "namespace", "scratch", "--wait=false").returncode == 0
    ns = _kube(layout).get("/api/v1/namespaces/scratch")
    assert ns["status"]["phase"] == "Terminating" and ns["metadata"]["deletionTimestamp"]
    assert ns["spec"]["finalizers"] == ["kubernetes"]
    assert _kubectl(layout, "get", "configmap", "kept", "-n", "scratch").returncode == 0
    refused = _kubectl(layout, "create", "configmap", "new", "-n", "scratch")
    assert refused.returncode == 1
    assert (
        'configmaps "new" is forbidden: unable to create new content in namespace scratch '
        "because it is being terminated" in refused.stderr
    )
    wait_for(
        "namespace scratch gone",
        lambda: _kubectl(layout, "get", "namespace", "scratch").returncode == 1,
        30,
    )


def test_kubectl_delete_of_the_example_directory_succeeds(chain: Chain) -> None:
    deleted = _kubectl(chain.layout, "delete", "-f", str(examples_dir() / CHAIN))
    assert deleted.returncode == 0, deleted.stderr
    assert "NotFound" not in deleted.stderr
    assert f'servicefunctionchain.sfc-k8s.io "{CHAIN}" deleted' in deleted.stdout
    assert _kubectl(chain.layout, "get", "namespace", NS).returncode == 1  # kubectl waited
