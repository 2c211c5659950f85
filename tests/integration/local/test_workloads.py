"""What deploy/'s manifests need from a local pod, on a two-node local cluster (real processes,
real netns, the real kubectl).

- DaemonSet: one pod per node, bound and owned, in the node's network namespace with the
  ``hostNetwork`` flag; ``kubectl get ds`` columns and ``kubectl rollout status ds``; a
  template change rolls out one node at a time (``maxUnavailable: 1``: never both nodes without
  a ready pod); a ``nodeSelector`` takes the pod off a node that does not match; ``kubectl
  delete ds`` takes every pod with it.
- Volumes at their mount paths, in each container's own mount namespace: ``configMap``
  (every key, ``items``/``path``, ``defaultMode``, read-only), ``secret``, ``emptyDir`` shared by
  two containers, ``hostPath`` in the node's own tree (``/etc/...``) and on the node's bpffs
  subtree (``/sys/fs/bpf``), ``downwardAPI``, ``subPath``, the service-account directory
  (``namespace``, and ``token`` from the account's token Secret). Nothing shows on the host's
  tree, nothing is left mounted, and the pod's volume files go with the pod.
- In-cluster configuration: ``KUBERNETES_SERVICE_HOST``/``_PORT`` reach the API server from a
  pod's own netns and from a host-network pod; ``fieldRef`` and ``resourceFieldRef`` env.
- The projected service-account token rewritten at 80 % of its lifetime; the pod's
  ``/etc/hosts`` names the ``kubernetes`` Service (no cluster DNS here) and the pod.
- ``httpGet`` probes: readiness gates Ready (404 -> not ready, 200 -> ready, back to 404 -> not
  ready), liveness restarts the container, with the kubelet's event messages.
- ``startupProbe``: liveness and readiness wait for it; its failures restart the container;
  once it succeeds the container is ``started`` and Ready.
- A command that does not exist: the container waits in ``CreateContainerError`` with the
  launcher's one-line reason, also in a ``Failed`` event.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sfc_k8s.local import cli as local_cli
from sfc_k8s.local.kube import MERGE_PATCH
from sfc_k8s.local.layout import BPFFS_BASE, Layout, processes_in_netns
from tests.integration.local.cluster import (
    Cluster,
    container_status,
    local_cluster,
    ready,
    wait_for,
)

API_GET = (
    "import os, urllib.request; "
    "url = 'http://%s:%s/api/v1/namespaces/default' % "
    "(os.environ['KUBERNETES_SERVICE_HOST'], os.environ['KUBERNETES_SERVICE_PORT']); "
    "print('api', urllib.request.urlopen(url, timeout=5).status, flush=True)"
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with local_cluster(tmp_path_factory.mktemp("sfcw"), nodes=2) as c:
        yield c


def kubectl(layout: Layout, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [local_cli.KUBECTL, "--kubeconfig", str(layout.kubeconfig), *args],
        input=stdin, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def log_of(cluster: Cluster, pod: dict[str, Any], container: str) -> str:
    path = cluster.layout.pod_dir(pod["metadata"]["uid"]) / f"{container}.log"
    return path.read_text() if path.exists() else ""


def daemonset(ns: str, port: int, version: str) -> dict[str, Any]:
    labels = {"app": "agent"}
    server = f"{API_GET}; import http.server as h; h.test(h.SimpleHTTPRequestHandler, port={port})"
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": ns},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "hostNetwork": True,
                    "terminationGracePeriodSeconds": 1,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [
                        {
                            "name": "agent",
                            "image": "ignored",
                            "command": ["python3", "-c", server],
                            "workingDir": "/",
                            "env": [{"name": "VERSION", "value": version}],
                            "ports": [{"name": "http", "containerPort": port}],
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": "http"},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }


def ds_pods(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    items = cluster.kube.get(f"/api/v1/namespaces/{ns}/pods")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def test_daemonset_pod_per_node_rollout_selector_and_cascade(cluster: Cluster) -> None:
    ns = cluster.namespace()
    layout = cluster.layout
    kubectl(layout, "apply", "-f", "-", stdin=json.dumps(daemonset(ns, 18081, "1")))
    out = kubectl(layout, "rollout", "status", "ds/agent", "-n", ns, "--timeout=60s")
    assert 'daemon set "agent" successfully rolled out' in out
    header, row = kubectl(layout, "get", "ds", "-n", ns).splitlines()
    assert header.split() == [
        "NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE", "SELECTOR", "AGE",
    ]  # fmt: skip
    assert row.split()[:7] == ["agent", "2", "2", "2", "2", "2", "<none>"]
    pods = ds_pods(cluster, ns)
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["node-1", "node-2"]
    for pod in pods:
        (owner,) = pod["metadata"]["ownerReferences"]
        assert owner["kind"] == "DaemonSet" and owner["controller"] is True
        assert pod["status"]["podIP"] == pod["status"]["hostIP"]  # the node's network
        pid = int((layout.pod_dir(pod["metadata"]["uid"]) / "agent.pid").read_text())
        node_ns = layout.node_netns(pod["spec"]["nodeName"])
        assert pid in processes_in_netns(node_ns)
        # In-cluster configuration from the node's namespace.
        wait_for(
            "the API answering the pod", lambda p=pod: "api 200" in log_of(cluster, p, "agent")
        )

    # A template change: one node at a time.
    old = {p["metadata"]["name"] for p in pods}
    kubectl(layout, "set", "env", "ds/agent", "-n", ns, "VERSION=2")
    least_available = 2
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ds = cluster.kube.get(f"/apis/apps/v1/namespaces/{ns}/daemonsets/agent")
        status = ds.get("status") or {}
        least_available = min(least_available, status.get("numberAvailable", 0))
        current = ds_pods(cluster, ns)
        if (
            status.get("observedGeneration") == ds["metadata"]["generation"]
            and status.get("updatedNumberScheduled") == 2
            and status.get("numberAvailable") == 2
            and not old & {p["metadata"]["name"] for p in current}
        ):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the rollout did not finish: {status}")
    assert least_available == 1, "maxUnavailable 1: one node at a time, never both"
    out = kubectl(layout, "rollout", "status", "ds/agent", "-n", ns, "--timeout=30s")
    assert "successfully rolled out" in out
    assert all(
        c["env"][0]["value"] == "2" for p in ds_pods(cluster, ns) for c in p["spec"]["containers"]
    )

    # A node selector only node-1 matches: node-2's pod goes.
    kubectl(layout, "label", "node", "node-1", f"workload-{ns}=yes")
    try:
        patch = {"spec": {"template": {"spec": {"nodeSelector": {f"workload-{ns}": "yes"}}}}}
        kubectl(layout, "patch", "ds/agent", "-n", ns, "-p", json.dumps(patch))
        kubectl(layout, "rollout", "status", "ds/agent", "-n", ns, "--timeout=60s")
        wait_for(
            "only node-1's pod",
            lambda: [p["spec"]["nodeName"] for p in ds_pods(cluster, ns)] == ["node-1"],
        )
        header, row = kubectl(layout, "get", "ds", "-n", ns).splitlines()
        assert row.split()[1:7] == ["1", "1", "1", "1", "1", f"workload-{ns}=yes"]
    finally:
        kubectl(layout, "label", "node", "node-1", f"workload-{ns}-")

    kubectl(layout, "delete", "ds", "agent", "-n", ns)
    wait_for("the DaemonSet's pods gone", lambda: not cluster.kube.get(
        f"/api/v1/namespaces/{ns}/pods")["items"], timeout=30)  # fmt: skip


def _volume_pod(ns: str) -> dict[str, Any]:
    script = "; ".join(
        [
            "set -u",
            'echo "files: $(cat /etc/app/a) $(cat /etc/app/b) $(cat /etc/one/sub/x.txt)"',
            'echo "modes: $(stat -c %a /etc/app/a) $(stat -c %a /etc/one/sub/x.txt)"',
            'echo "secret: $(cat /etc/creds/password)"',
            'echo "subpath: $(cat /etc/only-b)"',
            'echo "downward: $(cat /etc/info/name) $(cat /etc/info/labels)"',
            "SA=/var/run/secrets/kubernetes.io/serviceaccount",
            'echo "sa: $(cat $SA/namespace) $(cat $SA/token)"',
            'touch /etc/app/new 2>/dev/null && echo "config writable" || echo "config read-only"',
            "echo hello > /etc/node-dir/from-pod",
            'echo "bpffs: $(stat -f -c %T /sys/fs/bpf)"',
            "mkdir -p /sys/fs/bpf/from-pod",
            "echo shared > /scratch/note",
            'echo "env: $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT $MY_NODE $MY_NS'
            ' $HOST_IP $MEM_MI $CPU"',
            'echo "pod ip: $POD_IP"',
            f'python3 -c "{API_GET}"',
            "echo done",
            "exec sleep 1000",
        ]
    )
    return {
        "nodeName": "node-1",
        "terminationGracePeriodSeconds": 0,
        "containers": [
            {
                "name": "main",
                "command": ["sh", "-c", script],
                "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}},
                "env": [
                    {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {
                        "name": "MY_NS",
                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                    },
                    {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {
                        "name": "MEM_MI",
                        "valueFrom": {
                            "resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}
                        },
                    },
                    {
                        "name": "CPU",
                        "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}},
                    },
                ],
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/app"},
                    {"name": "one", "mountPath": "/etc/one"},
                    {"name": "creds", "mountPath": "/etc/creds"},
                    {"name": "config", "mountPath": "/etc/only-b", "subPath": "b"},
                    {"name": "info", "mountPath": "/etc/info"},
                    {"name": "node-dir", "mountPath": "/etc/node-dir"},
                    {"name": "bpffs", "mountPath": "/sys/fs/bpf"},
                    {"name": "scratch", "mountPath": "/scratch"},
                ],
            },
            {
                "name": "reader",
                "command": [
                    "sh",
                    "-c",
                    "while ! cat /in/note; do sleep 0.1; done; exec sleep 1000",
                ],
                "volumeMounts": [{"name": "scratch", "mountPath": "/in", "readOnly": True}],
            },
        ],
        "volumes": [
            {"name": "config", "configMap": {"name": "app", "defaultMode": 0o440}},
            {
                "name": "one",
                "configMap": {"name": "app", "items": [{"key": "a", "path": "sub/x.txt"}]},
            },
            {"name": "creds", "secret": {"secretName": "creds"}},
            {
                "name": "info",
                "downwardAPI": {
                    "items": [
                        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    ]
                },
            },
            {
                "name": "node-dir",
                "hostPath": {"path": "/etc/sfc-test", "type": "DirectoryOrCreate"},
            },
            {"name": "bpffs", "hostPath": {"path": "/sys/fs/bpf", "type": "DirectoryOrCreate"}},
            {"name": "scratch", "emptyDir": {}},
        ],
    }


def _secret(ns: str, name: str, data: dict[str, str], **extra: Any) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    body = {"apiVersion": "v1", "kind": "Secret", "data": encoded, **extra}
    body["metadata"] = {"name": name, "namespace": ns, **body.get("metadata", {})}
    return body


def _host_mounts() -> set[str]:
    """The host's mount points, but network namespace files (other tests make them too)."""
    points = {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
    return {p for p in points if not p.startswith("/run/netns/")}


def test_volumes_in_cluster_env_and_nothing_left(cluster: Cluster) -> None:
    ns = cluster.namespace()
    kube, layout = cluster.kube, cluster.layout
    kube.request("POST", f"/api/v1/namespaces/{ns}/configmaps", body={
        "metadata": {"name": "app"}, "data": {"a": "alpha", "b": "beta"},
    })  # fmt: skip
    kube.request("POST", f"/api/v1/namespaces/{ns}/secrets", body=_secret(ns, "creds", {
        "password": "s3cret"}))  # fmt: skip
    token_secret = _secret(
        ns, "default-token", {"token": "tok-123"}, type="kubernetes.io/service-account-token",
        metadata={"annotations": {"kubernetes.io/service-account.name": "default"}},
    )  # fmt: skip
    kube.request("POST", f"/api/v1/namespaces/{ns}/secrets", body=token_secret)
    before = _host_mounts()
    had_secrets_dir = os.path.lexists("/var/run/secrets")
    cluster.create_pod(ns, "vols", _volume_pod(ns), labels={"app": "vols"})
    pod = cluster.wait_pod(ns, "vols", ready)
    uid = pod["metadata"]["uid"]
    wait_for("the report", lambda: "done" in log_of(cluster, pod, "main"))
    report = dict(
        line.split(": ", 1) for line in log_of(cluster, pod, "main").splitlines() if ": " in line
    )
    assert report["files"] == "alpha beta alpha"
    assert report["modes"] == "440 644"
    assert report["secret"] == "s3cret"
    assert report["subpath"] == "beta"
    assert report["downward"] == 'vols app="vols"'
    assert report["sa"] == f"{ns} tok-123"
    assert "config read-only" in log_of(cluster, pod, "main")
    assert report["bpffs"] == "bpf_fs"
    pod_ip = pod["status"]["podIP"]
    assert report["env"] == f"10.96.0.1 443 node-1 {ns} 172.18.0.2 64 1"
    assert report["pod ip"] == pod_ip and pod_ip.startswith("10.244.1.")
    assert "api 200" in log_of(cluster, pod, "main")  # from the pod's own netns
    wait_for("the other container reading the emptyDir", lambda: "shared" in log_of(
        cluster, pod, "reader"))  # fmt: skip
    # hostPaths landed in node-1's own tree and bpffs subtree, not the host's.
    assert (layout.node_root("node-1") / "etc/sfc-test/from-pod").read_text() == "hello\n"
    assert not os.path.exists("/etc/sfc-test")
    assert os.path.isdir(f"{layout.node_bpffs('node-1')}/from-pod")
    # Every mount is in the containers' own namespaces: none on the host. (Only ours are
    # looked for: other test sessions on the machine may mount things meanwhile.)
    ours = {m["mountPath"] for c in _volume_pod(ns)["containers"] for m in c["volumeMounts"]}
    ours |= {"/", "/run", "/var/run/secrets/kubernetes.io/serviceaccount"}
    new = _host_mounts() - before
    assert not new & ours, new & ours
    assert not [p for p in new if p.startswith((str(layout.state_dir), BPFFS_BASE))], new
    assert os.path.lexists("/var/run/secrets") == had_secrets_dir

    cluster.delete_pod(ns, "vols", grace=0)
    cluster.wait_gone(ns, "vols")
    assert not (layout.pod_dir(uid) / "volumes").exists()
    assert not any(p.startswith(str(layout.pod_dir(uid))) for p in _host_mounts())
    os.rmdir(f"{layout.node_bpffs('node-1')}/from-pod")


_TOKEN_WATCH = """
import time
print(open("/etc/hosts").read(), flush=True)
last = None
while True:
    token = open("/var/run/secrets/tokens/token").read()
    if token != last:
        print("token", token, flush=True)
        last = token
    time.sleep(0.1)
"""


def test_projected_token_is_renewed_and_etc_hosts_names_the_api(cluster: Cluster) -> None:
    """The kubelet's parts the operator's pods rely on: a projected service-account token
    rewritten at 80 % of its lifetime (here 2 s, the plain test server's legacy token Secret
    changed meanwhile), and a pod ``/etc/hosts`` naming the ``kubernetes`` Service."""
    ns = cluster.namespace()
    secret = _secret(
        ns, "default-token", {"token": "tok-1"}, type="kubernetes.io/service-account-token",
        metadata={"annotations": {"kubernetes.io/service-account.name": "default"}},
    )  # fmt: skip
    cluster.kube.request("POST", f"/api/v1/namespaces/{ns}/secrets", body=secret)
    source = {"serviceAccountToken": {"path": "token", "expirationSeconds": 2}}
    spec = {
        "containers": [{
            "name": "main", "command": [sys.executable, "-c", _TOKEN_WATCH],
            "volumeMounts": [{"name": "tokens", "mountPath": "/var/run/secrets/tokens"}],
        }],
        "volumes": [{"name": "tokens", "projected": {"sources": [source]}}],
    }  # fmt: skip
    cluster.create_pod(ns, "tokens", spec)
    pod = cluster.wait_pod(ns, "tokens", ready)
    wait_for("the first token read", lambda: "token tok-1" in log_of(cluster, pod, "main"))
    hosts = log_of(cluster, pod, "main")
    assert "10.96.0.1\tkubernetes.default.svc.cluster.local kubernetes.default.svc" in hosts
    assert f"{pod['status']['podIP']}\ttokens" in hosts
    patch = {"data": {"token": base64.b64encode(b"tok-2").decode()}}
    cluster.kube.request(
        "PATCH", f"/api/v1/namespaces/{ns}/secrets/default-token", body=patch,
        content_type=MERGE_PATCH,
    )  # fmt: skip
    changed_at = time.monotonic()
    wait_for("the renewed token", lambda: "token tok-2" in log_of(cluster, pod, "main"), 5)
    assert time.monotonic() - changed_at < 2.5  # renewed at 1.6 s, not at expiry or never
    cluster.delete_pod(ns, "tokens", grace=0)
    cluster.wait_gone(ns, "tokens")


def test_http_probes_gate_readiness_and_restart(cluster: Cluster) -> None:
    ns = cluster.namespace()
    server = "import http.server as h; h.test(h.SimpleHTTPRequestHandler, port=18090)"
    probe = {"port": "web", "path": "/ready"}
    spec = {
        "nodeName": "node-2",
        "terminationGracePeriodSeconds": 0,
        "containers": [
            {
                "name": "web",
                "command": ["python3", "-c", server],
                "workingDir": "/www",
                "ports": [{"name": "web", "containerPort": 18090}],
                "volumeMounts": [{"name": "www", "mountPath": "/www"}],
                "readinessProbe": {"httpGet": probe, "periodSeconds": 1},
                "livenessProbe": {
                    "httpGet": {"port": 18090, "path": "/alive"},
                    "periodSeconds": 1,
                    "failureThreshold": 2,
                },
            }
        ],
        "volumes": [{"name": "www", "emptyDir": {}}],
    }
    cluster.create_pod(ns, "web", spec)
    pod = cluster.wait_pod(ns, "web", lambda p: container_status(p).get("started") is True)
    www = cluster.layout.pod_dir(pod["metadata"]["uid"]) / "volumes" / "www"
    (www / "alive").write_text("yes")
    # /ready answers 404: started, not ready.
    wait_for("a readiness failure", lambda: any(
        "Readiness probe failed: HTTP probe failed with statuscode: 404" in e["message"]
        for e in cluster.events(ns, "web")))  # fmt: skip
    assert not ready(cluster.pod(ns, "web") or {})
    (www / "ready").write_text("yes")
    cluster.wait_pod(ns, "web", ready, timeout=10)
    (www / "ready").unlink()
    cluster.wait_pod(ns, "web", lambda p: not ready(p), timeout=10)
    assert container_status(cluster.pod(ns, "web") or {})["restartCount"] == 0
    # /alive gone: the liveness probe kills the container, the kubelet starts it again.
    (www / "alive").unlink()
    restarted = cluster.wait_pod(
        ns, "web", lambda p: container_status(p)["restartCount"] >= 1, timeout=20
    )
    assert restarted["status"]["containerStatuses"][0]["lastState"]["terminated"]
    messages = [e["message"] for e in cluster.events(ns, "web")]
    assert "Liveness probe failed: HTTP probe failed with statuscode: 404" in messages
    assert "Container web failed liveness probe" in messages
    cluster.delete_pod(ns, "web", grace=0)
    cluster.wait_gone(ns, "web")


def test_a_container_that_cannot_start_says_why(cluster: Cluster) -> None:
    ns = cluster.namespace()
    spec = {
        "nodeName": "node-1",
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "main", "command": ["sfc-test-no-such-command"]}],
    }
    cluster.create_pod(ns, "broken", spec)

    def waiting(pod: dict[str, Any]) -> bool:
        state = container_status(pod).get("state") or {}
        return (state.get("waiting") or {}).get("reason") == "CreateContainerError"

    pod = cluster.wait_pod(ns, "broken", waiting)
    message = container_status(pod)["state"]["waiting"]["message"]
    assert message == (
        "cannot start the container: exec 'sfc-test-no-such-command': No such file or directory"
    )
    assert f"Error: {message}" in [e["message"] for e in cluster.events(ns, "broken")]
    cluster.delete_pod(ns, "broken", grace=0)
    cluster.wait_gone(ns, "broken")


def test_startup_probe_holds_liveness_and_readiness_back(cluster: Cluster) -> None:
    ns = cluster.namespace()
    server = "import http.server as h; h.test(h.SimpleHTTPRequestHandler, port=18091)"
    spec = {
        "nodeName": "node-1",
        "terminationGracePeriodSeconds": 0,
        "containers": [
            {
                "name": "web",
                "command": ["python3", "-c", server],
                "workingDir": "/www",
                "volumeMounts": [{"name": "www", "mountPath": "/www"}],
                "startupProbe": {
                    "httpGet": {"port": 18091, "path": "/started"},
                    "periodSeconds": 1,
                    "failureThreshold": 3,
                },
                "livenessProbe": {
                    "httpGet": {"port": 18091, "path": "/alive"},
                    "periodSeconds": 1,
                    "failureThreshold": 1,
                },
            }
        ],
        "volumes": [{"name": "www", "emptyDir": {}}],
    }
    cluster.create_pod(ns, "slow", spec)
    # /started and /alive answer 404: the startup probe fails 3 times and restarts it; the
    # liveness probe, which would have killed it at once, never ran.
    pod = cluster.wait_pod(
        ns, "slow", lambda p: container_status(p).get("restartCount", 0) >= 1, timeout=20
    )
    messages = [e["message"] for e in cluster.events(ns, "slow")]
    assert "Container web failed startup probe" in messages
    assert "Startup probe failed: HTTP probe failed with statuscode: 404" in messages
    assert not any(m.startswith("Liveness") for m in messages)
    assert container_status(pod)["started"] is False and not ready(pod)
    www = cluster.layout.pod_dir(pod["metadata"]["uid"]) / "volumes" / "www"
    (www / "started").write_text("yes")
    (www / "alive").write_text("yes")
    pod = cluster.wait_pod(ns, "slow", ready, timeout=15)
    assert container_status(pod)["started"] is True
    cluster.delete_pod(ns, "slow", grace=0)
    cluster.wait_gone(ns, "slow")
