"""Control-plane benchmark: how fast chains converge as they grow, and how fast a scaling event
reaches the data plane with them present.

Run as root: ``.venv/bin/python bench/control_plane.py [--chains 100,250,1000] [--events N]
[--baseline-src DIR] [--profile DIR] [--quick]``. Not a test: it asserts nothing; it prints a
table and PASS/FAIL lines for the targets and writes ``bench/results/operator.json``.

Each chain count N runs in a child process of its own (``--one N``) on a fresh API server, so
nothing carries over between sizes. With ``--baseline-src DIR`` (a ``src`` tree of another
commit, e.g. main's, with its built eBPF objects) every N runs twice, baseline then current,
interleaved, the children's ``PYTHONPATH`` choosing the tree: same machine, same minutes.

Everything runs on this machine against the local API server (``python -m
sfc_k8s.local.apiserver``, its own process); the controller runs as its own process
(``sfc-k8s controller``); the node agent runs in the child under ``kopf.testing.KopfRunner``
so that the moment it applies an operation is taken from its ``observers`` hook, with the same
monotonic clock as the moment the benchmark sends its API request (no polling error). Host
interfaces are real veths named ``host_ifname(pod UID, ifname)`` as the CNI plugin names them,
and the data plane is a real one under a private bpffs root.

Measurements, per N:

1. ``converge``: N chains x 3 functions x 4 replicas (pods created Ready beforehand, each with
   its veths), the controller and the node agent: the time from creating the chains to every
   chain Ready, which (the controller's default) needs the agent to have programmed every link
   into the data plane; per-chain cost = that time / N. Read through one watch of the chains
   (polling a list of N chains would itself load the server with O(N) per poll).
   With ``--controller-only``: no agent, no veths, the controller run with
   ``--no-require-programmed`` (Ready once it wrote the chain's CrossConnections): the control
   plane alone, without the data plane's TCX attaches.
2. the API server's requests during 1, by verb and resource (its ``/metrics``), per chain.
3. at the largest N only, with the N chains present: ``reaction``, a replica pod (already
   created, veth present) patched Ready -> the agent has added its endpoint to the data plane
   (API server -> controller -> API server -> agent); and its baseline ``xc-reaction``, the
   agent alone (a CrossConnection patched with one more endpoint).

With ``--profile DIR``, py-spy (``pip install py-spy``) samples the API server, the controller
and the child (the agent, the benchmark's own requests) during 1, and the top frames of each are
summarised in the JSON (raw collapsed stacks kept in DIR).

Targets (issue 14): 1,000 chains Ready < 60 s; the time for 1,000 chains < 5x the time for 250;
pod Ready -> programmed p99 < 200 ms at the largest N.
"""

from __future__ import annotations

import sys

# This file is named like the standard library's ``operator``: run as a script, its directory
# comes first on sys.path and would shadow it for every module imported below.
if sys.path and sys.path[0] == __import__("os").path.dirname(__file__):
    del sys.path[0]

import argparse
import concurrent.futures
import json
import os
import platform
import secrets
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python")
RESULTS = REPO / "bench" / "results" / "operator.json"
CRDS = REPO / "deploy" / "crds"
KUBECTL = "/usr/bin/kubectl"
NODE = "bench-node"
NS = "default"
SESSIONS = 65536
PY_SPY = str(REPO / ".venv" / "bin" / "py-spy")

from kopf.testing import KopfRunner  # noqa: E402

from sfc_k8s.api.naming import host_ifname  # noqa: E402
from sfc_k8s.dataplane import Dataplane  # noqa: E402
from sfc_k8s.operator.agent import AgentConfig, NodeAgent  # noqa: E402
from sfc_k8s.operator.agent_reconcile import AddEndpoint, CreateLink, Operation  # noqa: E402


# -- plumbing ----------------------------------------------------------------------------------
class Api:
    """Plain JSON over HTTP to the local API server (one short connection per call)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def call(self, method: str, path: str, body: Any = None, *, merge: bool = False) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        ctype = "application/merge-patch+json" if merge else "application/json"
        req.add_header("Content-Type", ctype)
        req.add_header("Accept", "application/json")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def create_pod(self, name: str, labels: dict[str, str]) -> str:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"nodeName": NODE, "containers": [{"name": "nf", "image": "nf"}]},
        }
        created = self.call("POST", f"/api/v1/namespaces/{NS}/pods", body)
        return str(created["metadata"]["uid"])

    def set_ready(self, name: str) -> None:
        status = {
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        }
        self.call("PATCH", f"/api/v1/namespaces/{NS}/pods/{name}/status", status, merge=True)

    def create_chain(self, name: str, functions: list[tuple[str, list[str]]]) -> None:
        """A linear chain: function i's last interface -> function i+1's first interface."""
        links = [
            {
                "name": f"l{i}",
                "a": {"function": functions[i][0], "interface": functions[i][1][-1]},
                "b": {"function": functions[i + 1][0], "interface": functions[i + 1][1][0]},
            }
            for i in range(len(functions) - 1)
        ]
        body = {
            "apiVersion": "sfc-k8s.io/v1alpha1",
            "kind": "ServiceFunctionChain",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "functions": [
                    {
                        "name": fn,
                        "selector": {"matchLabels": {"app": f"{name}-{fn}"}},
                        "interfaces": ifaces,
                    }
                    for fn, ifaces in functions
                ],
                "links": links,
            },
        }
        self.call("POST", f"/apis/sfc-k8s.io/v1alpha1/namespaces/{NS}/servicefunctionchains", body)

    def chains(self) -> list[dict[str, Any]]:
        path = f"/apis/sfc-k8s.io/v1alpha1/namespaces/{NS}/servicefunctionchains"
        items: list[dict[str, Any]] = self.call("GET", path)["items"]
        return items

    def xc_path(self, name: str = "") -> str:
        base = f"/apis/sfc-k8s.io/v1alpha1/namespaces/{NS}/crossconnections"
        return f"{base}/{name}" if name else base


def is_ready(chain: dict[str, Any]) -> bool:
    conditions = (chain.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def reaction_summary(samples: list[Reaction]) -> dict[str, dict[str, float]]:
    return {
        "total": summary([s.total for s in samples]),
        "control_plane": summary([s.control for s in samples]),
        "dataplane_op": summary([s.dataplane for s in samples]),
    }


def summary(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p90_ms": round(percentile(ms, 90), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


class Veths:
    """Host ends named like the CNI plugin's, created in batches, all deleted at the end."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add(self, hosts: list[str]) -> None:
        lines = []
        for host in hosts:
            peer = f"sfb{secrets.token_hex(6)}"
            lines += [
                f"link add {host} type veth peer name {peer}",
                f"link set {peer} up",
                f"link set {host} up",
            ]
        self._batch(lines)
        self.names += hosts

    def close(self) -> None:
        if self.names:
            self._batch([f"link del {n}" for n in self.names], check=False)
            self.names = []

    @staticmethod
    def _batch(lines: list[str], check: bool = True) -> None:
        script = "".join(line + "\n" for line in lines)
        proc = subprocess.run(
            ["ip", "-force", "-batch", "-"],
            input=script,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"ip -batch failed: {proc.stderr.strip()[:300]}")


@contextmanager
def api_server(workdir: Path) -> Iterator[tuple[Api, Path, int]]:
    proc = subprocess.Popen(
        [PYTHON, "-m", "sfc_k8s.local.apiserver", "--port", "0", "--state-dir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        kubeconfig = Path(proc.stdout.readline().split()[-1])
        subprocess.run(
            [KUBECTL, "--kubeconfig", str(kubeconfig), "apply", "-f", str(CRDS)],
            check=True,
            capture_output=True,
        )
        yield Api(url), kubeconfig, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def controller(kubeconfig: Path, *extra: str) -> Iterator[subprocess.Popen[str]]:
    argv = [PYTHON, "-m", "sfc_k8s.cli", "controller", "--kubeconfig", str(kubeconfig)]
    argv += ["--standalone", "--all-namespaces", "--log-format", "plain", *extra]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(1.0)
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"the controller exited at once:\n{log.read()[-2000:]}")
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Applied:
    """The agent's observer: when each interface was added to the data plane."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.at: dict[str, tuple[float, float]] = {}  # ifname -> (operation start, end)

    def __call__(self, op: Operation, started: float, ended: float) -> None:
        if isinstance(op, AddEndpoint):
            added = [op.ifname]
        elif isinstance(op, CreateLink):
            added = [ep.ifname for ep in (*op.side_a, *op.side_b)]
        else:
            return
        with self._lock:
            for ifname in added:
                self.at[ifname] = (started, ended)
            self._lock.notify_all()

    def wait(self, ifname: str, timeout: float = 10.0) -> tuple[float, float]:
        """(start, end) of the data-plane operation that added ``ifname``."""
        with self._lock:
            if not self._lock.wait_for(lambda: ifname in self.at, timeout):
                raise TimeoutError(f"{ifname} was not programmed within {timeout}s")
            return self.at[ifname]


@dataclass
class Reaction:
    """One event: from the API request to the end of the data-plane operation, and its parts."""

    total: float  # request sent -> endpoint programmed
    dataplane: float  # the add_endpoint call itself (map updates, attach, Maglev table)

    @property
    def control(self) -> float:  # request -> the agent starts the operation
        return self.total - self.dataplane


def reaction(started: float, op: tuple[float, float]) -> Reaction:
    return Reaction(op[1] - started, op[1] - op[0])


@contextmanager
def agent(kubeconfig: Path, root: str) -> Iterator[Applied]:
    config = AgentConfig(
        node=NODE, kubeconfig=str(kubeconfig), bpffs_root=root, session_table_size=SESSIONS
    )
    node_agent = NodeAgent(config)
    applied = Applied()
    node_agent.observers.append(applied)
    args = ["run", "--standalone", "--all-namespaces", "--quiet"]
    with KopfRunner(args, registry=node_agent.registry, settings=node_agent.settings, timeout=30):
        deadline = time.monotonic() + 10
        while node_agent._dp is None and time.monotonic() < deadline:
            time.sleep(0.01)
        yield applied


# -- measurements ------------------------------------------------------------------------------
def measure_xc_reaction(api: Api, veths: Veths, applied: Applied, events: int) -> list[Reaction]:
    """The agent alone: patch a CrossConnection with one more endpoint, time until programmed."""
    uids = [f"xc-{secrets.token_hex(8)}" for _ in range(events + 1)]
    hosts = [host_ifname(uid, "eth1") for uid in uids]
    veths.add(hosts)

    def endpoint(i: int) -> dict[str, Any]:
        return {
            "pod": f"p{i:04d}",
            "podUID": uids[i],
            "node": NODE,
            "interface": "eth1",
            "hostInterface": hosts[i],
            "state": "active",
        }

    name = "bench-xc"
    body = {
        "apiVersion": "sfc-k8s.io/v1alpha1",
        "kind": "CrossConnection",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "chain": "bench",
            "link": "xc",
            "a": {"function": "client", "interface": "eth1", "endpoints": [endpoint(0)]},
            "b": {"function": "server", "interface": "eth1", "endpoints": []},
            # the controller hands out the lowest free ids: keep clear of its links' ids
            "clusterId": 65535,
        },
    }
    api.call("POST", api.xc_path(), body)
    applied.wait(hosts[0])
    samples = []
    for i in range(1, events + 1):
        b = [endpoint(j) for j in range(1, i + 1)]
        started = time.monotonic()
        api.call("PATCH", api.xc_path(name), {"spec": {"b": {"endpoints": b}}}, merge=True)
        samples.append(reaction(started, applied.wait(hosts[i])))
        time.sleep(0.02)
    return samples


def measure_reaction(api: Api, veths: Veths, applied: Applied, events: int) -> list[Reaction]:
    """Pod patched Ready -> controller -> xc -> agent -> endpoint in the data plane."""
    chain = "bench-react"
    api.create_chain(chain, [("client", ["eth1"]), ("server", ["eth1"])])
    client_uid = api.create_pod(f"{chain}-client", {"app": f"{chain}-client"})
    veths.add([host_ifname(client_uid, "eth1")])
    api.set_ready(f"{chain}-client")
    applied.wait(host_ifname(client_uid, "eth1"), timeout=30)
    samples = []
    for i in range(events):
        pod = f"{chain}-server-{i:04d}"
        uid = api.create_pod(pod, {"app": f"{chain}-server"})
        host = host_ifname(uid, "eth1")
        veths.add([host])
        time.sleep(0.05)  # let the controller see the (not yet Ready) pod first
        started = time.monotonic()
        api.set_ready(pod)
        samples.append(reaction(started, applied.wait(host)))
    return samples


FUNCTIONS = [("f1", ["eth1"]), ("f2", ["eth1", "eth2"]), ("f3", ["eth1"])]


def create_replicas(api: Api, chains: int, replicas: int) -> dict[str, str]:
    """Ready pods for every function of every chain (in parallel); returns name -> UID."""
    pods = [
        (f"c{c:04d}-{fn}-{r}", {"app": f"c{c:04d}-{fn}"})
        for c in range(chains)
        for fn in ("f1", "f2", "f3")
        for r in range(replicas)
    ]

    def one(item: tuple[str, dict[str, str]]) -> tuple[str, str]:
        uid = api.create_pod(*item)
        api.set_ready(item[0])
        return item[0], uid

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return dict(pool.map(one, pods))


def replica_veths(pods: dict[str, str]) -> list[str]:
    """The host veth names of every replica's data-plane interfaces, as the CNI plugin names
    them (pod ``cNNNN-fK-R``: function fK's interfaces)."""
    ifnames = dict(FUNCTIONS)
    return [
        host_ifname(uid, ifname)
        for name, uid in pods.items()
        for ifname in ifnames[name.split("-")[1]]
    ]


class ReadyChains:
    """The names of the Ready chains, followed through one watch of the chains (a thread)."""

    def __init__(self, api: Api) -> None:
        self._api = api
        self._lock = threading.Condition()
        self.ready: set[str] = set()
        self._stop = False
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        path = f"/apis/sfc-k8s.io/v1alpha1/namespaces/{NS}/servicefunctionchains"
        rv = str(self._api.call("GET", path)["metadata"]["resourceVersion"])
        while not self._stop:
            url = f"{self._api.url}{path}?watch=true&resourceVersion={rv}&timeoutSeconds=30"
            try:
                stream = urllib.request.urlopen(url, timeout=60)
            except OSError:  # the server stopped at the end of the run
                return
            with stream:
                for line in stream:
                    event = json.loads(line)
                    obj = event["object"]
                    rv = obj["metadata"].get("resourceVersion", rv)
                    with self._lock:
                        name = obj["metadata"]["name"]
                        if event["type"] != "DELETED" and is_ready(obj):
                            self.ready.add(name)
                        else:
                            self.ready.discard(name)
                        self._lock.notify_all()
                    if self._stop:
                        return

    def wait(self, names: set[str], timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: names <= self.ready, timeout)

    def close(self) -> None:
        self._stop = True


def request_counts(api: Api) -> Counter[tuple[str, ...]]:
    """The API server's requests so far by (verb, group, resource, subresource) (empty if the
    server has no ``/metrics``, as older trees)."""
    req = urllib.request.Request(api.url + "/metrics")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError:
        return Counter()
    counts: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels, value = line[len("apiserver_request_total{") :].rsplit("} ", 1)
            parts = dict(item.split("=", 1) for item in labels.split(","))
            key = tuple(parts[k].strip('"') for k in ("verb", "group", "resource", "subresource"))
            counts[key] += int(float(value))
    return counts


def request_delta(before: Counter[tuple[str, ...]], after: Counter[tuple[str, ...]], chains: int):
    """Requests made between two snapshots, per ``verb resource[/sub]``, with the per-chain
    figure."""
    delta = after - before
    rows = {}
    for (verb, _group, resource, sub), n in sorted(delta.items(), key=lambda kv: -kv[1]):
        label = f"{verb} {resource}{'/' + sub if sub else ''}"
        rows[label] = {"total": n, "per_chain": round(n / chains, 2)}
    return rows


# -- profiling ---------------------------------------------------------------------------------
@contextmanager
def profiled(directory: Path | None, processes: dict[str, int]) -> Iterator[None]:
    """py-spy sampling each named process (CPU only, 100 Hz) while the block runs."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    spies = []
    for name, pid in processes.items():
        out = directory / f"{name}.txt"
        argv = [PY_SPY, "record", "-p", str(pid), "-o", str(out), "-f", "raw", "-r", "100"]
        argv += ["--nonblocking"]
        spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(2)
        for spy in spies:
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()


def profile_summary(path: Path, top: int = 15) -> dict[str, Any]:
    """From py-spy's collapsed stacks: the samples, and the frames of sfc_k8s, kopf and aiohttp
    with the largest inclusive and self shares."""
    if not path.exists():
        return {}
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            if any(k in frame for k in ("sfc_k8s/", "kopf/", "aiohttp/", "celpy/", "sqlite")):
                inclusive[frame] += n
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[f, round(100 * n / total, 1)] for f, n in counter.most_common(top)]

    return {"samples": total, "inclusive_pct": share(inclusive), "self_pct": share(own)}


def _frame(raw: str) -> str:
    """``func (path/to/module.py:12)`` -> ``module.py:func``, the package kept for ours."""
    name, _, where = raw.partition(" (")
    file = where.split(":")[0]
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{file}:{name.strip()}"


# -- one chain count (the child) ---------------------------------------------------------------
def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Converge ``args.one`` chains on a fresh server; with ``args.events``, then measure the
    reactions with them present."""
    chains = args.one
    result: dict[str, Any] = {"chains": chains, "functions": 3, "replicas": args.replicas}
    veths = Veths()
    with tempfile.TemporaryDirectory(prefix="sfc-bench-") as tmp, ExitStack() as stack:
        stack.callback(veths.close)
        api, kubeconfig, api_pid = stack.enter_context(api_server(Path(tmp) / "api"))
        started = time.monotonic()
        pods = create_replicas(api, chains, args.replicas)
        if not args.controller_only:
            veths.add(replica_veths(pods))
        result["setup_s"] = round(time.monotonic() - started, 1)
        if args.controller_only:  # no agent, no data plane: Ready once the controller wrote
            applied = None
            ctrl = stack.enter_context(controller(kubeconfig, "--no-require-programmed"))
        else:
            root = f"/sys/fs/bpf/sfcb-{secrets.token_hex(4)}"
            stack.callback(lambda: subprocess.run(["rm", "-rf", root], check=False))
            stack.callback(destroy_dataplane, root)  # once the agent has stopped
            applied = stack.enter_context(agent(kubeconfig, root))
            ctrl = stack.enter_context(controller(kubeconfig))
        processes = {"apiserver": api_pid, "controller": ctrl.pid, "bench_agent": os.getpid()}
        mode = "controller-only" if args.controller_only else "programmed"
        profile = Path(args.profile) / f"{args.tree}-{mode}-{chains}" if args.profile else None
        before = request_counts(api)
        with profiled(profile, processes):
            seconds = measure_convergence(api, chains, timeout=args.timeout)
        result["requests"] = request_delta(before, request_counts(api), chains)
        result["seconds"] = round(seconds, 2)
        result["per_chain_ms"] = round(1000 * seconds / chains, 1)
        if applied is not None:
            with Dataplane(root, session_table_size=SESSIONS) as dp:
                links = len(dp.links())
            if links != 2 * chains:
                raise RuntimeError(f"{links} links in the data plane, {2 * chains} expected")
        if profile is not None:
            result["profile"] = {n: profile_summary(profile / f"{n}.txt") for n in processes}
        if args.events and applied is not None:
            xc = measure_xc_reaction(api, veths, applied, args.events)
            result["xc_reaction"] = reaction_summary(xc)
            full = measure_reaction(api, veths, applied, args.events)
            result["reaction"] = reaction_summary(full)
    return result


def measure_convergence(api: Api, chains: int, timeout: float) -> float:
    names = {f"c{c:04d}" for c in range(chains)}
    watch = ReadyChains(api)
    try:
        time.sleep(0.5)  # the watch is open
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda n: api.create_chain(n, FUNCTIONS), sorted(names)))
        if not watch.wait(names, timeout):
            missing = len(names - watch.ready)
            raise TimeoutError(f"{missing} of {chains} chains not Ready after {timeout}s")
        return time.monotonic() - started
    finally:
        watch.close()


def destroy_dataplane(root: str) -> None:
    with Dataplane(root, session_table_size=SESSIONS) as dp:
        dp.destroy()


# -- the parent: every chain count, every tree -------------------------------------------------
def run_child(args: argparse.Namespace, chains: int, tree: str, src: Path) -> dict[str, Any]:
    """One chain count in a child process on the ``src`` tree; its JSON result."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        argv = [PYTHON, __file__, "--one", str(chains), "--tree", tree, "--json", out.name]
        argv += ["--replicas", str(args.replicas), "--timeout", str(args.timeout)]
        argv += ["--events", str(args.events if chains == max(args.chains) else 0)]
        argv += ["--profile", str(args.profile)] if args.profile else []
        argv += ["--controller-only"] if args.controller_only else []
        env = {**os.environ, "PYTHONPATH": str(src)}
        print(f"-- {tree}: {chains} chains", flush=True)
        proc = subprocess.run(argv, env=env, check=False)
        text = Path(out.name).read_text()
        if proc.returncode != 0 or not text:
            return {"chains": chains, "error": f"child exited {proc.returncode}"}
        result: dict[str, Any] = json.loads(text)
        return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chains", default="100,250,1000", help="chain counts, comma-separated")
    parser.add_argument("--events", type=int, default=100, help="reaction samples (>= 50)")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per convergence")
    parser.add_argument("--baseline-src", type=Path, help="another tree's src/, run alternately")
    parser.add_argument("--profile", type=Path, help="py-spy every process into this folder")
    parser.add_argument("--quick", action="store_true", help="10,20 chains, 20 events")
    parser.add_argument(
        "--controller-only",
        action="store_true",
        help="no agent: chains Ready once the controller wrote them (--no-require-programmed)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child's chain count
    parser.add_argument("--tree", default="current", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/control_plane.py needs root (veths, bpffs)", file=sys.stderr)
        return 2
    if args.one is not None:
        args.json.write_text(json.dumps(run_one(args)))
        return 0
    if args.quick:
        args.chains, args.events = "10,20", 20
    args.chains = [int(n) for n in str(args.chains).split(",")]
    trees = [("current", REPO / "src")]
    if args.baseline_src is not None:
        trees.insert(0, ("baseline", args.baseline_src.resolve()))
    results: dict[str, Any] = {
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count()},
        "mode": "controller-only" if args.controller_only else "programmed",
        "load_start": os.getloadavg()[0],
        "targets": {"chains_1000_s": 60, "growth_250_to_1000": 5, "reaction_p99_ms": 200},
        "runs": {tree: [] for tree, _ in trees},
    }
    for chains in args.chains:
        for tree, src in trees:
            results["runs"][tree].append(run_child(args, chains, tree, src))
    results["load_end"] = os.getloadavg()[0]
    report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def growth(runs: list[dict[str, Any]], small: int, large: int) -> float | None:
    by_n = {r["chains"]: r.get("seconds") for r in runs}
    if by_n.get(small) and by_n.get(large):
        return round(by_n[large] / by_n[small], 2)
    return None


def report(results: dict[str, Any]) -> None:
    """Print the table and the targets' PASS/FAIL lines (adds growth ratios to ``results``)."""
    print(f"\n{'tree':<9} {'chains':>6} {'all Ready':>10} {'per chain':>10}  requests per chain")
    for tree, runs in results["runs"].items():
        for run in runs:
            if "error" in run:
                print(f"{tree:<9} {run['chains']:>6}  {run['error']}")
                continue
            top = ", ".join(
                f"{k} {v['per_chain']}" for k, v in list(run.get("requests", {}).items())[:5]
            )
            print(
                f"{tree:<9} {run['chains']:>6} {run['seconds']:>8.1f} s"
                f" {run['per_chain_ms']:>7.1f} ms  {top}"
            )
    print()
    for tree, runs in results["runs"].items():
        sizes = sorted(r["chains"] for r in runs if "seconds" in r)
        if len(sizes) >= 2:
            ratio = growth(runs, sizes[-2], sizes[-1])
            work = sizes[-1] / sizes[-2]
            results.setdefault("growth", {})[tree] = {
                "from": sizes[-2], "to": sizes[-1], "time_ratio": ratio, "work_ratio": work
            }  # fmt: skip
            verdict = "PASS" if ratio is not None and ratio < 5 else "FAIL"
            print(f"{verdict} {tree}: {sizes[-2]} -> {sizes[-1]} chains took {ratio}x the time"
                  f" for {work:.1f}x the chains (target < 5x for 250 -> 1000)")  # fmt: skip
        for run in runs:
            if run.get("chains") == 1000 and "seconds" in run:
                ok = "PASS" if run["seconds"] < 60 else "FAIL"
                print(f"{ok} {tree}: 1000 chains Ready in {run['seconds']} s (target < 60 s)")
            if "reaction" in run:
                p99 = run["reaction"]["total"]["p99_ms"]
                base = run["xc_reaction"]["total"]["p99_ms"]
                print(f"{'PASS' if p99 < 200 else 'FAIL'} {tree}: pod Ready -> programmed p99"
                      f" {p99} ms with {run['chains']} chains present (target < 200 ms;"
                      f" agent alone p99 {base} ms)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
