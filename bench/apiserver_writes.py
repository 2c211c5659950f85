"""API-server benchmark: the cost of writes, by kind of write, by store (memory, SQLite) and by
access check (plain HTTP; HTTPS; HTTPS with authentication and RBAC).

Run: ``.venv/bin/python bench/apiserver_writes.py [--writes N] [--pods N] [--stream N]
[--stores memory,sqlite,sqlite-full,sqlite-tls,sqlite-rbac] [--baseline REV]``. Not a test: it
asserts nothing; it prints tables and writes ``bench/results/apiserver_writes.json``.

Each variant is measured in turn, in the same run: ``memory`` (no database), ``sqlite`` (the
local cluster's store: SQLite in WAL mode, synchronous=NORMAL), ``sqlite-full``
(synchronous=FULL, an fsync per write), all three over plain HTTP with no authentication;
``sqlite-tls`` (HTTPS with the cluster's CA, the admin's client certificate, RBAC off:
``--authorization-mode AlwaysAllow``) and ``sqlite-rbac`` (as ``local up`` serves: HTTPS, every
request from a service account's token, authorized by RBAC against deploy/base's roles, the
default ones and the bench's own RoleBinding). For each, the local API server runs as
its own process (``python -m sfc_k8s.local.apiserver``, as ``local up`` runs it: in this
process, the clients' threads would hold the GIL the server waits for after each SQLite call),
on a database in a temporary directory under /tmp, and two measurements run over keep-alive HTTP
connections, as clients do:

1. chain writes (CRD schema + CEL validation): with the project's CRD registered and ``--pods``
   pods in the namespace (the controller's situation), chain creates, status merge patches (what
   the controller writes), label-only patches and spec patches; median and p90 per request (ms).
2. plain writes and their watch: ``--stream`` ConfigMap writes one after the other (a third
   creates, a third merge patches, a third deletes) while a watch of the namespace is open on a
   second connection; writes per second (all of them over the time they took), and the watch
   latency of each write, from sending the request to reading its event from the watch
   (p50, p99, ms).

Every variant is shown with its ratio to the first one listed (time ratios: > 1 is slower). With
``--baseline REV`` (a git revision) the chain writes also run first on that revision's ``src/``
(extracted to a temporary directory, in a child process, memory store) and are shown beside.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import contextlib
import http.client
import json
import multiprocessing
import random
import socket
import ssl
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tests.fixtures.chains import firewall_chain

from sfc_k8s.local.apiserver import APIServer, Store, rbac
from sfc_k8s.local.apiserver.access import Access
from sfc_k8s.local.apiserver.pki import ensure_pki, load_service_account_key
from sfc_k8s.local.apiserver.tokens import TokenIssuer
from sfc_k8s.local.paths import rbac_manifests

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "deploy" / "crds" / "servicefunctionchains.yaml"
BASE = "/apis/sfc-k8s.io/v1alpha1/namespaces/default/servicefunctionchains"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
RBAC = "rbac.authorization.k8s.io"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
# variant -> (SQLite synchronous mode or None for memory, access: "" plain HTTP | tls | rbac)
STORES: dict[str, tuple[str | None, str]] = {
    "memory": (None, ""),
    "sqlite": ("normal", ""),
    "sqlite-full": ("full", ""),
    "sqlite-tls": ("normal", "tls"),
    "sqlite-rbac": ("normal", "rbac"),
}
BENCH_SA = "bench-writer"
BENCH_RULES = [  # what the measured requests need, for the bench's service account
    {"apiGroups": [""], "resources": ["configmaps", "pods"], "verbs": ["*"]},
    {
        "apiGroups": ["sfc-k8s.io"],
        "resources": ["servicefunctionchains", "*/status"],
        "verbs": ["*"],
    },
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["create"],
    },
]


@dataclass(frozen=True)
class Endpoint:
    """Where a measured server listens and how to talk to it (picklable: the watch reader is
    another process)."""

    host: str
    port: int
    ca: str | None = None
    cert: tuple[str, str] | None = None
    token: str | None = None

    def connect(self) -> http.client.HTTPConnection:
        if self.ca is None:
            return http.client.HTTPConnection(self.host, self.port)
        context = ssl.create_default_context(cafile=self.ca)
        if self.cert is not None:
            context.load_cert_chain(*self.cert)
        return http.client.HTTPSConnection(self.host, self.port, context=context)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def call(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: Any,
    ctype: str,
    *,
    headers: dict[str, str] | None = None,
) -> tuple[float, Any]:
    """One request: (milliseconds, decoded answer)."""
    data = json.dumps(body).encode()
    start = time.perf_counter()
    conn.request(method, path, body=data, headers={"Content-Type": ctype, **(headers or {})})
    response = conn.getresponse()
    payload = response.read()
    elapsed = (time.perf_counter() - start) * 1000.0
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {payload[:300]!r}")
    return elapsed, json.loads(payload)


def request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: Any,
    ctype: str,
    *,
    headers: dict[str, str] | None = None,
) -> float:
    return call(conn, method, path, body, ctype, headers=headers)[0]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


Samples = dict[str, list[float]]


def summary(samples: Samples) -> dict[str, dict[str, float]]:
    return {
        kind: {
            "median_ms": round(statistics.median(values), 2),
            "p90_ms": round(statistics.quantiles(values, n=10)[-1], 2),
            "n": len(values),
        }
        for kind, values in samples.items()
    }


def measure(writes: int, pods: int) -> dict[str, dict[str, float]]:
    """Chain writes on a memory store in this process (what a --baseline child runs)."""
    with tempfile.TemporaryDirectory() as tmp, APIServer(state_dir=Path(tmp)) as server:
        return summary(chain_writes(Endpoint(server.host, server.port), writes, pods))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _collection(doc: dict[str, Any]) -> str:
    """The URL a manifest is created at (for the few kinds the bench creates)."""
    kind, namespace = doc["kind"], doc["metadata"].get("namespace")
    if kind == "CustomResourceDefinition":
        return CRDS
    base = "/api/v1" if kind in ("Namespace", "ServiceAccount") else f"/apis/{RBAC}/v1"
    plural = kind.lower() + "s"
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


def _service_account_endpoint(admin: Endpoint) -> Endpoint:
    """deploy/base's RBAC, the bench's service account with a RoleBinding of what it needs, and
    an endpoint speaking with its token."""
    conn = admin.connect()
    json_type = "application/json"
    manifests = [d for p in rbac_manifests() for d in yaml.safe_load_all(p.read_text()) if d]
    manifests.append(yaml.safe_load(CRD.read_text()))  # cluster-scoped: the admin registers it
    role = {"metadata": {"name": BENCH_SA}, "rules": BENCH_RULES}
    binding = {
        "metadata": {"name": BENCH_SA, "namespace": "default"},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": BENCH_SA},
        "subjects": [{"kind": "ServiceAccount", "name": BENCH_SA, "namespace": "default"}],
    }
    manifests += [
        {"kind": "ServiceAccount", "metadata": {"name": BENCH_SA, "namespace": "default"}},
        {"kind": "ClusterRole", **role},
        {"kind": "RoleBinding", **binding},
    ]
    for doc in manifests:
        path = _collection(doc)
        request(conn, "POST", path, doc, json_type)
    token_path = f"/api/v1/namespaces/default/serviceaccounts/{BENCH_SA}/token"
    _, answer = call(conn, "POST", token_path, {"spec": {}}, json_type)
    conn.close()
    return Endpoint(admin.host, admin.port, ca=admin.ca, token=answer["status"]["token"])


def access_cost(iterations: int = 2000) -> dict[str, float]:
    """Microseconds per request of the access check, in this process, on a store holding
    deploy/base's RBAC and the default roles: a service-account token's signature check (its
    first use), its check when cached (every later use for 10 s), and RBAC's decision for a
    ConfigMap patch (attributes parsed from the URL, then the bindings walked)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store()
        issuer = TokenIssuer(load_service_account_key(ensure_pki(Path(tmp) / "pki")))
        access = Access(store, issuer)
        access.bootstrap()
        for doc in (d for p in rbac_manifests() for d in yaml.safe_load_all(p.read_text())):
            plural = (
                "namespaces" if doc["kind"] == "Namespace" else _collection(doc).rsplit("/")[-1]
            )
            group = "" if doc["kind"] in ("Namespace", "ServiceAccount") else RBAC
            rtype = store.resource(group, "v1", plural)
            store.create(rtype, doc["metadata"].get("namespace"), doc)
        account = store.find(("", "serviceaccounts"), "sfc-system", "sfc-k8s-controller")
        assert account is not None
        token, _ = issuer.issue("sfc-system", "sfc-k8s-controller", account["metadata"]["uid"])
        user = access.token_user(token)

        def per_call(work: Any) -> float:
            start = time.perf_counter()
            for _ in range(iterations):
                work()
            return round((time.perf_counter() - start) / iterations * 1e6, 1)

        path = "/apis/sfc-k8s.io/v1alpha1/namespaces/default/crossconnections/x"
        return {
            "token_signature_us": per_call(lambda: issuer.verify(token)),
            "token_cached_us": per_call(lambda: access.token_user(token)),
            "rbac_decision_us": per_call(
                lambda: rbac.authorize(
                    access.policy(), user, rbac.request_attributes("PATCH", path, {})
                )
            ),
        }


def _wait_serving(endpoint: Endpoint, server: subprocess.Popen[bytes], store: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = endpoint.connect()
            conn.request("GET", "/version")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API server ({store}) did not start") from None
            time.sleep(0.05)


@contextlib.contextmanager
def serving(store: str) -> Iterator[Endpoint]:
    """An API server of variant ``store`` in its own process, and how to reach it (for
    ``sqlite-rbac``: as a service account with a RoleBinding of what the bench writes)."""
    synchronous, access = STORES[store]
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "sfc_k8s.local.apiserver", "--port", str(port)]
        if synchronous is not None:
            command += ["--database", f"{tmp}/store.db", "--sync", synchronous]
        endpoint = Endpoint("127.0.0.1", port)
        if access:
            made = ensure_pki(Path(tmp) / "pki")
            command += ["--pki", str(made.directory)]
            command += ["--authorization-mode", "RBAC" if access == "rbac" else "AlwaysAllow"]
            endpoint = Endpoint(
                "127.0.0.1",
                port,
                ca=str(made.ca_cert),
                cert=(str(made.admin_cert), str(made.admin_key)),
            )
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_serving(endpoint, server, store)
            yield _service_account_endpoint(endpoint) if access == "rbac" else endpoint
        finally:
            server.terminate()
            server.wait(10)


def measure_store(store: str, writes: int, pods: int, stream: int) -> Samples:
    """Both measurements on one variant: samples by kind of write, plus "stream" (the time all
    ConfigMap writes took, in seconds) and "watch" (their watch latencies, ms)."""
    with serving(store) as endpoint:
        samples = chain_writes(endpoint, writes, pods)
        elapsed, latency = stream_writes(endpoint, stream)
    return {**samples, "stream": [elapsed], "watch": latency}


def paired_writes(stores: list[str], count: int) -> dict[str, Any]:
    """The variants' servers up side by side, one ConfigMap merge patch on each in turn (in a
    shuffled order each time), ``count`` times: the machine's load hits every variant alike,
    so the median of the per-turn differences to the first variant is the access check's cost
    as a client sees it."""
    merge = "application/merge-patch+json"
    with contextlib.ExitStack() as stack:
        ends = {name: stack.enter_context(serving(name)) for name in stores}
        conns = {
            name: stack.enter_context(contextlib.closing(e.connect())) for name, e in ends.items()
        }
        for name, conn in conns.items():
            body = {"metadata": {"name": "paired"}}
            request(conn, "POST", CONFIGMAPS, body, "application/json", headers=ends[name].headers)
        times: dict[str, list[float]] = {name: [] for name in stores}
        order = list(stores)
        for i in range(count):
            random.shuffle(order)
            for name in order:
                patch = {"data": {"k": str(i)}}
                path = f"{CONFIGMAPS}/paired"
                times[name].append(
                    request(conns[name], "PATCH", path, patch, merge, headers=ends[name].headers)
                )
    base = times[stores[0]]
    return {
        name: {
            "median_ms": round(statistics.median(values), 3),
            "extra_vs_first_us": round(
                statistics.median(v - b for v, b in zip(values, base, strict=True)) * 1000, 1
            ),
        }
        for name, values in times.items()
    }


def figures(samples: Samples, stream: int) -> dict[str, Any]:
    """What one store's samples (of every round) show."""
    chains = {k: v for k, v in samples.items() if k not in ("stream", "watch")}
    return {
        "writes": summary(chains),
        "writes_per_s": round(stream * len(samples["stream"]) / sum(samples["stream"]), 1),
        "watch_ms": {
            "p50": round(percentile(samples["watch"], 0.5), 2),
            "p99": round(percentile(samples["watch"], 0.99), 2),
            "n": len(samples["watch"]),
        },
    }


def chain_writes(endpoint: Endpoint, writes: int, pods: int) -> Samples:
    merge = "application/merge-patch+json"
    conn = endpoint.connect()
    auth = endpoint.headers
    if endpoint.token is None:  # (the service account's endpoint has it registered already)
        request(conn, "POST", CRDS, yaml.safe_load(CRD.read_text()), "application/json")
    for i in range(pods):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"p{i}", "labels": {"app": "client"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        }
        request(
            conn, "POST", "/api/v1/namespaces/default/pods", pod, "application/json", headers=auth
        )
    samples: dict[str, list[float]] = {"create": [], "status": [], "label": [], "spec": []}
    for i in range(writes):
        samples["create"].append(
            request(conn, "POST", BASE, firewall_chain(f"c{i}"), "application/json", headers=auth)
        )
    for i in range(writes):
        status = {"status": {"observedGeneration": i, "readyFunctions": f"{i % 4}/3"}}
        samples["status"].append(
            request(conn, "PATCH", f"{BASE}/c{i}/status", status, merge, headers=auth)
        )
    for i in range(writes):
        label = {"metadata": {"labels": {"round": str(i)}}}
        samples["label"].append(request(conn, "PATCH", f"{BASE}/c{i}", label, merge, headers=auth))
    for i in range(writes):
        spec = {"spec": {"dataplane": {"drainTimeoutSeconds": 10 + i}}}
        samples["spec"].append(request(conn, "PATCH", f"{BASE}/c{i}", spec, merge, headers=auth))
    conn.close()
    return samples


def baseline(rev: str, writes: int, pods: int) -> dict[str, dict[str, float]]:
    """The same measurement on revision `rev`'s sources, in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        out = Path(tmp) / "result.json"
        env = {**os.environ, "PYTHONPATH": str(Path(tmp) / "src")}
        command = [sys.executable, __file__, "--writes", str(writes), "--pods", str(pods)]
        command.append("--chains-only")
        subprocess.run([*command, "--output", str(out)], env=env, check=True, capture_output=True)
        result: dict[str, dict[str, float]] = json.loads(out.read_text())["writes"]
        return result


def watch_arrivals(endpoint: Endpoint, since: str, count: int, out: Any) -> None:
    """Child process: read `count` events of a ConfigMap watch from `since`; put
    {resourceVersion: when it was read} on `out` (perf_counter is the system's monotonic
    clock, the same in every process). A process of its own, so that reading the watch does
    not take the GIL from the writer whose requests are timed."""
    arrived: dict[str, float] = {}
    watch = endpoint.connect()
    watch.request(
        "GET",
        f"{CONFIGMAPS}?watch=1&resourceVersion={since}&timeoutSeconds=600",
        headers=endpoint.headers,
    )
    stream = watch.getresponse()
    out.put("watching")
    while len(arrived) < count:
        line = stream.readline()
        if not line:
            break
        event = json.loads(line)
        arrived[event["object"]["metadata"]["resourceVersion"]] = time.perf_counter()
    watch.close()
    out.put(arrived)


def stream_writes(endpoint: Endpoint, count: int) -> tuple[float, list[float]]:
    """ConfigMap creates, patches and deletes while a watch is open: the seconds they took
    and the watch latency of each (ms)."""
    conn = endpoint.connect()
    auth = endpoint.headers
    _, listed = call(conn, "GET", CONFIGMAPS, None, "application/json", headers=auth)
    since = listed["metadata"]["resourceVersion"]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    reader = context.Process(target=watch_arrivals, args=(endpoint, since, count, results))
    reader.start()
    try:
        results.get(timeout=60)  # the watch is open
        third = count // 3
        merge = "application/merge-patch+json"
        writes: list[tuple[str, str, Any, str]] = []
        for i in range(third):
            writes.append(("POST", CONFIGMAPS, {"metadata": {"name": f"s{i}"}}, "application/json"))
        for i in range(third):
            writes.append(("PATCH", f"{CONFIGMAPS}/s{i}", {"data": {"k": str(i)}}, merge))
        for i in range(count - 2 * third):
            writes.append(("DELETE", f"{CONFIGMAPS}/s{i}", {}, "application/json"))
        sent: dict[str, float] = {}
        began = time.perf_counter()
        for method, path, body, ctype in writes:
            start = time.perf_counter()
            _, answer = call(conn, method, path, body, ctype, headers=auth)
            sent[answer["metadata"]["resourceVersion"]] = start
        elapsed = time.perf_counter() - began
        arrived: dict[str, float] = results.get(timeout=60)
    finally:
        reader.join(10)
        if reader.is_alive():
            reader.kill()
            reader.join()
        conn.close()
    if len(arrived) < count:
        raise RuntimeError(f"the watch saw {len(arrived)} of {count} writes")
    return elapsed, [(arrived[rv] - start) * 1000.0 for rv, start in sent.items()]


def ratios(result: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    """Time ratios of a variant to the first one measured (> 1: slower)."""
    out = {
        f"{kind}_median": round(row["median_ms"] / base["writes"][kind]["median_ms"], 2)
        for kind, row in result["writes"].items()
    }
    out["writes_per_s"] = round(base["writes_per_s"] / result["writes_per_s"], 2)
    for key in ("p50", "p99"):
        out[f"watch_{key}"] = round(result["watch_ms"][key] / base["watch_ms"][key], 2)
    return out


def show(results: dict[str, dict[str, Any]], base: dict[str, Any] | None, rev: str) -> None:
    names = list(results)
    print(f"{'chain write (median/p90 ms)':<30}" + "".join(f"{n:>22}" for n in names))
    for kind in results[names[0]]["writes"]:
        cells = "".join(
            f"{results[n]['writes'][kind]['median_ms']:>13.2f}/{results[n]['writes'][kind]['p90_ms']:<8.2f}"
            for n in names
        )
        line = f"{kind:<30}{cells}"
        if base is not None:
            line += f"   {rev[:12]}: {base[kind]['median_ms']:.2f}/{base[kind]['p90_ms']:.2f}"
        print(line)
    print(
        f"{'configmap writes/s':<30}"
        + "".join(f"{results[n]['writes_per_s']:>22.1f}" for n in names)
    )
    for key in ("p50", "p99"):
        print(
            f"{'watch latency ' + key + ' (ms)':<30}"
            + "".join(f"{results[n]['watch_ms'][key]:>22.2f}" for n in names)
        )
    for name in names[1:]:
        print(f"{name} / {names[0]} (time ratios, > 1 slower): {results[name]['ratios']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=40, help="chain writes of each kind")
    parser.add_argument("--pods", type=int, default=1200, help="pods in the namespace")
    parser.add_argument("--stream", type=int, default=300, help="ConfigMap writes under a watch")
    parser.add_argument(
        "--stores",
        default="memory,sqlite,sqlite-full",
        help=f"variants to measure, the first is the ratios' base (of: {', '.join(STORES)})",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds, each measuring every store (order rotated)"
    )
    parser.add_argument("--baseline", metavar="REV", help="also measure this git revision")
    parser.add_argument(
        "--paired",
        type=int,
        default=0,
        metavar="N",
        help="also N ConfigMap patches on every variant's server in turn (paired samples)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/apiserver_writes.json")
    parser.add_argument("--chains-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.chains_only:  # the --baseline child: only what older revisions can run
        record: dict[str, Any] = {"writes": measure(args.writes, args.pods)}
        args.output.write_text(json.dumps(record) + "\n")
        return 0
    stores = args.stores.split(",")
    unknown = [s for s in stores if s not in STORES]
    if unknown:
        parser.error(f"--stores: {', '.join(unknown)} not among {', '.join(STORES)}")
    base = baseline(args.baseline, args.writes, args.pods) if args.baseline else None
    measure_store(stores[0], 2, 10, 30)  # warm-up (imports, first CEL compilations): not kept
    samples: dict[str, Samples] = {s: {} for s in stores}
    for round_ in range(args.rounds):
        # Rotating the order spreads the drift of the machine's load over every store.
        for store in stores[round_ % len(stores) :] + stores[: round_ % len(stores)]:
            measured = measure_store(store, args.writes, args.pods, args.stream)
            for kind, values in measured.items():
                samples[store].setdefault(kind, []).extend(values)
    results = {s: figures(samples[s], args.stream) for s in stores}
    access = access_cost() if any(STORES[s][1] == "rbac" for s in stores) else None
    paired = paired_writes(stores, args.paired) if args.paired else None
    for name in stores[1:]:
        results[name]["ratios"] = ratios(results[name], results[stores[0]])
    with open("/proc/loadavg") as loadavg:
        load = loadavg.read().split()[:3]
    print(
        f"API server writes, {args.rounds} rounds of: {args.pods} pods present, {args.writes} "
        f"chain writes of each kind, {args.stream} ConfigMap writes under a watch; "
        f"loadavg {' '.join(load)}"
    )
    show(results, base, args.baseline or "")
    if access is not None:
        print(f"access check per request, in process (microseconds): {access}")
    if paired is not None:
        print(f"{args.paired} ConfigMap patches on each server in turn: {paired}")
    record = {
        "access_us": access,
        "paired": paired,
        "pods": args.pods,
        "stream": args.stream,
        "rounds": args.rounds,
        "loadavg": load,
        "stores": results,
        "writes": results[stores[0]]["writes"],
        "baseline": args.baseline,
        "base": base,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
