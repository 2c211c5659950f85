"""Kopf (the operator framework the controller and agent use) against the local API server.

Covers: a Kopf operator run with KopfRunner sees every creation, update and deletion of many
custom objects exactly once (handlers with Kopf's finalizer), while its watch streams are cut
every second (`timeoutSeconds=1`) and resumed; the raw watch events it receives are exactly the
server's change history for that resource, with no loss and no duplicate; Kopf's own writes
(finalizers, annotations, core/v1 Events) are accepted; Kopf peering through the preloaded
KopfPeering CRD (the operator writes its presence into the peering object's status).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

import kopf
import pytest
from kopf.testing import KopfRunner

from sfc_k8s.local.apiserver.store import PATCH_MERGE, Store
from tests.fixtures.apiserver import LocalAPIServer

GROUP, VERSION, PLURAL = "test.sfc-k8s.io", "v1", "widgets"
COUNT = 20

WIDGET_CRD = f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {PLURAL}.{GROUP}}}
spec:
  group: {GROUP}
  scope: Namespaced
  names: {{plural: {PLURAL}, singular: widget, kind: Widget}}
  versions:
    - name: {VERSION}
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


def _eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture
def kopf_env(apiserver: LocalAPIServer, monkeypatch: pytest.MonkeyPatch) -> LocalAPIServer:
    apiserver.kubectl("apply", "-f", "-", input=WIDGET_CRD, check=True)
    apiserver.kubectl(
        "create",
        "-f",
        "-",
        check=True,
        input="apiVersion: v1\nkind: Namespace\nmetadata: {name: kopf-test}\n",
    )
    monkeypatch.setenv("KUBECONFIG", str(apiserver.kubeconfig))
    return apiserver


def _registry() -> kopf.OperatorRegistry:
    """A registry of its own per test, with the kubeconfig login Kopf uses by default."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    return registry


def _settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 1  # every watch ends after 1 s and is resumed
    settings.watching.reconnect_backoff = 0.1
    return settings


def test_kopf_sees_every_change_exactly_once(kopf_env: LocalAPIServer) -> None:
    server = kopf_env.server
    store: Store = server.store
    registry = _registry()
    lock = threading.Lock()
    creates: collections.Counter[str] = collections.Counter()
    updates: dict[str, list[int]] = collections.defaultdict(list)
    deletes: collections.Counter[str] = collections.Counter()
    raw: list[tuple[str, str, str]] = []

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    def created(name: str, body: Any, **_: Any) -> None:
        with lock:
            creates[name] += 1
        kopf.info(body, reason="Seen", message=f"created {name}")

    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec.size", registry=registry)
    def updated(name: str, new: int, **_: Any) -> None:
        with lock:
            updates[name].append(new)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def deleted(name: str, **_: Any) -> None:
        with lock:
            deletes[name] += 1

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def event(type: str | None, body: Any, **_: Any) -> None:
        if type is not None:  # None marks objects re-listed when a watch is resumed
            with lock:
                raw.append((type, body["metadata"]["name"], body["metadata"]["resourceVersion"]))

    rtype = store.resource(GROUP, VERSION, PLURAL)
    names = [f"w{i:02d}" for i in range(COUNT)]
    first_rv = store.resource_version
    args = ["run", "--standalone", "--namespace", "kopf-test"]
    with KopfRunner(args, registry=registry, settings=_settings(), timeout=60) as runner:
        # Changes made once Kopf watches must all reach it as watch events.
        _eventually(lambda: server.call(store.watcher_count, rtype.key) > 0)
        for name in names:
            server.call(
                store.create, rtype, "kopf-test", {"metadata": {"name": name}, "spec": {"size": 0}}
            )
        _eventually(lambda: len(creates) == COUNT)
        for step in (1, 2):
            for name in names:
                server.call(
                    store.patch, rtype, "kopf-test", name, PATCH_MERGE, {"spec": {"size": step}}
                )
            _eventually(lambda s=step: all(updates[n][-1:] == [s] for n in names))
        for name in names:
            server.call(store.delete, rtype, "kopf-test", name)
        _eventually(lambda: len(deletes) == COUNT and not server.call(store.objects, rtype.key))

        # One more watch resumption with nothing left to see: waited for as an event (a watch
        # the server did not have before), not as a guessed time.
        def watches() -> frozenset[object]:
            return frozenset(store._watchers.get(rtype.key, ()))  # the store's own record

        before = server.call(watches)
        _eventually(lambda: bool(server.call(watches) - before))
    assert runner.exception is None
    assert runner.exit_code == 0
    assert creates == dict.fromkeys(names, 1)
    assert deletes == dict.fromkeys(names, 1)
    assert all(updates[n] == [1, 2] for n in names), dict(updates)
    assert len(raw) == len(set(raw)), "a watch event was delivered twice"
    history = [
        (e.type, e.obj["metadata"]["name"], e.obj["metadata"]["resourceVersion"])
        for e in server.call(store.history, rtype.key)
        if e.rv > first_rv
    ]
    # Kopf handles each object in its own worker, so only the per-object order is defined.
    assert sorted(raw) == sorted(history), "Kopf's events differ from the server's history"
    for name in names:
        mine = [e for e in raw if e[1] == name]
        assert mine == [e for e in history if e[1] == name], f"events of {name} out of order"
    assert "kopf.zalando.org/KopfFinalizerMarker" not in str(server.call(store.objects, rtype.key))
    posted = server.call(store.objects, ("", "events"))
    assert sum(1 for e in posted if e.get("reason") == "Seen") == COUNT, "Kopf's Events"


def test_kopf_peering_uses_the_preloaded_crd(kopf_env: LocalAPIServer) -> None:
    kopf_env.kubectl(
        "create",
        "-f",
        "-",
        check=True,
        input="apiVersion: kopf.dev/v1\nkind: KopfPeering\n"
        "metadata: {name: default, namespace: kopf-test}\n",
    )
    registry = _registry()

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    def created(**_: Any) -> None:
        pass

    store = kopf_env.server.store
    peering_key = ("kopf.dev", "kopfpeerings")

    def peers() -> dict[str, Any]:
        obj = kopf_env.server.call(store.find, peering_key, "kopf-test", "default")
        return dict((obj or {}).get("status") or {})

    args = ["run", "--namespace", "kopf-test", "--peering", "default"]
    with KopfRunner(args, registry=registry, settings=_settings(), timeout=60) as runner:
        _eventually(lambda: len(peers()) == 1, timeout=20)
    assert runner.exit_code == 0
