"""Store semantics of the local API server, without HTTP.

Covers: resourceVersion increments on every write and not on no-op writes; uid,
creationTimestamp and generation (bumped on spec changes only); generateName; 409 on duplicate
names and stale resourceVersions; 404 for unknown namespaces; watch from a resourceVersion
replays exactly the later events; 410 Expired once the history is compacted; filtered watches
see objects entering/leaving their selector as ADDED/DELETED; finalizers hold a deleted object
until they are removed and none can be added meanwhile; status subresource writes touch only
the status; pods are deleted at once unless a Ready node holds them; built-in validation; the
versions of a CRD share one storage; invalid CRDs are 422.
"""

from __future__ import annotations

from typing import Any

import pytest

from sfc_k8s.local.apiserver import StatusError, Store
from sfc_k8s.local.apiserver.store import PATCH_JSON, PATCH_MERGE, Watcher


def _cm(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"},
    }


def _drain(watcher: Watcher) -> list[tuple[str, str]]:
    events = []
    while watcher.pending:
        event = watcher.pending.popleft()
        assert event is not None
        events.append((event.type, event.obj["metadata"]["name"]))
    return events


@pytest.fixture
def store() -> Store:
    return Store()


def test_create_sets_identity_and_versions(store: Store) -> None:
    cms = store.resource("", "v1", "configmaps")
    before = store.resource_version
    obj = store.create(cms, "default", _cm("a"))
    md = obj["metadata"]
    assert md["uid"] and md["creationTimestamp"].endswith("Z")
    assert int(md["resourceVersion"]) == before + 1 == store.resource_version
    assert md["generation"] == 1 and md["namespace"] == "default"


def test_generate_name_gives_a_unique_name(store: Store) -> None:
    cms = store.resource("", "v1", "configmaps")
    names = {
        store.create(cms, "default", {"metadata": {"generateName": "x-"}})["metadata"]["name"]
        for _ in range(20)
    }
    assert len(names) == 20 and all(n.startswith("x-") and len(n) == 7 for n in names)


def test_duplicate_and_stale_writes_conflict(store: Store) -> None:
    cms = store.resource("", "v1", "configmaps")
    obj = store.create(cms, "default", _cm("a"))
    with pytest.raises(StatusError) as exists:
        store.create(cms, "default", _cm("a"))
    assert (exists.value.code, exists.value.reason) == (409, "AlreadyExists")
    store.patch(cms, "default", "a", PATCH_MERGE, {"data": {"k": "w"}})
    with pytest.raises(StatusError) as stale:
        store.replace(cms, "default", "a", obj)
    assert (stale.value.code, stale.value.reason) == (409, "Conflict")


def test_unknown_namespace_is_not_found(store: Store) -> None:
    cms = store.resource("", "v1", "configmaps")
    with pytest.raises(StatusError) as err:
        store.create(cms, "nope", _cm("a"))
    assert err.value.code == 404 and 'namespaces "nope" not found' in err.value.message


def test_no_op_patch_keeps_the_resource_version(store: Store) -> None:
    cms = store.resource("", "v1", "configmaps")
    obj = store.create(cms, "default", _cm("a"))
    again = store.patch(cms, "default", "a", PATCH_MERGE, {"data": {"k": "v"}})
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_generation_moves_with_spec_not_status_or_metadata(store: Store) -> None:
    deploys = store.resource("apps", "v1", "deployments")
    body = {
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }
    store.create(deploys, "default", body)
    labelled = store.patch(
        deploys, "default", "d", PATCH_MERGE, {"metadata": {"labels": {"a": "b"}}}
    )
    assert labelled["metadata"]["generation"] == 1
    status = store.patch(
        deploys, "default", "d", PATCH_MERGE, {"status": {"replicas": 3}}, subresource="status"
    )
    assert status["metadata"]["generation"] == 1 and status["status"] == {"replicas": 3}
    scaled = store.patch(
        deploys,
        "default",
        "d",
        PATCH_JSON,
        [{"op": "replace", "path": "/spec/replicas", "value": 4}],
    )
    assert scaled["metadata"]["generation"] == 2
    # A main-resource write cannot change the status of a kind with a status subresource.
    ignored = store.patch(deploys, "default", "d", PATCH_MERGE, {"status": {"replicas": 9}})
    assert ignored["status"] == {"replicas": 3}


def test_watch_resumes_from_a_resource_version(store: Store) -> None:
    cms = store.resource("", "v1", "configmaps")
    store.create(cms, "default", _cm("a"))
    mark = store.resource_version
    store.create(cms, "default", _cm("b"))
    store.patch(cms, "default", "a", PATCH_MERGE, {"data": {"k": "2"}})
    store.delete(cms, "default", "b")
    pred = store.predicate(cms, "default", "", "")
    initial, watcher = store.watch(cms, pred, str(mark))
    assert [(e.type, e.obj["metadata"]["name"]) for e in initial] == [
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]
    assert [e.rv for e in initial] == sorted(e.rv for e in initial)
    store.create(cms, "default", _cm("c"))
    assert _drain(watcher) == [("ADDED", "c")]
    store.unwatch(watcher)
    store.create(cms, "default", _cm("d"))
    assert _drain(watcher) == []


def test_watch_without_version_starts_with_the_current_state(store: Store) -> None:
    cms = store.resource("", "v1", "configmaps")
    store.create(cms, "default", _cm("a"))
    store.create(cms, "kube-system", _cm("b"))
    initial, watcher = store.watch(cms, store.predicate(cms, None, "", ""), None)
    assert sorted(e.obj["metadata"]["name"] for e in initial) == ["a", "b"]
    store.unwatch(watcher)


def test_watch_from_a_compacted_version_is_gone() -> None:
    store = Store(history_limit=3)
    cms = store.resource("", "v1", "configmaps")
    store.create(cms, "default", _cm("a"))
    old = store.resource_version
    for n in range(5):
        store.patch(cms, "default", "a", PATCH_MERGE, {"data": {"n": str(n)}})
    with pytest.raises(StatusError) as err:
        store.watch(cms, store.predicate(cms, None, "", ""), str(old))
    assert (err.value.code, err.value.reason) == (410, "Expired")
    initial, watcher = store.watch(
        cms, store.predicate(cms, None, "", ""), str(store.resource_version - 2)
    )
    assert len(initial) == 2
    store.unwatch(watcher)


def test_filtered_watch_sees_objects_enter_and_leave(store: Store) -> None:
    cms = store.resource("", "v1", "configmaps")
    pred = store.predicate(cms, "default", "app=web", "")
    _, watcher = store.watch(cms, pred, None)
    store.create(cms, "default", _cm("a", app="db"))
    store.patch(cms, "default", "a", PATCH_MERGE, {"metadata": {"labels": {"app": "web"}}})
    store.patch(cms, "default", "a", PATCH_MERGE, {"data": {"x": "1"}})
    store.patch(cms, "default", "a", PATCH_MERGE, {"metadata": {"labels": {"app": "db"}}})
    store.create(cms, "kube-system", _cm("b", app="web"))
    assert _drain(watcher) == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    store.unwatch(watcher)


def test_finalizers_hold_a_deleted_object(store: Store) -> None:
    cms = store.resource("", "v1", "configmaps")
    body = _cm("a")
    body["metadata"]["finalizers"] = ["example.com/hold", "example.com/other"]
    store.create(cms, "default", body)
    _, watcher = store.watch(cms, store.predicate(cms, None, "", ""), None)
    held = store.delete(cms, "default", "a")
    assert held["metadata"]["deletionTimestamp"]
    assert store.get(cms, "default", "a")["metadata"]["deletionTimestamp"]
    # A deleting object cannot be undeleted by a client write.
    kept = store.patch(cms, "default", "a", PATCH_MERGE, {"metadata": {"deletionTimestamp": None}})
    assert kept["metadata"]["deletionTimestamp"]
    with pytest.raises(StatusError) as forbidden:
        store.patch(cms, "default", "a", PATCH_MERGE, {"metadata": {"finalizers": ["new/one"]}})
    assert forbidden.value.code == 422, "no finalizer can be added while deleting"
    store.patch(
        cms, "default", "a", PATCH_MERGE, {"metadata": {"finalizers": ["example.com/hold"]}}
    )
    assert store.find(cms.key, "default", "a") is not None
    store.patch(cms, "default", "a", PATCH_MERGE, {"metadata": {"finalizers": None}})
    assert store.find(cms.key, "default", "a") is None
    assert [t for t, _ in _drain(watcher)] == ["MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]
    store.unwatch(watcher)


def test_unscheduled_pods_are_deleted_at_once(store: Store) -> None:
    pods = store.resource("", "v1", "pods")
    store.create(
        pods,
        "default",
        {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
    )
    store.delete(pods, "default", "p")
    assert store.find(pods.key, "default", "p") is None


def test_pods_on_a_ready_node_wait_for_the_node(store: Store) -> None:
    nodes, pods = store.resource("", "v1", "nodes"), store.resource("", "v1", "pods")
    store.create(
        nodes,
        None,
        {
            "metadata": {"name": "n1"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        },
    )
    store.create(
        pods,
        "default",
        {
            "metadata": {"name": "p"},
            "spec": {
                "nodeName": "n1",
                "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "c", "image": "i"}],
            },
        },
    )
    deleting = store.delete(pods, "default", "p")
    assert deleting["metadata"]["deletionGracePeriodSeconds"] == 5
    assert store.find(pods.key, "default", "p") is not None
    store.delete(pods, "default", "p", {"gracePeriodSeconds": 0})
    assert store.find(pods.key, "default", "p") is None


def test_invalid_pod_is_rejected_with_causes(store: Store) -> None:
    pods = store.resource("", "v1", "pods")
    with pytest.raises(StatusError) as err:
        store.create(
            pods, "default", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}
        )
    assert err.value.code == 422
    assert err.value.details is not None
    assert err.value.details["causes"][0]["field"] == "spec.containers[0].image"


def test_crd_versions_share_one_storage(store: Store) -> None:
    crds = store.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    version = {
        "served": True,
        "schema": {
            "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        },
    }
    store.create(
        crds,
        None,
        {
            "metadata": {"name": "things.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "things", "kind": "Thing"},
                "versions": [
                    {"name": "v1", "storage": True, **version},
                    {"name": "v2", "storage": False, **version},
                ],
            },
        },
    )
    v1, v2 = (
        store.resource("example.com", "v1", "things"),
        store.resource("example.com", "v2", "things"),
    )
    store.create(
        v2,
        "default",
        {
            "apiVersion": "example.com/v2",
            "kind": "Thing",
            "metadata": {"name": "t"},
            "spec": {"x": 1},
        },
    )
    assert store.get(v1, "default", "t")["apiVersion"] == "example.com/v1"
    assert store.get(v2, "default", "t")["apiVersion"] == "example.com/v2"
    store.delete(crds, None, "things.example.com")
    with pytest.raises(StatusError) as err:
        store.resource("example.com", "v1", "things")
    assert err.value.code == 404


def test_invalid_crd_is_rejected(store: Store) -> None:
    crds = store.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    with pytest.raises(StatusError) as err:
        store.create(
            crds,
            None,
            {
                "metadata": {"name": "wrong.example.com"},
                "spec": {
                    "group": "example.com",
                    "scope": "Namespaced",
                    "names": {"plural": "things", "kind": "Thing"},
                    "versions": [
                        {
                            "name": "v1",
                            "served": True,
                            "storage": True,
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "properties": {"a": {"type": 5}},
                                }
                            },
                        }
                    ],
                },
            },
        )
    assert err.value.code == 422
    assert err.value.details is not None
    fields = [c["field"] for c in err.value.details["causes"]]
    assert fields == ["metadata.name", "spec.versions[v1].schema.openAPIV3Schema"]
