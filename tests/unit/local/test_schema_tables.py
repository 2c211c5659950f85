"""CRD schemas and printer columns in the local API server.

Covers: pruning of undeclared fields (kept under x-kubernetes-preserve-unknown-fields and
additionalProperties, root apiVersion/kind/metadata always kept), `default` values at every
level, OpenAPI validation answered as 422 with field paths (required, type, enum, pattern,
minimum), CEL rules (`all`, `exists`, `exists_one`, `size`, `in`, `has`, messages, transition
rules with oldSelf), strict field validation (400 naming the unknown fields); the printer-column
JSONPath subset and the Table shapes of custom and built-in resources.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sfc_k8s.local.apiserver import StatusError, Store
from sfc_k8s.local.apiserver.schema import StructuralSchema
from sfc_k8s.local.apiserver.store import PATCH_MERGE
from sfc_k8s.local.apiserver.tables import age, jsonpath, table

CRD = Path(__file__).parents[2] / "integration" / "apiserver" / "sfc-crd.yaml"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["mode"],
            "properties": {
                "mode": {"type": "string", "enum": ["a", "b"]},
                "count": {"type": "integer", "minimum": 1, "default": 2},
                "limits": {
                    "type": "object",
                    "default": {},
                    "properties": {"max": {"type": "integer", "default": 10}},
                },
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "ports": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"port": {"type": "integer", "default": 80}},
                    },
                },
                "name": {"type": "string", "pattern": "^[a-z]+$", "nullable": True},
                "size": {"x-kubernetes-int-or-string": True},
            },
            "x-kubernetes-validations": [
                {"rule": "self.count <= self.limits.max", "message": "count above max"},
                {"rule": "self.mode == oldSelf.mode", "message": "mode is immutable"},
            ],
        }
    },
}


def _chain(**spec: Any) -> dict[str, Any]:
    base = {"functions": [{"name": "f", "interfaces": ["eth1"]}]}
    return {
        "apiVersion": "sfc-k8s.io/v1alpha1",
        "kind": "ServiceFunctionChain",
        "metadata": {"name": "c"},
        "spec": {**base, **spec},
    }


def test_prune_and_defaults() -> None:
    schema = StructuralSchema(SCHEMA)
    obj = {
        "apiVersion": "x/v1",
        "kind": "X",
        "metadata": {"name": "n"},
        "junk": 1,
        "spec": {
            "mode": "a",
            "extra": True,
            "free": {"any": {"thing": 1}},
            "labels": {"k": "v"},
            "ports": [{"port": 1, "bad": 2}, {}],
        },
    }
    pruned, removed = schema.prune(obj)
    assert sorted(removed) == ["junk", "spec.extra", "spec.ports[0].bad"]
    assert pruned["metadata"] == {"name": "n"} and pruned["spec"]["free"] == {"any": {"thing": 1}}
    defaulted = schema.apply_defaults(pruned)
    assert defaulted["spec"]["count"] == 2 and defaulted["spec"]["limits"] == {"max": 10}
    assert defaulted["spec"]["ports"] == [{"port": 1}, {"port": 80}]
    assert schema.validate(defaulted, None) == []


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ({}, "spec.mode", "FieldValueRequired"),
        ({"mode": "c"}, "spec.mode", "FieldValueNotSupported"),
        ({"mode": "a", "count": "x"}, "spec.count", "FieldValueTypeInvalid"),
        ({"mode": "a", "count": 0}, "spec.count", "FieldValueInvalid"),
        ({"mode": "a", "name": "UP"}, "spec.name", "FieldValueInvalid"),
        ({"mode": "a", "count": 11}, "spec", "FieldValueInvalid"),
    ],
)
def test_validation_causes(spec: dict[str, Any], field: str, reason: str) -> None:
    schema = StructuralSchema(SCHEMA)
    causes = schema.validate(schema.apply_defaults({"spec": spec}), None)
    assert [(c.field, c.reason) for c in causes] == [(field, reason)]


def test_nullable_and_int_or_string_and_transition_rules() -> None:
    schema = StructuralSchema(SCHEMA)
    ok = schema.apply_defaults({"spec": {"mode": "a", "name": None, "size": "10%"}})
    assert schema.validate(ok, None) == []
    assert schema.validate({**ok, "spec": {**ok["spec"], "size": 3}}, None) == []
    changed = {**ok, "spec": {**ok["spec"], "mode": "b"}}
    causes = schema.validate(changed, ok)
    assert [c.message for c in causes] == ['Invalid value: "object": mode is immutable']


@pytest.fixture
def store() -> Store:
    store = Store()
    crds = store.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    store.create(crds, None, yaml.safe_load(CRD.read_text()))
    return store


def test_cel_rules_of_the_chain_crd(store: Store) -> None:
    chains = store.resource("sfc-k8s.io", "v1alpha1", "servicefunctionchains")
    created = store.create(
        chains,
        "default",
        _chain(links=[{"name": "l", "a": {"function": "f"}, "b": {"function": "f"}}]),
    )
    assert created["spec"]["dataplane"] == {"drainTimeoutSeconds": 30}
    bad = _chain(
        functions=[{"name": "f", "interfaces": ["lo"]}, {"name": "f", "interfaces": []}],
        links=[{"name": "l", "a": {"function": "g"}, "b": {"function": "f"}}],
    )
    with pytest.raises(StatusError) as err:
        store.create(chains, "default", {**bad, "metadata": {"name": "d"}})
    assert err.value.code == 422
    assert err.value.details is not None
    causes = {(c["field"], c["message"].split(": ", 2)[-1]) for c in err.value.details["causes"]}
    assert causes == {
        ("spec", "function names must be unique"),
        ("spec", "links must name functions of the chain"),
        ("spec.functions[0].interfaces", "at least one interface, never lo"),
        ("spec.functions[1].interfaces", "at least one interface, never lo"),
    }
    assert 'ServiceFunctionChain.sfc-k8s.io "d" is invalid' in err.value.message


def test_strict_field_validation(store: Store) -> None:
    chains = store.resource("sfc-k8s.io", "v1alpha1", "servicefunctionchains")
    with pytest.raises(StatusError) as err:
        store.create(chains, "default", _chain(typo=1), strict=True)
    assert err.value.code == 400
    assert 'strict decoding error: unknown field "spec.typo"' in err.value.message
    store.create(chains, "default", _chain(typo=1))
    with pytest.raises(StatusError):
        store.patch(chains, "default", "c", PATCH_MERGE, {"spec": {"typo": 2}}, strict=True)


def test_jsonpath_subset() -> None:
    obj = {
        "status": {
            "conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]
        },
        "spec": {"items": [{"n": 1}, {"n": 2}], "a.b": "dotted"},
    }
    assert jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == ["True"]
    assert jsonpath(obj, ".spec.items[*].n") == [1, 2]
    assert jsonpath(obj, ".spec.items[-1].n") == [2]
    assert jsonpath(obj, "{.spec['a.b']}") == ["dotted"]
    assert jsonpath(obj, ".spec.missing.x") == []


def test_age_format() -> None:
    import datetime

    now = datetime.datetime(2026, 1, 2, 12, 0, 0, tzinfo=datetime.UTC)
    assert age("2026-01-02T11:59:15Z", now) == "45s"
    assert age("2026-01-02T11:55:00Z", now) == "5m0s"
    assert age("2026-01-02T10:00:00Z", now) == "120m"
    assert age("2025-12-30T12:00:00Z", now) == "3d"


def test_tables_of_custom_and_builtin_resources(store: Store) -> None:
    chains = store.resource("sfc-k8s.io", "v1alpha1", "servicefunctionchains")
    obj = store.create(chains, "default", _chain())
    obj = store.patch(
        chains,
        "default",
        "c",
        PATCH_MERGE,
        {"status": {"functionCount": 1, "conditions": [{"type": "Ready", "status": "True"}]}},
        subresource="status",
    )
    result = table(chains, [obj], resource_version="1")
    assert [c["name"] for c in result["columnDefinitions"]] == [
        "Name",
        "Functions",
        "Links",
        "Ready",
        "Age",
    ]
    assert result["rows"][0]["cells"][:4] == ["c", 1, None, "True"]
    assert result["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    pods = store.resource("", "v1", "pods")
    pod = store.create(
        pods,
        "default",
        {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
    )
    row = table(pods, [pod], resource_version="1", include_object="None")["rows"][0]
    assert row["cells"][:4] == ["p", "0/1", "Pending", 0] and row["object"] is None
