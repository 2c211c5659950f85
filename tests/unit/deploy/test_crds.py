"""The CRDs in deploy/crds/ are valid, structural, and admit exactly what the controller accepts.

Covers: both CRDs validate against the apiextensions.k8s.io/v1 CustomResourceDefinition JSON
schema shipped by kubernetes-validate; names, short names, category, status subresource and
printer columns; the schemas are structural (every node typed, no unknown-field escape); every
CEL rule compiles; valid chains are admitted, and each statically detectable mistake (duplicate
names, links to missing functions or interfaces, self-links, an interface on two links, empty
selectors, bad selector operators) is refused by the schema or CEL and by parse_chain alike; the
controller's own output (CrossConnections, chain status) fits the schemas.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import celpy
import kubernetes_validate
import pytest

from sfc_k8s.api import (
    ChainInvalid,
    LinkProgramming,
    compute_chain_status,
    compute_cross_connections,
    invalid_chain_status,
    parse_chain,
)
from tests.fixtures.chains import pod, web_chain
from tests.unit.deploy.schemas import (
    admit,
    all_rules,
    load_crd,
    schema_errors,
    version_schema,
)

SFC = load_crd("servicefunctionchains.yaml")
XC = load_crd("crossconnections.yaml")
K8S_VERSION = "1.32.0"  # the kubectl this project installs


@pytest.mark.parametrize("crd", [SFC, XC], ids=["sfc", "xc"])
def test_crd_is_a_valid_apiextensions_v1_object(crd: dict[str, Any]) -> None:
    kubernetes_validate.validate(crd, K8S_VERSION, strict=True)


def test_names_and_columns() -> None:
    assert SFC["metadata"]["name"] == "servicefunctionchains.sfc-k8s.io"
    assert SFC["spec"]["names"]["shortNames"] == ["sfc"]
    assert XC["spec"]["names"]["shortNames"] == ["xc"]
    for crd in (SFC, XC):
        assert crd["spec"]["group"] == "sfc-k8s.io"
        assert crd["spec"]["scope"] == "Namespaced"
        assert crd["spec"]["names"]["categories"] == ["sfc-k8s"]
        (version,) = crd["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}

    def default_columns(crd: dict[str, Any]) -> list[str]:
        cols = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        return [c["name"] for c in cols if not c.get("priority")]

    assert default_columns(SFC) == ["Functions", "Links", "Ready", "Age"]
    assert default_columns(XC) == ["Chain", "Link", "A", "B", "Age"]


def _nodes(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for key, sub in (schema.get("properties") or {}).items():
        found += _nodes(sub, f"{path}.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found += _nodes(schema[key], f"{path}[{key}]")
    return found


@pytest.mark.parametrize("crd", [SFC, XC], ids=["sfc", "xc"])
def test_schemas_are_structural(crd: dict[str, Any]) -> None:
    for path, node in _nodes(version_schema(crd)):
        assert "type" in node, f"{path} has no type"
        assert not node.get("x-kubernetes-preserve-unknown-fields"), path
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", ())), path


@pytest.mark.parametrize(("crd", "has_rules"), [(SFC, True), (XC, False)], ids=["sfc", "xc"])
def test_every_cel_rule_compiles(crd: dict[str, Any], has_rules: bool) -> None:
    env = celpy.Environment()
    rules = list(all_rules(version_schema(crd)))
    assert bool(rules) == has_rules, rules  # the chain's schema has rules: the walk finds them
    for rule in rules:
        assert env.compile(rule) is not None, rule


def test_valid_chains_are_admitted() -> None:
    assert admit(SFC, web_chain()) == []
    assert admit(SFC, web_chain(dataplane={"drainTimeoutSeconds": 30})) == []
    body = web_chain()
    body["spec"]["functions"][0]["selector"] = {
        "matchExpressions": [
            {"key": "app", "operator": "In", "values": ["client"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ]
    }
    assert admit(SFC, body) == []


def _mutate(fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = web_chain()
    fn(body["spec"])
    return body


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return apply


DUPLICATE_FUNCTION = {
    "name": "server",
    "selector": {"matchLabels": {"app": "x"}},
    "interfaces": ["e"],
}
SELF_LINK = {
    "name": "loop",
    "a": {"function": "firewall", "interface": "eth1"},
    "b": {"function": "firewall", "interface": "eth2"},
}

INVALID = {
    "duplicate function": (
        lambda s: s["functions"].append(DUPLICATE_FUNCTION),
        "function names must be unique",
    ),
    "duplicate link": (_set("links.1.name", "client-firewall"), "link names must be unique"),
    "missing function": (_set("links.0.a.function", "nat"), "side a must name an existing"),
    "missing interface": (_set("links.1.b.interface", "eth9"), "side b must name an existing"),
    "self link": (lambda s: s["links"].append(SELF_LINK), "not a function to itself"),
    "shared interface": (
        _set("links.1.a.interface", "eth1"),
        "a function interface can be used by one link only",
    ),
    "empty selector": (_set("functions.0.selector", {}), "selector must not be empty"),
    "In without values": (
        _set("functions.0.selector.matchExpressions", [{"key": "a", "operator": "In"}]),
        "In and NotIn need values",
    ),
    "Exists with values": (
        _set(
            "functions.0.selector.matchExpressions",
            [{"key": "a", "operator": "Exists", "values": ["x"]}],
        ),
        "In and NotIn need values",
    ),
    "bad operator": (
        _set("functions.0.selector.matchExpressions", [{"key": "a", "operator": "Near"}]),
        "is not one of",
    ),
    "bad function name": (_set("functions.0.name", "Client"), "does not match"),
    "long interface": (_set("functions.0.interfaces", ["abcdefghijklmnop"]), "is too long"),
    "no functions": (_set("functions", []), "should be non-empty"),
    "no links": (_set("links", []), "should be non-empty"),
    "long drain timeout": (
        _set("dataplane", {"drainTimeoutSeconds": 3601}),
        "is greater than the maximum",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_static_mistakes_are_refused_by_crd_and_parser(case: str) -> None:
    mutate, expected = INVALID[case]
    body = _mutate(mutate)
    refusals = admit(SFC, copy.deepcopy(body))
    assert any(expected in r for r in refusals), refusals
    with pytest.raises(ChainInvalid):
        parse_chain(body)


def test_controller_output_fits_the_crossconnection_schema() -> None:
    chain = parse_chain(web_chain(dataplane={"drainTimeoutSeconds": 10}))
    pods = [
        pod("cl-1", "client"),
        pod("fw-1", "firewall"),
        pod("fw-2", "firewall", terminating=True),
        pod("sv-1", "server", node="node-2"),
    ]
    for xc in compute_cross_connections(chain, pods):
        assert admit(XC, xc) == []
        xc_status = {
            "nodes": {
                "node-1": {
                    "programmedEndpoints": 3,
                    "observedGeneration": 2,
                    "ready": True,
                    "message": "",
                    "lastUpdate": "2026-01-02T03:04:05Z",
                }
            }
        }
        assert admit(XC, {**xc, "status": xc_status}) == []


def test_controller_status_fits_the_chain_schema() -> None:
    chain = parse_chain(web_chain())
    pods = [pod("cl-1", "client"), pod("fw-1", "firewall", terminating=True)]
    programming = {"client-firewall": LinkProgramming(waiting=("node-1",))}
    status = compute_chain_status(chain, pods, programming=programming, now="2026-01-02T03:04:05Z")
    assert admit(SFC, {**web_chain(), "status": status}) == []
    invalid = invalid_chain_status(ChainInvalid("web", ["x: y"]), generation=4, previous=status)
    assert admit(SFC, {**web_chain(), "status": invalid}) == []
    bad = copy.deepcopy(status)
    bad["conditions"][0]["status"] = "Maybe"
    assert schema_errors(version_schema(SFC), {**web_chain(), "status": bad})
