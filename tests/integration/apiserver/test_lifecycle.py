"""Object lifecycle in the local API server, through HTTP and the real kubectl.

Covers: the scheduler binds pods round-robin/least-loaded to Ready nodes only (and honours
nodeSelector); graceful pod deletion waits for the node (Terminating in `kubectl get`) until a
delete with gracePeriodSeconds=0 confirms it; pods of a node that disappears are collected;
a node whose heartbeats stop becomes NotReady (Unknown); ownerReference garbage collection
(background, foreground, orphan); namespace deletion removes its content, then the namespace;
Deployments replace deleted pods and roll out a new template;
`kubectl create namespace|configmap|secret|deployment` (protobuf bodies); server-side apply and
`--dry-run=server`; raw watch streams: resume from a resourceVersion, BOOKMARK events,
`timeoutSeconds`, 410 Expired as an ERROR event, Table watches; Status bodies for
404/405/409/415/422.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import yaml

from sfc_k8s.local.apiserver import APIServer
from sfc_k8s.local.apiserver.store import PATCH_MERGE, Store
from tests.fixtures.apiserver import LocalAPIServer

NODE_STATUS = {"conditions": [{"type": "Ready", "status": "True"}]}


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _request(
    server: APIServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        server.url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def _watch(server: APIServer, path: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(server.url + path, timeout=10) as response:
        return [json.loads(line) for line in response.read().splitlines() if line]


def _pod(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec},
    }


def _node(name: str, ready: bool = True, **labels: str) -> dict[str, Any]:
    status = NODE_STATUS if ready else {"conditions": [{"type": "Ready", "status": "False"}]}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": status,
    }


def _call(apiserver: LocalAPIServer, name: str, *args: Any, **kwargs: Any) -> Any:
    store: Store = apiserver.server.store
    return apiserver.server.call(lambda: getattr(store, name)(*args, **kwargs))


def test_scheduler_spreads_pods_over_ready_nodes(apiserver: LocalAPIServer) -> None:
    server = apiserver.server
    for node in (_node("n1"), _node("n2", zone="b"), _node("n3", ready=False)):
        assert _request(server, "POST", "/api/v1/nodes", node)[0] == 201
    for i in range(4):
        _request(server, "POST", "/api/v1/namespaces/default/pods", _pod(f"p{i}"))
    _request(
        server,
        "POST",
        "/api/v1/namespaces/default/pods",
        _pod("pinned", nodeSelector={"zone": "b"}),
    )
    _request(
        server,
        "POST",
        "/api/v1/namespaces/default/pods",
        _pod("nowhere", nodeSelector={"zone": "z"}),
    )

    def placement() -> dict[str, str]:
        _, pods = _request(server, "GET", "/api/v1/namespaces/default/pods")
        return {p["metadata"]["name"]: p["spec"].get("nodeName", "") for p in pods["items"]}

    _eventually(lambda: sum(1 for n in placement().values() if n) == 5)
    nodes = placement()
    assert nodes["pinned"] == "n2" and nodes["nowhere"] == ""
    spread = [node for node in nodes.values() if node]
    assert "n3" not in spread and abs(spread.count("n1") - spread.count("n2")) <= 1

    def unschedulable() -> bool:
        _, pod = _request(server, "GET", "/api/v1/namespaces/default/pods/nowhere")
        conditions = pod.get("status", {}).get("conditions", [])
        return [c.get("reason") for c in conditions] == ["Unschedulable"]

    _eventually(unschedulable)
    on_node = apiserver.kubectl(
        "get", "pods", "--field-selector", "spec.nodeName=n2", "-o", "name", check=True
    ).stdout.split()
    assert "pod/pinned" in on_node


def test_graceful_pod_deletion_waits_for_the_node(apiserver: LocalAPIServer) -> None:
    server = apiserver.server
    _request(server, "POST", "/api/v1/nodes", _node("n1"))
    _request(
        server,
        "POST",
        "/api/v1/namespaces/default/pods",
        _pod("p", nodeName="n1", terminationGracePeriodSeconds=20),
    )
    apiserver.kubectl("delete", "pod", "p", "--wait=false", check=True)
    _, pod = _request(server, "GET", "/api/v1/namespaces/default/pods/p")
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 20
    assert "Terminating" in apiserver.kubectl("get", "pod", "p", check=True).stdout
    # The node runtime confirms the end of the containers with a zero grace period.
    code, _ = _request(
        server, "DELETE", "/api/v1/namespaces/default/pods/p", {"gracePeriodSeconds": 0}
    )
    assert code == 200
    assert _request(server, "GET", "/api/v1/namespaces/default/pods/p")[0] == 404
    # A terminating pod whose node goes away is collected by the pod GC.
    _request(server, "POST", "/api/v1/namespaces/default/pods", _pod("q", nodeName="n1"))
    _request(server, "DELETE", "/api/v1/namespaces/default/pods/q")
    assert _request(server, "GET", "/api/v1/namespaces/default/pods/q")[0] == 200
    _request(server, "DELETE", "/api/v1/nodes/n1")
    _eventually(lambda: _request(server, "GET", "/api/v1/namespaces/default/pods/q")[0] == 404)


def test_owner_references_cascade(apiserver: LocalAPIServer) -> None:
    server = apiserver.server
    base = "/api/v1/namespaces/default/configmaps"

    def make(name: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
        md: dict[str, Any] = {"name": name}
        if owner is not None:
            md["ownerReferences"] = [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                }
            ]
        return _request(server, "POST", base, {"metadata": md})[1]

    def exists(name: str) -> bool:
        return _request(server, "GET", f"{base}/{name}")[0] == 200

    root = make("root")
    child = make("child", root)
    make("grandchild", child)
    _request(server, "DELETE", f"{base}/root")
    _eventually(lambda: not exists("child") and not exists("grandchild"))

    root = make("root")
    make("child", root)
    _request(server, "DELETE", f"{base}/root", {"propagationPolicy": "Orphan"})
    assert not exists("root")
    # The orphan loses its owner reference and stays (waited for as an event, not a time).
    _eventually(
        lambda: "ownerReferences" not in _request(server, "GET", f"{base}/child")[1]["metadata"]
    )
    assert exists("child")

    root = make("fg")
    dependent = make("dep", root)
    _request(
        server,
        "PATCH",
        f"{base}/dep",
        {"metadata": {"finalizers": ["test/hold"]}},
        {"Content-Type": "application/merge-patch+json"},
    )
    _request(server, "DELETE", f"{base}/fg", {"propagationPolicy": "Foreground"})
    _eventually(
        lambda: bool(_request(server, "GET", f"{base}/dep")[1]["metadata"].get("deletionTimestamp"))
    )
    assert exists("fg"), "a foreground deletion waits for the dependents"
    _request(
        server,
        "PATCH",
        f"{base}/dep",
        {"metadata": {"finalizers": None}},
        {"Content-Type": "application/merge-patch+json"},
    )
    _eventually(lambda: not exists("fg") and not exists("dep"))
    del dependent


def test_namespace_deletion_removes_its_content(apiserver: LocalAPIServer) -> None:
    apiserver.kubectl("create", "namespace", "scratch", check=True)
    apiserver.kubectl(
        "create", "configmap", "cm", "-n", "scratch", "--from-literal=a=b", check=True
    )
    apiserver.kubectl(
        "create", "secret", "generic", "s", "-n", "scratch", "--from-literal=p=q", check=True
    )
    cm = yaml.safe_load(
        apiserver.kubectl("get", "cm", "cm", "-n", "scratch", "-o", "yaml", check=True).stdout
    )
    assert cm["data"] == {"a": "b"}
    secret = yaml.safe_load(
        apiserver.kubectl("get", "secret", "s", "-n", "scratch", "-o", "yaml", check=True).stdout
    )
    assert secret["data"] == {"p": "cQ=="}
    apiserver.kubectl(
        "create",
        "deployment",
        "web",
        "-n",
        "scratch",
        "--image=busybox",
        "--replicas=2",
        "--",
        "sleep",
        "100",
        check=True,
    )
    command = apiserver.kubectl(
        "get",
        "deploy",
        "web",
        "-n",
        "scratch",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].command}",
        check=True,
    ).stdout
    assert json.loads(command) == ["sleep", "100"]
    _eventually(
        lambda: (
            len(
                apiserver.kubectl(
                    "get", "pods", "-n", "scratch", "-o", "name", check=True
                ).stdout.split()
            )
            == 2
        )
    )
    apiserver.kubectl("delete", "namespace", "scratch", "--timeout=20s", check=True)
    assert apiserver.kubectl("get", "ns", "scratch").returncode == 1
    assert apiserver.kubectl("get", "cm", "-n", "scratch", "-o", "name").stdout == ""


def test_server_side_apply_and_dry_run(apiserver: LocalAPIServer) -> None:
    manifest = yaml.safe_dump(_pod("ssa"))
    out = apiserver.kubectl("apply", "--server-side", "-f", "-", input=manifest, check=True)
    assert "serverside-applied" in out.stdout
    changed = manifest.replace("busybox", "alpine")
    apiserver.kubectl("apply", "--server-side", "-f", "-", input=changed, check=True)
    image = apiserver.kubectl(
        "get", "pod", "ssa", "-o", "jsonpath={.spec.containers[0].image}", check=True
    ).stdout
    assert image == "alpine"
    dry = apiserver.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(_pod("dry")), check=True
    )
    assert "(server dry run)" in dry.stdout
    assert apiserver.kubectl("get", "pod", "dry").returncode == 1


def test_raw_watch_resume_bookmarks_and_expiry() -> None:
    server = APIServer(history_limit=5)
    server.start()
    try:
        store = server.store
        cms = store.resource("", "v1", "configmaps")
        server.call(store.create, cms, "default", {"metadata": {"name": "a"}})
        mark = server.call(lambda: store.resource_version)
        server.call(store.patch, cms, "default", "a", PATCH_MERGE, {"data": {"x": "1"}})
        server.call(store.create, cms, "default", {"metadata": {"name": "b"}})
        path = "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1"
        events = _watch(server, f"{path}&resourceVersion={mark}&allowWatchBookmarks=true")
        assert [e["type"] for e in events] == ["MODIFIED", "ADDED", "BOOKMARK"]
        assert [e["object"]["metadata"]["name"] for e in events[:2]] == ["a", "b"]
        assert events[-1]["type"] == "BOOKMARK"
        assert events[-1]["object"]["metadata"]["resourceVersion"] == str(
            server.call(lambda: store.resource_version)
        )
        selected = _watch(server, f"{path}&resourceVersion=0&fieldSelector=metadata.name%3Db")
        assert [e["object"]["metadata"]["name"] for e in selected] == ["b"]
        one = _watch(server, "/api/v1/namespaces/default/configmaps/a?watch=1&timeoutSeconds=1")
        assert [e["object"]["metadata"]["name"] for e in one] == ["a"]
        for n in range(6):
            server.call(store.patch, cms, "default", "a", PATCH_MERGE, {"data": {"x": str(n)}})
        expired = _watch(server, f"{path}&resourceVersion={mark}")
        assert expired[0]["type"] == "ERROR"
        assert (expired[0]["object"]["code"], expired[0]["object"]["reason"]) == (410, "Expired")
        tables = _watch_table(server, f"{path}&resourceVersion=0")
        assert tables[0]["object"]["kind"] == "Table"
        assert [c["name"] for c in tables[0]["object"]["columnDefinitions"]] == ["Name", "Age"]
    finally:
        server.stop()


def _watch_table(server: APIServer, path: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        server.url + path, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return [json.loads(line) for line in response.read().splitlines() if line]


def test_errors_are_status_objects(apiserver: LocalAPIServer) -> None:
    server = apiserver.server
    code, body = _request(server, "GET", "/api/v1/namespaces/default/pods/nope")
    assert (code, body["kind"], body["reason"]) == (404, "Status", "NotFound")
    assert body["details"] == {"name": "nope", "group": "", "kind": "pods"}
    code, body = _request(server, "GET", "/apis/example.com/v1/things")
    assert (code, body["reason"]) == (404, "NotFound")
    code, body = _request(server, "PUT", "/api/v1/namespaces/default/pods")
    assert (code, body["reason"]) == (405, "MethodNotAllowed")
    _request(server, "POST", "/api/v1/namespaces/default/pods", _pod("dup"))
    code, body = _request(server, "POST", "/api/v1/namespaces/default/pods", _pod("dup"))
    assert (code, body["reason"]) == (409, "AlreadyExists")
    code, body = _request(
        server,
        "POST",
        "/api/v1/namespaces/default/pods",
        {"metadata": {"name": "Bad_Name"}, "spec": {"containers": []}},
    )
    assert (code, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    code, body = _request(
        server,
        "PATCH",
        "/api/v1/namespaces/default/pods/dup",
        {"x": 1},
        {"Content-Type": "text/plain"},
    )
    assert (code, body["reason"]) == (415, "UnsupportedMediaType")


def _ready(server: APIServer, pod: dict[str, Any]) -> None:
    status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    path = f"/api/v1/namespaces/default/pods/{pod['metadata']['name']}/status"
    code, _ = _request(
        server, "PATCH", path, {"status": status}, {"Content-Type": "application/merge-patch+json"}
    )
    assert code == 200


def test_deployment_replaces_pods_and_rolls_out_a_new_template(apiserver: LocalAPIServer) -> None:
    server = apiserver.server
    _request(server, "POST", "/api/v1/nodes", _node("n1"))
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "c", "image": "v1"}],
                    "terminationGracePeriodSeconds": 0,
                },
            },
        },
    }
    assert (
        _request(server, "POST", "/apis/apps/v1/namespaces/default/deployments", deployment)[0]
        == 201
    )

    def pods() -> list[dict[str, Any]]:
        _, body = _request(server, "GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")
        return [p for p in body["items"] if not p["metadata"].get("deletionTimestamp")]

    _eventually(lambda: len(pods()) == 2)
    first = pods()
    owner = first[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Deployment", "web", True)
    for pod in first:
        _ready(server, pod)
    # A pod deleted by hand is replaced.
    _request(server, "DELETE", f"/api/v1/namespaces/default/pods/{first[0]['metadata']['name']}")
    _eventually(
        lambda: (
            len(pods()) == 2
            and first[0]["metadata"]["name"] not in {p["metadata"]["name"] for p in pods()}
        )
    )
    for pod in pods():
        _ready(server, pod)
    # A new template: new pods first, old ones go as the new ones become ready.
    _request(
        server,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web",
        {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}},
        {"Content-Type": "application/strategic-merge-patch+json"},
    )
    _eventually(lambda: sum(1 for p in pods() if p["spec"]["containers"][0]["image"] == "v2") == 2)
    assert sum(1 for p in pods() if p["spec"]["containers"][0]["image"] == "v1") == 2
    for pod in pods():
        if pod["spec"]["containers"][0]["image"] == "v2":
            _ready(server, pod)
    _eventually(lambda: {p["spec"]["containers"][0]["image"] for p in pods()} == {"v2"})
    out = apiserver.kubectl("rollout", "status", "deployment/web", "--timeout=10s", check=True)
    assert "successfully rolled out" in out.stdout
    _, status = _request(server, "GET", "/apis/apps/v1/namespaces/default/deployments/web")
    assert status["status"]["readyReplicas"] == 2
    assert status["status"]["observedGeneration"] == status["metadata"]["generation"] == 2


def test_a_node_without_heartbeats_becomes_unknown(apiserver: LocalAPIServer) -> None:
    server = apiserver.server
    stale = _node("n1")
    stale["status"]["conditions"][0]["lastHeartbeatTime"] = "2020-01-01T00:00:00Z"
    _request(server, "POST", "/api/v1/nodes", stale)
    fresh = _node("n2")
    fresh["status"]["conditions"][0]["lastHeartbeatTime"] = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()
    )
    _request(server, "POST", "/api/v1/nodes", fresh)

    def ready(name: str) -> str:
        _, node = _request(server, "GET", f"/api/v1/nodes/{name}")
        return str(node["status"]["conditions"][0]["status"])

    _eventually(lambda: ready("n1") == "Unknown")
    assert ready("n2") == "True"
    assert "NotReady" in apiserver.kubectl("get", "node", "n1", check=True).stdout
