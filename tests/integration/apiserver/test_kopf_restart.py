"""Kopf (as the controller and agent run it) across a crash of the API server process.

Covers: an operator run with KopfRunner handles custom objects created before the API server
is killed (SIGKILL) and restarted on its database, and objects created, updated and deleted
after it, each change exactly once: Kopf's state kept in the objects (its finalizer and
last-handled annotations) survives, so nothing is handled again, and its watches continue
(resumed from their resourceVersion, or re-listed) with no duplicate event.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

import kopf
import pytest
import yaml
from kopf.testing import KopfRunner

from tests.integration.apiserver.conftest import APIServerProcess
from tests.integration.apiserver.test_restart import GROUP, WIDGET_CRD

NAMESPACE = "kopf-test"
FIRST = [f"w{i:02d}" for i in range(5)]
SECOND = [f"w{i:02d}" for i in range(5, 10)]


def _eventually(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def _widgets(names: list[str], size: int) -> str:
    return yaml.safe_dump_all(
        {
            "apiVersion": f"{GROUP}/v1",
            "kind": "Widget",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"size": size},
        }
        for name in names
    )


def _handled(server: APIServerProcess) -> set[str]:
    """Widgets whose handling Kopf recorded in the object (its last-handled annotation)."""
    listed = server.get(f"/apis/{GROUP}/v1/namespaces/{NAMESPACE}/widgets")
    return {
        o["metadata"]["name"]
        for o in listed["items"]
        if "kopf.zalando.org/last-handled-configuration" in (o["metadata"].get("annotations") or {})
    }


@pytest.fixture
def kopf_server(
    apiserver_process: APIServerProcess, monkeypatch: pytest.MonkeyPatch
) -> APIServerProcess:
    apiserver_process.kubectl("apply", "-f", "-", input=WIDGET_CRD, check=True)
    apiserver_process.kubectl("create", "namespace", NAMESPACE, check=True)
    monkeypatch.setenv("KUBECONFIG", str(apiserver_process.kubeconfig))
    return apiserver_process


def test_kopf_handles_each_change_once_across_an_api_server_crash(
    kopf_server: APIServerProcess,
) -> None:
    server = kopf_server
    registry = kopf.OperatorRegistry()
    lock = threading.Lock()
    creates: collections.Counter[str] = collections.Counter()
    updates: dict[str, list[int]] = collections.defaultdict(list)
    deletes: collections.Counter[str] = collections.Counter()
    raw: list[tuple[str, str, str]] = []

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.create(GROUP, "v1", "widgets", registry=registry)
    def created(name: str, **_: Any) -> None:
        with lock:
            creates[name] += 1

    @kopf.on.update(GROUP, "v1", "widgets", field="spec.size", registry=registry)
    def updated(name: str, new: int, **_: Any) -> None:
        with lock:
            updates[name].append(new)

    @kopf.on.delete(GROUP, "v1", "widgets", registry=registry)
    def deleted(name: str, **_: Any) -> None:
        with lock:
            deletes[name] += 1

    @kopf.on.event(GROUP, "v1", "widgets", registry=registry)
    def event(type: str | None, body: Any, **_: Any) -> None:
        if type is not None:  # None marks objects re-listed when a watch starts again
            with lock:
                raw.append((type, body["metadata"]["name"], body["metadata"]["resourceVersion"]))

    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 1  # watches end every second and are resumed
    settings.watching.reconnect_backoff = 0.1
    settings.networking.error_backoffs = [0.2] * 100  # retry through the API server's downtime
    args = ["run", "--standalone", "--namespace", NAMESPACE]
    with KopfRunner(args, registry=registry, settings=settings, timeout=120) as runner:
        server.kubectl("apply", "-f", "-", input=_widgets(FIRST, 0), check=True)
        _eventually(lambda: _handled(server) == set(FIRST))

        server.kill()
        server.start()

        server.kubectl("apply", "-f", "-", input=_widgets(SECOND, 0), check=True)
        _eventually(lambda: _handled(server) == set(FIRST + SECOND))
        server.kubectl("apply", "-f", "-", input=_widgets(FIRST + SECOND, 1), check=True)
        _eventually(lambda: all(updates[n] == [1] for n in FIRST + SECOND))
        server.kubectl("delete", "widgets", "--all", "-n", NAMESPACE, "--wait=false", check=True)
        _eventually(lambda: not server.get(f"/apis/{GROUP}/v1/widgets")["items"])
    assert runner.exception is None
    assert runner.exit_code == 0
    assert creates == dict.fromkeys(FIRST + SECOND, 1)
    assert deletes == dict.fromkeys(FIRST + SECOND, 1)
    assert all(updates[n] == [1] for n in FIRST + SECOND), dict(updates)
    assert len(raw) == len(set(raw)), "a watch event was delivered twice"
