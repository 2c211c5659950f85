"""A small local cluster for the node-runtime tests: the API server as a process, the nodes'
underlay (as ``sfc-k8s local up`` makes it), the node runtime as its own process, a random
state directory (so a random netns prefix), and helpers to create pods and wait for them."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sfc_k8s.local import cli as local_cli
from sfc_k8s.local import operator_pods, underlay
from sfc_k8s.local.kube import NotFoundError, SyncKube, load_kubeconfig, write_kubeconfig
from sfc_k8s.local.layout import Layout, list_netns

T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Cluster:
    layout: Layout
    kube: SyncKube
    runtime: subprocess.Popen[bytes]
    log: Path
    deleted: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def namespace(self) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        self.kube.request(
            "POST", "/api/v1/namespaces", body={"metadata": {"name": name}, "kind": "Namespace"}
        )
        return name

    def create_pod(self, ns: str, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
        for container in spec.get("containers") or []:
            container.setdefault("image", "ignored.example/none:0")
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, **meta},
            "spec": spec,
        }
        return self.kube.request("POST", f"/api/v1/namespaces/{ns}/pods", body=body)

    def pod(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            return self.kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")
        except NotFoundError:
            return None

    def delete_pod(self, ns: str, name: str, grace: int | None = None) -> None:
        pod = self.pod(ns, name)
        if pod is not None:
            self.deleted[(ns, name)] = pod
        params = {} if grace is None else {"gracePeriodSeconds": grace}
        self.kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}", params=params)

    def wait_pod(
        self, ns: str, name: str, check: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            pod = self.pod(ns, name)
            return pod if pod is not None and check(pod) else None

        return wait_for(f"pod {ns}/{name}", probe, timeout)

    def wait_gone(self, ns: str, name: str, timeout: float = 30) -> None:
        """The object is gone and so is everything the runtime ran for it (its netns last)."""
        pod = self.pod(ns, name) or self.deleted.get((ns, name))
        wait_for(f"pod {ns}/{name} to be gone", lambda: self.pod(ns, name) is None, timeout)
        if pod is not None:
            netns = Path("/run/netns") / self.netns(pod)
            wait_for(f"{netns} to be removed", lambda: not netns.exists(), timeout)

    def events(self, ns: str, pod: str) -> list[dict[str, Any]]:
        items = self.kube.get(f"/api/v1/namespaces/{ns}/events")["items"]
        return [e for e in items if e["involvedObject"]["name"] == pod]

    def netns(self, pod: dict[str, Any]) -> str:
        return self.layout.pod_netns(pod["metadata"]["uid"])


def ready(pod: dict[str, Any]) -> bool:
    return condition(pod, "Ready") == "True"


def condition(pod: dict[str, Any], kind: str) -> str | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return str(cond["status"])
    return None


def phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase", ""))


def container_status(pod: dict[str, Any], index: int = 0) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return dict(statuses[index])


def start_runtime(layout: Layout, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = layout.state_dir.parent / f"{layout.state_dir.name}-node-runtime.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sfc_k8s.local.node",
                "--state-dir",
                str(layout.state_dir),
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, log


def _stop(process: subprocess.Popen[Any], *, grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds: the process is gone when this returns."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def local_cluster(
    state_dir: Path, *, nodes: int = 1, mtu: int = underlay.DEFAULT_MTU
) -> Iterator[Cluster]:
    """API server + underlay + node runtime; on exit everything is stopped and swept."""
    layout = Layout(state_dir)
    server = subprocess.Popen(
        [sys.executable, "-m", "sfc_k8s.local.apiserver", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    runtime: subprocess.Popen[bytes] | None = None
    try:
        assert server.stdout is not None
        first = server.stdout.readline().split()  # "serving on http://127.0.0.1:PORT"
        assert first[:2] == ["serving", "on"], first
        write_kubeconfig(layout.kubeconfig, first[2])
        kube = SyncKube(load_kubeconfig(layout.kubeconfig))
        underlay.create(layout, underlay.plan(nodes), mtu)
        runtime, log = start_runtime(layout, "--nodes", str(nodes))

        def nodes_ready() -> bool:
            items = kube.get("/api/v1/nodes")["items"]
            ready = {n["metadata"]["name"] for n in items if condition(n, "Ready") == "True"}
            return ready == {f"node-{i}" for i in range(1, nodes + 1)}

        wait_for("every node Ready", nodes_ready, 20)
        yield Cluster(layout, kube, runtime, log)
    finally:
        if runtime is not None:
            _stop(runtime, grace=30)
        _stop(server, grace=10)
        if server.stdout is not None:
            server.stdout.close()
        leftovers = list_netns(layout.netns_prefix)
        local_cli.down(layout, progress=local_cli.Progress(quiet=True))
        nodes_and_underlay = ("-node-", "-underlay")
        assert all(any(k in n for k in nodes_and_underlay) for n in leftovers), leftovers


# -- the operator's pods (local up runs deploy/'s controller Deployment and agent DaemonSet) ----


def operator_container(layout: Layout, component: str, node: str | None = None) -> OperatorPod:
    """A pod of the operator (``controller``: its Kopf peering leader; ``agent``: the one of
    ``node``) with its container's pid and restart count."""
    items = operator_pods.pods(layout, component)
    if component == "agent":
        items = [p for p in items if p["spec"].get("nodeName") == node]
    else:
        items = [controller_leader(layout, items)]
    pod = items[0]
    status = container_status(pod)
    return OperatorPod(
        name=pod["metadata"]["name"],
        container=component,
        pid=operator_pods.container_pid(layout, pod, component),
        restarts=int(status.get("restartCount") or 0),
    )


@dataclass(frozen=True)
class OperatorPod:
    name: str
    container: str
    pid: int
    restarts: int


def controller_leader(layout: Layout, pods: list[dict[str, Any]]) -> dict[str, Any]:
    """The controller replica that acts: Kopf logs its pauses in favour of a higher-priority
    peer and its resumptions; the leader is the one not paused (the first if both look so,
    right after a start)."""

    def paused(pod: dict[str, Any]) -> bool:
        log = layout.pod_dir(pod["metadata"]["uid"]) / "controller.log"
        state = False
        for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
            if "Pausing operations" in line:
                state = True
            elif "Resuming operations" in line:
                state = False
        return state

    ranked = sorted(pods, key=lambda p: (paused(p), p["metadata"]["name"]))
    return ranked[0]
