"""The API server process killed (SIGKILL) and restarted on its SQLite database, seen by kubectl.

Covers: namespaces, a Deployment (and the pods its controller made), a CRD and a custom object,
an annotation, a ConfigMap held by a finalizer while deleted: after the restart `kubectl get`
shows every object byte for byte (uids, resourceVersions, deletionTimestamps, finalizers), the
list resourceVersion is unchanged, the Deployment controller made no new pod, and the next write
gets a higher resourceVersion; a raw watch (`kubectl get --raw`) from a resourceVersion taken
before the crash replays exactly the same events after it; once more changes than the kept
history (`--history`) happened, the same watch gets an ERROR event with a 410 Expired Status,
before and after another restart, while a recent resourceVersion still resumes; a file that is
not a database stops the process with one line on stderr and status 1, the file untouched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.integration.apiserver.conftest import APIServerProcess

GROUP = "test.sfc-k8s.io"
WIDGET_CRD = f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: widgets.{GROUP}}}
spec:
  group: {GROUP}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget}}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {{status: {{}}}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {{type: object, properties: {{size: {{type: integer}}}}}}
            status: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
"""
WIDGET = f"""
apiVersion: {GROUP}/v1
kind: Widget
metadata: {{name: w1, namespace: team}}
spec: {{size: 3}}
"""
DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: team}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: busybox, command: [sleep, "3600"]}]}
"""
KINDS = "namespaces,deployments,pods,configmaps,customresourcedefinitions,widgets"


def _objects(server: APIServerProcess) -> dict[tuple[str, str, str], Any]:
    listed = json.loads(server.kubectl("get", KINDS, "-A", "-o", "json", check=True).stdout)
    return {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
        for o in listed["items"]
    }


def _settled(server: APIServerProcess, timeout: float = 20.0) -> dict[tuple[str, str, str], Any]:
    """The objects once the in-process controllers stopped changing them."""
    deadline = time.monotonic() + timeout
    previous = _objects(server)
    while True:
        time.sleep(0.5)
        current = _objects(server)
        if current == previous:
            return current
        assert time.monotonic() < deadline, "the controllers kept writing"
        previous = current


def _list_rv(server: APIServerProcess) -> int:
    return int(server.get("/api/v1/namespaces")["metadata"]["resourceVersion"])


def _watch(server: APIServerProcess, since: str) -> list[tuple[str, str, str]]:
    """A raw watch of team's ConfigMaps from `since`, through kubectl, ended by the server."""
    path = f"/api/v1/namespaces/team/configmaps?watch=1&resourceVersion={since}&timeoutSeconds=1"
    out = server.kubectl("get", "--raw", path, check=True).stdout
    events = []
    for line in out.splitlines():
        event = json.loads(line)
        obj = event["object"]
        if event["type"] == "ERROR":
            events.append(("ERROR", str(obj["code"]), obj["reason"]))
        else:
            md = obj["metadata"]
            events.append((event["type"], md["name"], md["resourceVersion"]))
    return events


def _patch(server: APIServerProcess, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{server.url}{path}",
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={"Content-Type": "application/merge-patch+json"},
    )
    with urllib.request.urlopen(request, timeout=30):
        pass


def test_every_object_and_version_survives_a_sigkill(apiserver_process: APIServerProcess) -> None:
    server = apiserver_process
    server.kubectl("create", "namespace", "team", check=True)
    server.kubectl("apply", "-f", "-", input=DEPLOYMENT, check=True)
    server.kubectl("apply", "-f", "-", input=WIDGET_CRD, check=True)
    server.kubectl(
        "wait", "--for=condition=Established", f"crd/widgets.{GROUP}", "--timeout=30s", check=True
    )
    server.kubectl("apply", "-f", "-", input=WIDGET, check=True)
    server.kubectl("annotate", "widget", "w1", "-n", "team", "note=kept", check=True)
    server.kubectl("create", "configmap", "held", "-n", "team", "--from-literal=k=v", check=True)
    hold = '{"metadata": {"finalizers": ["test.sfc-k8s.io/hold"]}}'
    server.kubectl("patch", "configmap", "held", "-n", "team", "-p", hold, check=True)
    server.kubectl("delete", "configmap", "held", "-n", "team", "--wait=false", check=True)
    before = _settled(server)
    rv = _list_rv(server)
    assert len([k for k in before if k[0] == "Pod"]) == 2
    held = before[("ConfigMap", "team", "held")]["metadata"]
    assert held["deletionTimestamp"] and held["finalizers"] == ["test.sfc-k8s.io/hold"]

    server.kill()
    server.start()

    assert _objects(server) == before
    assert _list_rv(server) == rv
    assert _settled(server) == before, "the controllers changed objects after the restart"
    server.kubectl("label", "namespace", "team", "after=restart", check=True)
    team = server.get("/api/v1/namespaces/team")
    assert int(team["metadata"]["resourceVersion"]) == rv + 1
    # The restored CRD is served: kubectl discovers and reads the custom object by its kind.
    size = server.kubectl("get", "widget", "w1", "-n", "team", "-o", "jsonpath={.spec.size}")
    assert size.stdout == "3"


def test_watches_resume_across_a_restart_until_history_ends(
    apiserver_process: APIServerProcess,
) -> None:
    server = apiserver_process
    server.kubectl("create", "namespace", "team", check=True)
    start = server.get("/api/v1/namespaces/team/configmaps")["metadata"]["resourceVersion"]
    server.kubectl("create", "configmap", "a", "-n", "team", check=True)
    server.kubectl("create", "configmap", "b", "-n", "team", check=True)
    server.kubectl("label", "configmap", "a", "-n", "team", "x=1", check=True)
    server.kubectl("delete", "configmap", "b", "-n", "team", check=True)
    before = _watch(server, start)
    assert [e[:2] for e in before] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]

    server.kill()
    server.start()
    assert _watch(server, start) == before

    # More changes than the history keeps (50 per resource here): `start` is now too old.
    for n in range(server.history + 5):
        _patch(server, "/api/v1/namespaces/team/configmaps/a", {"data": {"n": str(n)}})
    recent = str(_list_rv(server) - 3)
    expired = [("ERROR", "410", "Expired")]
    assert _watch(server, start) == expired
    tail = _watch(server, recent)
    assert [e[:2] for e in tail] == [("MODIFIED", "a")] * 3

    server.kill()
    server.start()
    assert _watch(server, start) == expired
    assert _watch(server, recent) == tail


def test_an_unusable_database_is_one_line_and_exit_status_1(tmp_path: Path) -> None:
    database = tmp_path / "store.db"
    database.write_bytes(b"\x00garbage, not SQLite\n" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "sfc_k8s.local.apiserver", "--database", str(database)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(database) in lines[0] and "move the file aside" in lines[0]
    assert database.read_bytes() == b"\x00garbage, not SQLite\n" * 100
