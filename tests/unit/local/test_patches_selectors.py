"""Patch formats and selectors of the local API server.

Covers: JSON merge patch (nested merge, null deletes, lists replaced); JSON patch (add, remove,
replace, move, copy, test, `-` append, escaped pointers, failures as PatchError); strategic
merge patch as kubectl sends it (containers and env merged by name, `$patch: delete`,
`$setElementOrder`, `$deleteFromPrimitiveList`, `$retainKeys`, unknown lists replaced,
finalizers merged as a set); label selectors (=, ==, !=, in, notin, exists, !exists, several
terms) and field selectors (=, !=, nested paths, missing fields); bad selectors -> 400.
"""

from __future__ import annotations

import pytest

from sfc_k8s.local.apiserver import StatusError
from sfc_k8s.local.apiserver.patches import (
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from sfc_k8s.local.apiserver.selectors import (
    match_label_selector_object,
    parse_field_selector,
    parse_label_selector,
)

POD = {
    "metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x"]},
    "spec": {
        "containers": [
            {"name": "a", "image": "i", "env": [{"name": "E1", "value": "1"}]},
            {"name": "b", "image": "j", "args": ["--one"]},
        ]
    },
}


def test_merge_patch_merges_maps_and_replaces_lists() -> None:
    patched = merge_patch(
        POD,
        {"metadata": {"labels": {"a": None, "b": "2"}}, "spec": {"containers": [{"name": "c"}]}},
    )
    assert patched["metadata"]["labels"] == {"b": "2"}
    assert patched["spec"]["containers"] == [{"name": "c"}]
    assert POD["metadata"]["labels"] == {"a": "1"}, "the input is not modified"


def test_json_patch_operations() -> None:
    doc = {"a": {"b/c": 1, "l": [1, 2]}}
    result = json_patch(
        doc,
        [
            {"op": "add", "path": "/a/l/-", "value": 3},
            {"op": "add", "path": "/a/l/0", "value": 0},
            {"op": "replace", "path": "/a/b~1c", "value": 5},
            {"op": "copy", "from": "/a/b~1c", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/e"},
            {"op": "remove", "path": "/a/l/1"},
            {"op": "test", "path": "/e", "value": 5},
        ],
    )
    assert result == {"a": {"b/c": 5, "l": [0, 2, 3]}, "e": 5}
    assert doc == {"a": {"b/c": 1, "l": [1, 2]}}


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "remove", "path": "/nope"}],
        [{"op": "replace", "path": "/a/x", "value": 1}],
        [{"op": "test", "path": "/a", "value": 2}],
        [{"op": "add", "path": "/l/9", "value": 1}],
        [{"op": "frobnicate", "path": "/a"}],
        {"op": "add"},
    ],
)
def test_json_patch_failures(ops: object) -> None:
    with pytest.raises(PatchError):
        json_patch({"a": 1, "l": []}, ops)


def test_strategic_merge_patch_merges_containers_and_env_by_name() -> None:
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [
                {"name": "a", "env": [{"name": "E2", "value": "2"}]},
                {"name": "b", "args": ["--two"]},
            ],
        }
    }
    patched = strategic_merge_patch(POD, patch)
    first, second = patched["spec"]["containers"]
    assert first["name"] == "b" and first["args"] == ["--two"], "args replaced, order applied"
    assert second["image"] == "i"
    assert second["env"] == [{"name": "E1", "value": "1"}, {"name": "E2", "value": "2"}]


def test_strategic_merge_patch_directives() -> None:
    patched = strategic_merge_patch(
        POD,
        {
            "metadata": {"finalizers": ["y"], "$deleteFromPrimitiveList/finalizers": ["x"]},
            "spec": {"containers": [{"name": "b", "$patch": "delete"}]},
        },
    )
    assert patched["metadata"]["finalizers"] == ["y"]
    assert [c["name"] for c in patched["spec"]["containers"]] == ["a"]
    retained = strategic_merge_patch({"x": 1, "y": 2}, {"$retainKeys": ["y", "z"], "z": 3})
    assert retained == {"y": 2, "z": 3}
    replaced = strategic_merge_patch(POD, {"metadata": {"$patch": "replace", "name": "q"}})
    assert replaced["metadata"] == {"name": "q"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", True),
        ("app==web", True),
        ("app!=web", False),
        ("app!=db", True),
        ("tier in (front, back)", True),
        ("tier notin (front)", False),
        ("tier", True),
        ("!tier", False),
        ("!missing", True),
        ("missing", False),
        ("missing!=x", True),
        ("app=web,tier in (front),!missing", True),
        ("app=web,tier=back", False),
        ("", True),
    ],
)
def test_label_selectors(selector: str, expected: bool) -> None:
    assert parse_label_selector(selector)({"app": "web", "tier": "front"}) is expected


def test_field_selectors() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running"},
    }
    assert parse_field_selector("metadata.name=p,spec.nodeName==n1")(pod)
    assert parse_field_selector("status.phase!=Pending")(pod)
    assert not parse_field_selector("metadata.namespace=other")(pod)
    assert parse_field_selector("spec.missing=")(pod), "a missing field is the empty string"


def test_bad_selectors_are_bad_requests() -> None:
    with pytest.raises(StatusError) as err:
        parse_label_selector("a in b")
    assert err.value.code == 400
    with pytest.raises(StatusError):
        parse_field_selector("metadata.name")


def test_structured_label_selectors() -> None:
    labels = {"app": "fw", "tier": "x"}
    assert match_label_selector_object({"matchLabels": {"app": "fw"}}, labels)
    assert match_label_selector_object(
        {
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["x", "y"]},
                {"key": "gone", "operator": "DoesNotExist"},
            ]
        },
        labels,
    )
    assert not match_label_selector_object(
        {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["fw"]}]}, labels
    )
