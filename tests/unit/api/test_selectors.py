"""Label selector matching follows Kubernetes semantics.

Covers: matchLabels (all pairs must match), In, NotIn (a missing key satisfies NotIn), Exists,
DoesNotExist, the AND of labels and expressions, emptiness, and body round trip.
"""

from __future__ import annotations

import pytest

from sfc_k8s.api import LabelSelector, SelectorOperator, SelectorRequirement, parse_selector
from sfc_k8s.api.chain import is_label_key, is_label_value


def req(key: str, op: SelectorOperator, *values: str) -> SelectorRequirement:
    return SelectorRequirement(key, op, values)


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        (LabelSelector((("app", "fw"),)), {"app": "fw", "x": "y"}, True),
        (LabelSelector((("app", "fw"),)), {"app": "fw2"}, False),
        (LabelSelector((("app", "fw"), ("tier", "a"))), {"app": "fw"}, False),
        (LabelSelector((), (req("tier", SelectorOperator.IN, "a", "b"),)), {"tier": "b"}, True),
        (LabelSelector((), (req("tier", SelectorOperator.IN, "a"),)), {}, False),
        (LabelSelector((), (req("tier", SelectorOperator.NOT_IN, "a"),)), {}, True),
        (LabelSelector((), (req("tier", SelectorOperator.NOT_IN, "a"),)), {"tier": "a"}, False),
        (LabelSelector((), (req("tier", SelectorOperator.NOT_IN, "a"),)), {"tier": "c"}, True),
        (LabelSelector((), (req("canary", SelectorOperator.EXISTS),)), {"canary": ""}, True),
        (LabelSelector((), (req("canary", SelectorOperator.EXISTS),)), {}, False),
        (LabelSelector((), (req("canary", SelectorOperator.DOES_NOT_EXIST),)), {}, True),
        (
            LabelSelector((), (req("canary", SelectorOperator.DOES_NOT_EXIST),)),
            {"canary": "1"},
            False,
        ),
        (
            LabelSelector((("app", "fw"),), (req("canary", SelectorOperator.DOES_NOT_EXIST),)),
            {"app": "fw", "canary": "1"},
            False,
        ),
    ],
)
def test_matching(selector: LabelSelector, labels: dict[str, str], expected: bool) -> None:
    assert selector.matches(labels) is expected


def test_empty_selector() -> None:
    assert LabelSelector().is_empty
    assert not LabelSelector((("a", "b"),)).is_empty


def test_body_round_trip() -> None:
    from sfc_k8s.api.chain import Problems

    body = {
        "matchLabels": {"app": "fw"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}],
    }
    problems = Problems()
    selector = parse_selector(body, "sel", problems)
    assert not problems.items
    assert selector.to_body() == body


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("app", True),
        ("app.kubernetes.io/name", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("/name", False),
        ("Example.com/name", False),
        ("a/b/c", False),
        ("", False),
        ("-app", False),
    ],
)
def test_label_keys(key: str, valid: bool) -> None:
    assert is_label_key(key) is valid


@pytest.mark.parametrize(
    ("value", "valid"), [("", True), ("v1.2_x-y", True), ("a" * 64, False), ("a b", False)]
)
def test_label_values(value: str, valid: bool) -> None:
    assert is_label_value(value) is valid
