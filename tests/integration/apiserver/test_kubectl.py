"""The real kubectl (v1.32) against the local API server.

Covers: discovery (`api-resources`, `version`); `apply -f` create and re-apply (strategic merge
of containers/env); `get` with printer columns, `-o yaml`, `-o wide`, label and field selectors;
`describe`; `get -w` streaming a later change; Deployments: `scale` up and down and the
Deployment controller's pods; `delete` (cascading to the Deployment's pods); CRDs: registering
the ServiceFunctionChain CRD serves `sfc` with defaults, printer columns and a status
subresource; invalid manifests (schema, CEL, built-in validation, unknown kind) answered with
Kubernetes-shaped errors that kubectl prints; `kubectl logs` (whole, `--tail`, `-f` until the
pod is deleted) from the pod log directory; strict field validation of built-in kinds.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.fixtures.apiserver import LocalAPIServer

HERE = Path(__file__).parent
SFC_CRD = HERE / "sfc-crd.yaml"  # the schema tests' own CRD (the product's: deploy/crds/)

POD = """
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web, tier: front}}
spec:
  containers:
    - {name: main, image: busybox, command: [sleep, "3600"], env: [{name: MODE, value: one}]}
"""

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: fw}
spec:
  replicas: 2
  selector: {matchLabels: {app: fw}}
  template:
    metadata: {labels: {app: fw}}
    spec:
      containers: [{name: bridge, image: busybox, command: [sleep, "3600"]}]
"""

CHAIN = """
apiVersion: sfc-k8s.io/v1alpha1
kind: ServiceFunctionChain
metadata: {name: web}
spec:
  functions:
    - {name: client, selector: {matchLabels: {app: client}}, interfaces: [eth1]}
    - {name: firewall, selector: {matchLabels: {app: firewall}}, interfaces: [eth1, eth2]}
  links:
    - name: client-firewall
      a: {function: client, interface: eth1}
      b: {function: firewall, interface: eth1}
"""


def _apply(apiserver: LocalAPIServer, manifest: str) -> subprocess.CompletedProcess[str]:
    return apiserver.kubectl("apply", "-f", "-", input=manifest)


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


class _Streaming:
    """A long-running kubectl (`get -w`, `logs -f`) whose output lines a thread collects."""

    def __init__(self, apiserver: LocalAPIServer, *args: str) -> None:
        command = [
            "/usr/bin/kubectl",
            "--kubeconfig",
            str(apiserver.kubeconfig),
            "--cache-dir",
            str(apiserver.cache_dir),
            *args,
        ]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        _eventually(lambda: any(text in line for line in self.lines), timeout)

    def finish(self, timeout: float = 20.0) -> list[str]:
        """Wait for kubectl to end by itself; return its output lines."""
        self.proc.wait(timeout)
        self._reader.join(timeout)
        return self.lines

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _pod_names(apiserver: LocalAPIServer, selector: str) -> list[str]:
    out = apiserver.kubectl("get", "pods", "-l", selector, "-o", "name", check=True).stdout
    return sorted(out.split())


def test_discovery_lists_builtin_and_preloaded_resources(apiserver: LocalAPIServer) -> None:
    out = apiserver.kubectl("api-resources", check=True).stdout
    for name in (
        "pods",
        "deployments",
        "customresourcedefinitions",
        "leases",
        "network-attachment-definitions",
        "kopfpeerings",
    ):
        assert name in out
    version = apiserver.kubectl("version", "-o", "yaml", check=True).stdout
    assert yaml.safe_load(version)["serverVersion"]["minor"] == "32"


def test_pod_apply_get_describe_delete(apiserver: LocalAPIServer) -> None:
    assert "pod/web created" in _apply(apiserver, POD).stdout
    assert "pod/web configured" in _apply(apiserver, POD.replace("one", "two")).stdout
    pod = yaml.safe_load(apiserver.kubectl("get", "pod", "web", "-o", "yaml", check=True).stdout)
    assert pod["spec"]["containers"][0]["env"] == [{"name": "MODE", "value": "two"}]
    assert pod["metadata"]["generation"] == 2 and pod["status"]["phase"] == "Pending"
    table = apiserver.kubectl("get", "pods", "-o", "wide", check=True).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert table[1].split()[:3] == ["web", "0/1", "Pending"]
    assert _pod_names(apiserver, "tier in (front,back),app!=db") == ["pod/web"]
    assert _pod_names(apiserver, "!tier") == []
    by_field = apiserver.kubectl(
        "get", "pods", "--field-selector", "status.phase=Pending", "-o", "name", check=True
    ).stdout
    assert by_field.split() == ["pod/web"]
    described = apiserver.kubectl("describe", "pod", "web", check=True).stdout
    assert "Status:" in described and "MODE:" in described
    assert 'pod "web" deleted' in apiserver.kubectl("delete", "pod", "web", check=True).stdout
    missing = apiserver.kubectl("get", "pod", "web")
    assert missing.returncode == 1
    assert 'Error from server (NotFound): pods "web" not found' in missing.stderr


def test_watch_streams_later_changes(apiserver: LocalAPIServer) -> None:
    _apply(apiserver, POD)
    watch = _Streaming(apiserver, "get", "pods", "-w", "--output-watch-events")
    try:
        watch.wait_for("ADDED")
        apiserver.kubectl("label", "pod", "web", "seen=yes", check=True)
        watch.wait_for("MODIFIED")
        apiserver.kubectl("delete", "pod", "web", check=True)
        watch.wait_for("DELETED")
    finally:
        watch.close()
    events = [line.split()[0] for line in watch.lines[1:]]
    assert events == ["ADDED", "MODIFIED", "DELETED"], watch.lines


def test_deployment_scale_and_cascading_delete(apiserver: LocalAPIServer) -> None:
    _apply(apiserver, DEPLOYMENT)
    _eventually(lambda: len(_pod_names(apiserver, "app=fw")) == 2)
    first = _pod_names(apiserver, "app=fw")
    assert all(name.startswith("pod/fw-") for name in first)
    apiserver.kubectl("scale", "deployment", "fw", "--replicas=4", check=True)
    _eventually(lambda: len(_pod_names(apiserver, "app=fw")) == 4)
    apiserver.kubectl("scale", "deployment", "fw", "--replicas=1", check=True)
    _eventually(lambda: len(_pod_names(apiserver, "app=fw")) == 1)
    assert _pod_names(apiserver, "app=fw")[0] in first, "scale-down removes the newest pods"
    header, _ = apiserver.kubectl("get", "deploy", "fw", check=True).stdout.splitlines()
    assert header.split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    _eventually(
        lambda: (
            apiserver.kubectl("get", "deploy", "fw").stdout.splitlines()[1].split()[1:3]
            == ["0/1", "1"]
        )
    )
    assert "Replicas:" in apiserver.kubectl("describe", "deploy", "fw", check=True).stdout
    apiserver.kubectl("delete", "deployment", "fw", check=True)
    _eventually(lambda: _pod_names(apiserver, "app=fw") == [])


def test_custom_resources_follow_their_crd(apiserver: LocalAPIServer) -> None:
    apiserver.kubectl("apply", "-f", str(SFC_CRD), check=True)
    apiserver.kubectl(
        "wait",
        "--for=condition=established",
        "crd/servicefunctionchains.sfc-k8s.io",
        "--timeout=10s",
        check=True,
    )
    assert "servicefunctionchain.sfc-k8s.io/web created" in _apply(apiserver, CHAIN).stdout
    chain = yaml.safe_load(apiserver.kubectl("get", "sfc", "web", "-o", "yaml", check=True).stdout)
    assert chain["spec"]["dataplane"]["drainTimeoutSeconds"] == 30, "schema default applied"
    header = apiserver.kubectl("get", "sfc", check=True).stdout.splitlines()[0].split()
    assert header[:4] == ["NAME", "FUNCTIONS", "LINKS", "READY"]
    apiserver.kubectl(
        "patch",
        "sfc",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"conditions": [{"type": "Ready", "status": "True"}]}}',
        check=True,
    )
    assert "True" in apiserver.kubectl("get", "sfc", "web", check=True).stdout.splitlines()[1]
    assert "web" in apiserver.kubectl("get", "sfc-k8s", check=True).stdout, "by category"
    apiserver.kubectl("delete", "sfc", "web", check=True)
    apiserver.kubectl("delete", "crd", "servicefunctionchains.sfc-k8s.io", check=True)
    gone = apiserver.kubectl("get", "sfc")
    assert gone.returncode != 0


def test_invalid_manifests_get_kubernetes_errors(apiserver: LocalAPIServer) -> None:
    apiserver.kubectl("apply", "-f", str(SFC_CRD), check=True)
    duplicate = CHAIN.replace("name: firewall,", "name: client,").replace(
        "function: firewall", "function: client"
    )
    result = _apply(apiserver, duplicate)
    assert result.returncode == 1
    assert 'The ServiceFunctionChain "web" is invalid' in result.stderr
    assert "function names must be unique" in result.stderr
    wrong_type = CHAIN.replace("interfaces: [eth1]}", "interfaces: eth1}", 1)
    result = _apply(apiserver, wrong_type)
    assert "spec.functions[0].interfaces" in result.stderr and "must be of type array" in (
        result.stderr
    )
    no_image = POD.replace("image: busybox, ", "")
    result = _apply(apiserver, no_image)
    assert 'The Pod "web" is invalid: spec.containers[0].image: Required value' in result.stderr
    unknown = _apply(apiserver, "apiVersion: example.com/v1\nkind: Nope\nmetadata: {name: x}\n")
    assert unknown.returncode == 1 and 'no matches for kind "Nope"' in unknown.stderr
    conflict = apiserver.kubectl(
        "create", "-f", "-", input="apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n"
    )
    assert "Error from server (AlreadyExists)" in conflict.stderr
    assert 'namespaces "default" already exists' in conflict.stderr


def test_logs_are_served_from_the_pod_log_directory(apiserver: LocalAPIServer) -> None:
    _apply(apiserver, POD)
    waiting = apiserver.kubectl("logs", "web")
    assert waiting.returncode == 1 and "waiting to start" in waiting.stderr
    uid = apiserver.kubectl(
        "get", "pod", "web", "-o", "jsonpath={.metadata.uid}", check=True
    ).stdout
    log = apiserver.pod_log_dir / uid / "main.log"
    log.parent.mkdir(parents=True)
    log.write_text("one\ntwo\nthree\n")
    assert apiserver.kubectl("logs", "web", check=True).stdout == "one\ntwo\nthree\n"
    assert apiserver.kubectl("logs", "web", "--tail=1", check=True).stdout == "three\n"
    follow = _Streaming(apiserver, "logs", "-f", "web")
    try:
        follow.wait_for("three")
        with log.open("a") as handle:
            handle.write("four\n")
        follow.wait_for("four")
        apiserver.kubectl("delete", "pod", "web", check=True)
        out = follow.finish()
    finally:
        follow.close()
    assert out == ["one", "two", "three", "four"], "follow streams until the pod is gone"


def test_strict_validation_of_builtin_kinds(apiserver: LocalAPIServer) -> None:
    typo = _apply(apiserver, DEPLOYMENT.replace("command:", "comand:"))
    assert typo.returncode == 1
    assert "Error from server (BadRequest)" in typo.stderr
    assert 'unknown field "spec.template.spec.containers[0].comand"' in typo.stderr
    assert "deployment.apps/fw created" in _apply(apiserver, DEPLOYMENT).stdout
    # A field stored by a non-strict writer (no fieldValidation) does not make later kubectl
    # edits of the object fail: only what a request brings is refused.
    server = apiserver.server
    deployments = server.store.resource("apps", "v1", "deployments")
    server.call(
        server.store.patch,
        deployments,
        "default",
        "fw",
        "application/merge-patch+json",
        {"spec": {"legacyField": 1}},
    )
    apiserver.kubectl("label", "deployment", "fw", "tier=edge", check=True)
    relaxed = apiserver.kubectl(
        "apply",
        "--validate=false",
        "-f",
        "-",
        input=DEPLOYMENT.replace("command:", "comand:").replace("name: fw", "name: relaxed"),
    )
    assert relaxed.returncode == 0, "--validate=false turns strict checking off"
