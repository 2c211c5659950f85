"""``sfc-k8s local up|down|status|exec|logs``: the local cluster as background processes.

``up`` starts, in this order and each as its own process with a log in the state directory:
the API server, the node runtime (which creates one network namespace per node), the CRDs of
``deploy/crds``, the controller, and one node agent per node run inside its node's namespace
with its own bpffs root. It records each thing in ``<state>/cluster.json`` before creating it,
waits until everything is ready, prints the kubeconfig path, and is idempotent. ``down`` removes
all of it, from the records and then by name prefix, so it also cleans up after a crash.
Called by ``sfc_k8s.cli`` (the ``local`` subcommand) and by the demo.
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

from sfc_k8s.local import netns, underlay
from sfc_k8s.local.kube import KubeError, SyncKube, load_kubeconfig, write_kubeconfig
from sfc_k8s.local.layout import (
    BPFFS_BASE,
    Layout,
    default_state_dir,
    list_netns,
    node_name,
    pid_alive,
    processes_in_netns,
    read_json,
    write_json,
)
from sfc_k8s.local.node.pod import cleanup_record
from sfc_k8s.local.paths import crds_dir, default_cni_path

KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl")
READY_TIMEOUT = 60.0
AGENT_METRICS_PORT = 9469  # the agent's default, inside each node namespace
STOP_ORDER = ("controller", "agent-", "node-runtime", "apiserver")

# Processes started by this Python process (``up`` called in-process, as the demo does): kept
# so that ``down`` can reap them, and so that they are never garbage-collected while running.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class LocalClusterError(Exception):
    """The local cluster could not be started, reached or stopped."""


@dataclass
class Progress:
    """One line per step: what is being done, then ``ok (1.2s)`` or the failure."""

    quiet: bool = False

    def step(self, text: str) -> Callable[..., None]:
        start = time.monotonic()
        if not self.quiet:
            print(f"  {text} ...", end="", flush=True)

        def done(result: str = "ok") -> None:
            if not self.quiet:
                print(f" {result} ({time.monotonic() - start:.1f}s)", flush=True)

        return done

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)


# -- processes --------------------------------------------------------------------------------


def _python() -> str:
    return sys.executable


def _start_process(
    layout: Layout, record: dict[str, Any], name: str, argv: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = layout.log(name)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        )
    _CHILDREN[proc.pid] = proc
    record.setdefault("processes", {})[name] = {
        "pid": proc.pid,
        "argv": argv,
        "log": str(log_path),
        "hint": argv[-1] if name.startswith("agent-") else "sfc_k8s",
    }
    write_json(layout.cluster_file, record)
    return proc


def _alive(info: dict[str, Any]) -> bool:
    return pid_alive(int(info["pid"]), None)


def tail_log(path: str, lines: int = 15) -> str:
    """The last ``lines`` lines of a log, indented for a report."""
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("      " + line for line in text[-lines:])


def _stop_processes(record: dict[str, Any], timeout: float = 15.0) -> None:
    procs: dict[str, dict[str, Any]] = record.get("processes") or {}

    def rank(name: str) -> int:
        return next((i for i, p in enumerate(STOP_ORDER) if name.startswith(p)), len(STOP_ORDER))

    for name in sorted(procs, key=rank):
        info = procs[name]
        pid = int(info["pid"])
        if not _alive(info):
            continue
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(info) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if _alive(info):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            _reap(pid)
        # Whatever the process group left behind goes too.
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


# -- up -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait(what: str, check: Callable[[], bool], timeout: float, procs: list[str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise LocalClusterError(f"timed out after {timeout:.0f}s waiting for {what}; logs: {procs}")


def _check_alive(record: dict[str, Any], name: str) -> None:
    info = record["processes"][name]
    if not _alive(info):
        raise LocalClusterError(
            f"{name} exited during start-up; its log {info['log']} ends with:\n"
            + tail_log(info["log"])
        )


def running(layout: Layout) -> bool:
    """Whether a cluster recorded in ``layout`` is up (every process alive, API answering)."""
    record = read_json(layout.cluster_file)
    procs = record.get("processes") or {}
    if not record.get("complete") or not procs:
        return False
    if not all(_alive(p) for p in procs.values()):
        return False
    try:
        return SyncKube(load_kubeconfig(layout.kubeconfig)).reachable()
    except KubeError:
        return False


def up(
    layout: Layout,
    *,
    nodes: int = 1,
    mtu: int = underlay.DEFAULT_MTU,
    progress: Progress | None = None,
    timeout: float = 60,
) -> Path:
    """Start the local cluster (or find it running) and return its kubeconfig path."""
    progress = progress or Progress()
    try:
        underlay.check_options(nodes, mtu)
    except underlay.UnderlayError as err:
        raise LocalClusterError(str(err)) from err
    if running(layout):
        progress.say(f"local cluster already up (state {layout.state_dir})")
        return layout.kubeconfig
    if layout.cluster_file.exists():
        progress.say("cleaning up the remains of a previous cluster")
        down(layout, progress=Progress(quiet=True))
    progress.say(f"starting the local cluster {layout.cluster_id} in {layout.state_dir}")
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "clusterId": layout.cluster_id,
        "netnsPrefix": layout.netns_prefix,
        "nodes": [node_name(i) for i in range(1, nodes + 1)],
        "bpffsRoots": [layout.bpffs_root(node_name(i)) for i in range(1, nodes + 1)],
        "created": datetime.now(UTC).isoformat(),
        "processes": {},
    }
    write_json(layout.cluster_file, record)
    try:
        _make_underlay(layout, record, nodes, mtu, progress)
        _up(layout, record, nodes, progress, timeout)
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
    record["underlay"] = underlay.record(layout, links, mtu)
    write_json(layout.cluster_file, record)
    underlay.create(layout, links, mtu)
    done()


def _up(
    layout: Layout, record: dict[str, Any], nodes: int, progress: Progress, timeout: float
) -> None:
    logs = str(layout.logs_dir)
    port = _free_port()
    server = f"http://127.0.0.1:{port}"
    record["server"] = server
    done = progress.step(f"API server on {server}")
    _start_process(
        layout,
        record,
        "apiserver",
        [
            _python(),
            "-m",
            "sfc_k8s.local.apiserver",
            "--port",
            str(port),
            "--state-dir",
            str(layout.state_dir / "apiserver"),
            "--pod-logs",  # kubectl logs reads the node runtime's container logs
            str(layout.pods_dir),
        ],
        {},
    )
    write_kubeconfig(layout.kubeconfig, server)
    kube = SyncKube(load_kubeconfig(layout.kubeconfig))

    def api_up() -> bool:
        _check_alive(record, "apiserver")
        return kube.reachable()

    _wait("the API server", api_up, timeout, [logs])
    done()

    done = progress.step("CustomResourceDefinitions (deploy/crds)")
    crds = sorted(str(p) for p in crds_dir().glob("*.yaml"))
    if crds:
        args = [a for path in crds for a in ("-f", path)]
        _kubectl(layout, "apply", *args)
        _kubectl(
            layout,
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            *args,
        )
    done(f"{len(crds)} registered")

    done = progress.step(f"node runtime ({nodes} node{'s' if nodes > 1 else ''})")
    _start_process(
        layout,
        record,
        "node-runtime",
        [
            _python(),
            "-m",
            "sfc_k8s.local.node",
            "--state-dir",
            str(layout.state_dir),
            "--nodes",
            str(nodes),
            "--cni-path",
            ":".join(default_cni_path()),
        ],
        {},
    )

    def nodes_ready() -> bool:
        _check_alive(record, "node-runtime")
        try:
            items = kube.get("/api/v1/nodes").get("items") or []
        except KubeError:
            return False
        ready = {n["metadata"]["name"] for n in items if _node_ready(n)}
        return all(node_name(i) in ready for i in range(1, nodes + 1))

    _wait("the nodes to be Ready", nodes_ready, timeout, [logs])
    done()

    done = progress.step("controller")
    _start_process(
        layout,
        record,
        "controller",
        [
            _python(),
            "-m",
            "sfc_k8s.cli",
            "controller",
            "--kubeconfig",
            str(layout.kubeconfig),
            "--all-namespaces",
            "--standalone",  # one replica here: no Kopf peering object needed
            "--log-format",
            "plain",
        ],
        {},
    )
    done()
    for i in range(1, nodes + 1):
        node = node_name(i)
        root = layout.bpffs_root(node)
        done = progress.step(f"agent of {node} (netns {layout.node_netns(node)}, bpffs {root})")
        _start_process(
            layout,
            record,
            f"agent-{node}",
            netns.nsenter_argv(
                layout.node_netns(node),
                [
                    _python(),
                    "-m",
                    "sfc_k8s.cli",
                    "agent",
                    "--node",
                    node,
                    "--kubeconfig",
                    str(layout.kubeconfig),
                    "--bpffs-root",
                    root,
                    "--log-format",
                    "plain",
                ],
            ),
            {"SFC_K8S_BPFFS_ROOT": root},
        )
        done()
    done = progress.step("waiting for the agents' metrics and the controller to settle")

    def agents_serving() -> bool:
        for name in record["processes"]:
            _check_alive(record, name)
        for i in range(1, nodes + 1):
            try:
                netns.connect_in_netns(
                    layout.node_netns(node_name(i)), "127.0.0.1", AGENT_METRICS_PORT, timeout=1
                ).close()
            except OSError:
                return False
        return True

    _wait("the agents to serve their metrics", agents_serving, timeout, [logs])
    settle_until = time.monotonic() + 1.0  # Kopf has no readiness signal: watch it stay up
    while time.monotonic() < settle_until:
        for name in record["processes"]:
            _check_alive(record, name)
        time.sleep(0.1)
    done()
    record["complete"] = True
    write_json(layout.cluster_file, record)
    progress.say(f"local cluster up. kubeconfig: {layout.kubeconfig}")
    progress.say(f"  export KUBECONFIG={layout.kubeconfig}")


def _node_ready(node: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or []
    )


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
    record = read_json(layout.cluster_file)
    done = progress.step("stopping processes")
    _stop_processes(record)
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
    for name in ("cluster.json", "kubeconfig"):
        with contextlib.suppress(OSError):
            (layout.state_dir / name).unlink()
    for folder in ("logs", "pods", "ipam", "apiserver", "demo"):
        shutil.rmtree(layout.state_dir / folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        layout.state_dir.rmdir()
    done()
    progress.say("local cluster down")


# -- status, exec -------------------------------------------------------------------------------


def status(layout: Layout) -> int:
    record = read_json(layout.cluster_file)
    if not record:
        print(f"no local cluster in {layout.state_dir}")
        return 1
    print(f"cluster {record.get('clusterId')} in {layout.state_dir}")
    print(f"kubeconfig: {layout.kubeconfig}")
    print(f"API server: {record.get('server')}")
    print("processes:")
    healthy = True
    for name, info in sorted((record.get("processes") or {}).items()):
        alive = _alive(info)
        healthy &= alive
        print(f"  {name:<22} pid {info['pid']:<8} {'running' if alive else 'NOT RUNNING'}")
        print(f"  {'':<22} log {info['log']}")
    try:
        kube = SyncKube(load_kubeconfig(layout.kubeconfig))
        node_items = kube.get("/api/v1/nodes").get("items") or []
        pods = kube.get("/api/v1/pods").get("items") or []
    except KubeError as err:
        print(f"API server not reachable: {err}")
        return 1
    print("nodes:")
    for node in node_items:
        name = node["metadata"]["name"]
        state = "Ready" if _node_ready(node) else "NotReady"
        count = sum(1 for p in pods if (p.get("spec") or {}).get("nodeName") == name)
        print(f"  {name:<10} {state:<9} netns {layout.node_netns(name)}  pods {count}")
    phases: dict[str, int] = {}
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase", "Pending")
        phases[phase] = phases.get(phase, 0) + 1
    summary = ", ".join(f"{n} {p}" for p, n in sorted(phases.items())) or "none"
    print(f"pods: {len(pods)} ({summary})")
    return 0 if healthy and record.get("complete") else 1


def find_pod(layout: Layout, name: str, namespace: str) -> dict[str, Any]:
    """The pod ``name`` (or the first ready pod of ``deploy/NAME``) in ``namespace``."""
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
    p_up.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    p_up.add_argument("--timeout", type=float, default=READY_TIMEOUT)
    p_down = sub.add_parser("down", help="remove everything the local cluster made")
    p_down.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
    p_status = sub.add_parser("status", help="processes, nodes, pods, kubeconfig path")
    p_status.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS)
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


def _run(layout: Layout, args: argparse.Namespace) -> int:
    """Carry out one parsed command; user errors raise ``LocalClusterError``."""
    if args.command == "up":
        up(layout, nodes=args.nodes, mtu=args.mtu, timeout=args.timeout)
        return 0
    if args.command == "down":
        down(layout)
        return 0
    if args.command == "status":
        return status(layout)
    if args.command == "logs":
        return pod_logs(layout, args.pod, args.namespace, args.container, follow=args.follow)
    return exec_in_pod(layout, args.pod, args.namespace, args.cmd)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    layout = Layout(args.state_dir or default_state_dir())
    if os.geteuid() != 0:
        print("sfc-k8s local: needs root (network namespaces, bpffs)", file=sys.stderr)
        return 1
    try:
        return _run(layout, args)
    except (LocalClusterError, KubeError) as err:
        print(f"sfc-k8s local: {err}", file=sys.stderr)
        return 1
