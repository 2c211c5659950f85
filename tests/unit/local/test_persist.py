"""The API server's store kept in a real SQLite file (persist.py), without HTTP.

Covers: a store reopened on its database has every object equal (uids, resourceVersions,
finalizers, deletionTimestamps, generations, status), the same resourceVersion counter (also
when the last writes' events left the history, as a CRD deletion does) and the same order of
objects; it serves the CRDs' resources again with their schemas; the counter only grows across
reopenings; a watch from a resourceVersion before the reopening replays exactly the events it
would have replayed before, filtered watches included, and one older than the kept history gets
410; a smaller history bound trims the database too; the preloaded CRDs and default namespaces
are not created twice; a second store on the same file is refused while the first has it
open; a write whose transaction fails is not half-applied, in the file or in
memory, and sends no event; a file that is not such a database, or is damaged, is refused with
an error naming it and is left byte for byte as it was.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sfc_k8s.local.apiserver import StatusError, Store
from sfc_k8s.local.apiserver.persist import DatabaseError
from sfc_k8s.local.apiserver.server import preload_crds
from sfc_k8s.local.apiserver.store import PATCH_MERGE, Event, Watcher

GROUP = "test.sfc-k8s.io"
CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"size": {"type": "integer", "maximum": 10}},
                            }
                        },
                    }
                },
            }
        ],
    },
}


def _cm(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


def _deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            },
        },
    }


def _populate(store: Store) -> None:
    """Objects of every kind of state the store keeps."""
    ns = store.resource("", "v1", "namespaces")
    cms = store.resource("", "v1", "configmaps")
    store.create(ns, None, {"metadata": {"name": "team"}})
    store.create(cms, "team", _cm("plain", app="web"))
    store.create(cms, "team", {**_cm("held"), "metadata": {"name": "held", "finalizers": ["x/y"]}})
    store.delete(cms, "team", "held")  # stays, terminating, with its finalizer
    store.patch(cms, "team", "plain", PATCH_MERGE, {"data": {"k": "w"}})
    deployments = store.resource("apps", "v1", "deployments")
    store.create(deployments, "team", _deployment("web"))
    store.patch(deployments, "team", "web", PATCH_MERGE, {"spec": {"replicas": 3}})
    crds = store.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    store.create(crds, None, CRD)
    widgets = store.resource(GROUP, "v1", "widgets")
    owner = store.get(deployments, "team", "web")["metadata"]
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": owner["uid"]}
    store.create(
        widgets,
        "team",
        {"metadata": {"name": "w1", "ownerReferences": [ref]}, "spec": {"size": 3}},
    )


def _state(store: Store) -> dict[tuple[str, ...], Any]:
    return {
        (*key, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]): obj
        for key, obj in store.all_objects()
    }


def _names(events: list[Event]) -> list[tuple[str, str, int]]:
    return [(e.type, e.obj["metadata"]["name"], e.rv) for e in events]


def _drain(watcher: Watcher) -> list[Event | None]:
    items = list(watcher.pending)
    watcher.pending.clear()
    return items


def test_a_reopened_store_has_every_object_and_version(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = Store(path=path)
    _populate(store)
    before, rv = _state(store), store.resource_version
    order = [obj["metadata"]["name"] for obj in store.objects(("", "configmaps"))]
    store.close()

    again = Store(path=path)
    assert _state(again) == before
    assert again.resource_version == rv
    assert [obj["metadata"]["name"] for obj in again.objects(("", "configmaps"))] == order
    held = again.find(("", "configmaps"), "team", "held")
    assert held is not None
    assert held["metadata"]["finalizers"] == ["x/y"] and held["metadata"]["deletionTimestamp"]
    # Indexes are rebuilt: by uid, and the owner -> dependents index the GC walks.
    web = again.find(("apps", "deployments"), "team", "web")
    assert web is not None and again.by_uid(web["metadata"]["uid"]) == web
    assert [o["metadata"]["name"] for _, o in again.dependents(web["metadata"]["uid"])] == ["w1"]
    # The CRD's resource is served again, with its schema.
    widgets = again.resource(GROUP, "v1", "widgets")
    with pytest.raises(StatusError) as invalid:
        again.create(widgets, "team", {"metadata": {"name": "w2"}, "spec": {"size": 11}})
    assert invalid.value.code == 422
    # Removing the last finalizer finishes the deletion, as before the reopening.
    unhold = {"metadata": {"finalizers": None}}
    again.patch(again.resource("", "v1", "configmaps"), "team", "held", PATCH_MERGE, unhold)
    assert again.find(("", "configmaps"), "team", "held") is None
    again.close()


def test_the_counter_only_grows_across_reopenings(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = Store(path=path)
    _populate(store)
    crds = store.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    # Deleting the CRD deletes its objects and drops their history: the newest events are gone.
    store.delete(crds, None, CRD["metadata"]["name"])
    seen = store.resource_version
    store.close()
    for _ in range(3):
        store = Store(path=path)
        assert store.resource_version == seen
        cms = store.resource("", "v1", "configmaps")
        obj = store.create(cms, "default", {"metadata": {"generateName": "c-"}})
        assert int(obj["metadata"]["resourceVersion"]) == seen + 1
        seen = store.resource_version
        store.close()


def test_watches_resume_from_the_same_history_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = Store(path=path, history_limit=4)
    cms = store.resource("", "v1", "configmaps")
    store.create(cms, "default", _cm("a", app="web"))
    start = store.resource_version
    store.patch(cms, "default", "a", PATCH_MERGE, {"metadata": {"labels": {"app": "db"}}})
    store.create(cms, "default", _cm("b", app="web"))
    store.delete(cms, "default", "b")
    everything = store.predicate(cms, None, "", "")
    web_only = store.predicate(cms, None, "app=web", "")
    before = [_names(store.watch(cms, p, str(start))[0]) for p in (everything, web_only)]
    # Filtered: "a" leaving the selector is a DELETED for that watch.
    assert before[1][0][:2] == ("DELETED", "a")
    for _ in range(3):
        store.patch(cms, "default", "a", PATCH_MERGE, {"data": {"n": str(_)}})
    compacted = store.history(cms.key)[0].rv - 1
    with pytest.raises(StatusError):
        store.watch(cms, everything, str(compacted - 1))
    last = store.resource_version - 2
    tail = _names(store.watch(cms, everything, str(last))[0])
    store.close()

    again = Store(path=path, history_limit=4)
    cms = again.resource("", "v1", "configmaps")
    assert _names(again.watch(cms, everything, str(last))[0]) == tail
    with pytest.raises(StatusError) as gone:
        again.watch(cms, everything, str(compacted - 1))
    assert (gone.value.code, gone.value.reason) == (410, "Expired")
    assert _names(again.history(cms.key)) == _names(store.history(cms.key))
    # Watches opened after the reopening get the new writes.
    initial, watcher = again.watch(cms, web_only, str(again.resource_version))
    assert initial == []
    again.create(cms, "default", _cm("c", app="web"))
    assert [(e.type, e.obj["metadata"]["name"]) for e in _drain(watcher) if e] == [("ADDED", "c")]
    again.close()


def test_a_smaller_history_bound_trims_the_database(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = Store(path=path)
    cms = store.resource("", "v1", "configmaps")
    store.create(cms, "default", _cm("a"))
    for n in range(10):
        store.patch(cms, "default", "a", PATCH_MERGE, {"data": {"n": str(n)}})
    store.close()
    Store(path=path, history_limit=3).close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        kept = conn.execute("SELECT count(*) FROM events WHERE plural = 'configmaps'").fetchone()
    assert kept == (3,)
    again = Store(path=path, history_limit=3)
    assert len(again.history(("", "configmaps"))) == 3
    again.close()


def test_preloaded_crds_and_default_namespaces_are_not_created_twice(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = Store(path=path)
    preload_crds(store)
    before, rv = _state(store), store.resource_version
    store.close()
    again = Store(path=path)
    preload_crds(again)  # would be 409 AlreadyExists if it tried
    assert _state(again) == before and again.resource_version == rv
    again.close()


def test_a_failed_transaction_is_not_half_applied(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = Store(path=path)
    _populate(store)
    before, rv = _state(store), store.resource_version
    store.close()
    # The CRD deletion is one write that removes the CRD, then its object: make SQLite refuse
    # the second removal, after the first rows of the transaction were written.
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE DELETE ON objects WHEN OLD.plural = 'widgets'"
            " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    store = Store(path=path)
    widgets = store.resource(GROUP, "v1", "widgets")
    _, watcher = store.watch(widgets, store.predicate(widgets, None, "", ""), None)
    crds = store.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    with pytest.raises(StatusError) as failed:
        store.delete(crds, None, CRD["metadata"]["name"])
    assert failed.value.code == 500
    assert str(path) in failed.value.message
    # Memory went back to the database; the watcher saw no event, only the end of its watch.
    assert _state(store) == before and store.resource_version == rv
    assert _drain(watcher) == [None]
    assert store.resource(GROUP, "v1", "widgets") is not None
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DROP TRIGGER refuse")
    again = Store(path=path)
    assert _state(again) == before and again.resource_version == rv
    again.delete(crds, None, CRD["metadata"]["name"])
    assert again.find(crds.key, None, CRD["metadata"]["name"]) is None
    assert again.resource_version == rv + 2  # the CRD and its object: nothing reused
    again.close()


def test_a_second_store_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    first = Store(path=path)
    with pytest.raises(DatabaseError) as err:
        Store(path=path)
    assert "in use by another process" in str(err.value) and str(path) in str(err.value)
    first.close()
    Store(path=path).close()  # free again once the first is closed


def _refused(path: Path) -> str:
    with pytest.raises(DatabaseError) as err:
        Store(path=path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    return message


def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"not a database at all\n" * 50)
    assert "move the file aside" in _refused(path)
    assert path.read_bytes() == b"not a database at all\n" * 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.db"]


def test_another_programs_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE t (x)")
    content = path.read_bytes()
    assert "not an sfc-k8s API server database" in _refused(path)
    assert path.read_bytes() == content


def test_damaged_databases_are_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = Store(path=path)
    cms = store.resource("", "v1", "configmaps")
    for n in range(200):
        store.create(cms, "default", {"metadata": {"name": f"c{n}"}, "data": {"k": "v" * 300}})
    store.close()
    # An object that is not JSON any more.
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE objects SET body = '{\"metadata\": ' WHERE name = 'c7'")
    assert "unreadable object" in _refused(path)
    # A file cut short (a disk that lost its end).
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _refused(path)
    assert path.read_bytes() == data[: len(data) // 2]
