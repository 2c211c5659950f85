"""parse_chain turns valid chains into ChainSpecs and raises ChainInvalid listing every problem.

Covers: a linear chain and a general graph parse; dataplane settings; missing spec, functions,
links; bad names; empty or malformed selectors; duplicate function, link and interface names;
links naming missing functions or interfaces; self-links; an interface shared by two links;
derived CrossConnection names too long; all problems reported at once, each with its location.
"""

from __future__ import annotations

from typing import Any

import pytest

from sfc_k8s.api import (
    ChainInvalid,
    DataplaneSpec,
    LabelSelector,
    LinkEnd,
    SelectorOperator,
    parse_chain,
)
from tests.fixtures.chains import web_chain


def problems_of(body: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(ChainInvalid) as info:
        parse_chain(body)
    assert info.value.name == body["metadata"]["name"]
    return info.value.problems


def test_linear_chain_parses_into_typed_spec() -> None:
    chain = parse_chain(web_chain())
    assert chain.name == "web"
    assert chain.namespace == "default"
    assert chain.uid == "uid-web"
    assert chain.generation == 3
    assert [f.name for f in chain.functions] == ["client", "firewall", "server"]
    assert chain.function("firewall").interfaces == ("eth1", "eth2")
    assert chain.function("client").selector == LabelSelector((("app", "client"),))
    assert [link.name for link in chain.links] == ["client-firewall", "firewall-server"]
    assert chain.links[1].a == LinkEnd("firewall", "eth2")
    assert chain.xc_name(chain.links[0]) == "web-client-firewall"
    assert chain.dataplane == DataplaneSpec()


def test_general_graph_with_a_function_on_three_links() -> None:
    body = web_chain()
    body["spec"]["functions"].append(
        {"name": "probe", "selector": {"matchLabels": {"app": "probe"}}, "interfaces": ["eth1"]}
    )
    body["spec"]["functions"][1]["interfaces"].append("eth3")
    body["spec"]["links"].append(
        {
            "name": "firewall-probe",
            "a": {"function": "firewall", "interface": "eth3"},
            "b": {"function": "probe", "interface": "eth1"},
        }
    )
    chain = parse_chain(body)
    assert len(chain.links) == 3


def test_dataplane_settings_are_parsed() -> None:
    chain = parse_chain(web_chain(dataplane={"drainTimeoutSeconds": 0}))
    assert chain.dataplane == DataplaneSpec(drain_timeout_seconds=0)
    assert parse_chain(web_chain()).dataplane == DataplaneSpec(drain_timeout_seconds=None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"drainTimeoutSeconds": 3601}, "spec.dataplane.drainTimeoutSeconds"),
        ({"drainTimeoutSeconds": -1}, "spec.dataplane.drainTimeoutSeconds"),
        ({"drainTimeoutSeconds": True}, "spec.dataplane.drainTimeoutSeconds"),
        ({"drainTimeoutSeconds": "30"}, "spec.dataplane.drainTimeoutSeconds"),
        ("fast", "spec.dataplane"),
    ],
)
def test_dataplane_settings_out_of_range(value: object, expected: str) -> None:
    (problem,) = problems_of(web_chain(dataplane=value))
    assert problem.startswith(expected + ":")


def test_missing_spec() -> None:
    body = web_chain()
    del body["spec"]
    assert problems_of(body) == ("spec: is missing; a chain needs functions and links",)


def test_missing_functions_and_links_are_both_reported() -> None:
    body = web_chain()
    body["spec"] = {"functions": [], "links": []}
    problems = problems_of(body)
    assert problems == (
        "spec.functions: must list at least one function",
        "spec.links: must list at least one link between two functions",
    )


def test_chain_name_longer_than_a_label_value() -> None:
    body = web_chain(name="c" * 64)
    (problem,) = problems_of(body)
    assert problem.startswith("metadata.name: is 64 characters")


def test_bad_function_name_and_interface_names() -> None:
    body = web_chain()
    body["spec"]["functions"][0]["name"] = "Client_1"
    body["spec"]["functions"][1]["interfaces"] = ["eth1", "eth2", "eth1", "a" * 16, "bad/if"]
    problems = problems_of(body)
    assert any(
        p.startswith("spec.functions[0].name: 'Client_1' is not a DNS label") for p in problems
    )
    assert "spec.functions[1].interfaces[3]: " + repr("a" * 16) in "\n".join(problems)
    assert any(p.startswith("spec.functions[1].interfaces[4]: 'bad/if'") for p in problems)
    assert "spec.functions[1].interfaces: 'eth1' is listed 2 times" in problems
    # the link naming the renamed function is reported too
    assert any(
        p.startswith("spec.links[0].a.function: no function named 'client'") for p in problems
    )


def test_function_without_interfaces_or_selector() -> None:
    body = web_chain()
    del body["spec"]["functions"][0]["interfaces"]
    del body["spec"]["functions"][2]["selector"]
    problems = problems_of(body)
    assert "spec.functions[0].interfaces: must list at least one data-plane interface" in problems
    assert any(
        p.startswith("spec.functions[2].selector: must be a label selector") for p in problems
    )


def test_empty_selector_is_rejected_with_the_reason() -> None:
    body = web_chain()
    body["spec"]["functions"][0]["selector"] = {}
    (problem,) = [p for p in problems_of(body) if "selector" in p]
    assert problem == (
        "spec.functions[0].selector: is empty and would select every pod of the namespace; "
        "add matchLabels"
    )


def test_selector_expressions_are_parsed_and_checked() -> None:
    body = web_chain()
    body["spec"]["functions"][0]["selector"] = {
        "matchLabels": {"app": "client"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["b", "a", "a"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    }
    selector = parse_chain(body).function("client").selector
    assert [r.operator for r in selector.match_expressions] == [
        SelectorOperator.IN,
        SelectorOperator.DOES_NOT_EXIST,
    ]
    assert selector.match_expressions[0].values == ("a", "b")


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ({"key": "tier", "operator": "In"}, "operator In needs at least one value"),
        ({"key": "tier", "operator": "NotIn", "values": []}, "operator NotIn needs at least one"),
        ({"key": "tier", "operator": "Exists", "values": ["x"]}, "takes no values"),
        ({"key": "tier", "operator": "Near", "values": ["x"]}, "'Near' is not one of In, NotIn"),
        ({"key": "bad key", "operator": "Exists"}, "'bad key' is not a valid label key"),
        ({"key": "tier", "operator": "In", "values": [1]}, "must be a list of strings"),
        ("tier=a", "must be an object with key, operator and values"),
    ],
)
def test_bad_selector_expressions(expression: object, expected: str) -> None:
    body = web_chain()
    body["spec"]["functions"][0]["selector"]["matchExpressions"] = [expression]
    problems = problems_of(body)
    assert any(
        p.startswith("spec.functions[0].selector.matchExpressions[0]") and expected in p
        for p in problems
    ), problems


def test_bad_match_labels() -> None:
    body = web_chain()
    body["spec"]["functions"][0]["selector"]["matchLabels"] = {"app": "has space", "-x": "y"}
    problems = problems_of(body)
    assert "spec.functions[0].selector.matchLabels: '-x' is not a valid label key" in problems
    assert (
        "spec.functions[0].selector.matchLabels.app: 'has space' is not a valid label value"
        in problems
    )


def test_prefixed_label_keys_are_valid() -> None:
    body = web_chain()
    body["spec"]["functions"][0]["selector"]["matchLabels"] = {"app.kubernetes.io/name": "client"}
    selector = parse_chain(body).functions[0].selector
    assert selector.match_labels == (("app.kubernetes.io/name", "client"),)
    assert selector.matches({"app.kubernetes.io/name": "client"})
    assert not selector.matches({"name": "client"})


def test_duplicate_function_and_link_names() -> None:
    body = web_chain()
    body["spec"]["functions"].append(dict(body["spec"]["functions"][2]))
    body["spec"]["links"][1]["name"] = "client-firewall"
    problems = problems_of(body)
    assert "spec.functions: function name 'server' is used 2 times" in problems
    assert "spec.links: link name 'client-firewall' is used 2 times" in problems


def test_link_to_missing_function_and_interface() -> None:
    body = web_chain()
    body["spec"]["links"][0]["a"]["function"] = "clients"
    body["spec"]["links"][1]["b"]["interface"] = "eth7"
    problems = problems_of(body)
    assert (
        "spec.links[0].a.function: no function named 'clients' "
        "(functions: client, firewall, server)" in problems
    )
    assert (
        "spec.links[1].b.interface: function 'server' has no interface 'eth7' (interfaces: eth1)"
        in problems
    )


def test_link_end_missing_fields() -> None:
    body = web_chain()
    body["spec"]["links"][0]["a"] = {"function": "client"}
    body["spec"]["links"][1]["b"] = "server/eth1"
    problems = problems_of(body)
    assert "spec.links[0].a.interface: must name an interface of function 'client'" in problems
    assert "spec.links[1].b: must be an object with function and interface" in problems


def test_self_link_is_rejected() -> None:
    body = web_chain()
    body["spec"]["links"].append(
        {
            "name": "loop",
            "a": {"function": "firewall", "interface": "eth1"},
            "b": {"function": "firewall", "interface": "eth2"},
        }
    )
    problems = problems_of(body)
    assert (
        "spec.links[2]: links function 'firewall' to itself; a link joins two different functions"
        in problems
    )


def test_interface_used_by_two_links() -> None:
    body = web_chain()
    body["spec"]["links"][1]["a"]["interface"] = "eth1"
    problems = problems_of(body)
    assert problems == (
        "spec.links: interface firewall/eth1 is used by links 'client-firewall', "
        "'firewall-server'; an interface belongs to one link only",
    )


def test_derived_crossconnection_name_too_long() -> None:
    body = web_chain(name="c" * 63)
    body["spec"]["links"][0]["name"] = "l" * 63
    body["spec"]["links"][1]["name"] = "m" * 63
    assert parse_chain(body)  # 63 + 1 + 63 fits in 253
    body["metadata"]["name"] = "c" * 200
    problems = problems_of(body)
    assert any("would exceed 253 characters" in p for p in problems)


def test_every_problem_is_listed_in_the_message() -> None:
    body = web_chain()
    body["spec"]["functions"][0]["name"] = "BAD"
    body["spec"]["links"][1]["a"]["function"] = "firewall"
    body["spec"]["links"][1]["b"]["function"] = "firewall"
    with pytest.raises(ChainInvalid) as info:
        parse_chain(body)
    assert len(info.value.problems) >= 3
    for problem in info.value.problems:
        assert problem in str(info.value)
    assert str(info.value).startswith("ServiceFunctionChain 'web' is invalid: ")


def test_non_object_items_do_not_crash() -> None:
    body = web_chain()
    body["spec"]["functions"].append("proxy")
    body["spec"]["links"].append(None)
    problems = problems_of(body)
    assert "spec.functions[3]: must be an object with name, selector and interfaces" in problems
    assert "spec.links[2]: must be an object with name, a and b" in problems
