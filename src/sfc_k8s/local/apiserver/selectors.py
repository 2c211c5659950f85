"""Label and field selectors as the list and watch endpoints accept them.

Label selectors, in the string syntax and structured alike, are parsed by `sfc_k8s.api.selectors`
and matched by `api`'s `LabelSelector`, the code that matches a chain's functions; bad syntax is
a 400 here. Field selectors take `path=value`, `path==value` and `path!=value` for any dotted
field path (`metadata.name`, `spec.nodeName`, `status.phase`, `involvedObject.uid`...); a
missing field compares as the empty string.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sfc_k8s.api.selectors import (
    SelectorSyntaxError,
    parse_label_selector_string,
    selector_from_body,
    split_terms,
)
from sfc_k8s.local.apiserver.errors import bad_request

Predicate = Callable[[Mapping[str, Any]], bool]
LabelPredicate = Callable[[Mapping[str, str]], bool]


def parse_label_selector(text: str) -> LabelPredicate:
    """Compile a label selector string into a predicate over a labels mapping (400 if bad)."""
    try:
        return parse_label_selector_string(text).matches
    except SelectorSyntaxError as err:
        raise bad_request(str(err)) from err


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string form of a dotted field of an object ('' when missing)."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return ""
        current = current.get(part)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def _field_check(path: str, value: str, *, equal: bool) -> Predicate:
    def check(obj: Mapping[str, Any]) -> bool:
        return (field_value(obj, path) == value) == equal

    return check


def parse_field_selector(text: str) -> Predicate:
    """Compile a field selector string into a predicate over a whole object."""
    checks: list[Predicate] = []
    for term in split_terms(text):
        if "!=" in term:
            path, value = term.split("!=", 1)
            checks.append(_field_check(path.strip(), value.strip(), equal=False))
        elif "=" in term:
            path, value = term.replace("==", "=", 1).split("=", 1)
            checks.append(_field_check(path.strip(), value.strip(), equal=True))
        else:
            raise bad_request(f"invalid field selector: {term!r}: expected 'field=value'")
    return lambda obj: all(check(obj) for check in checks)


def match_label_selector_object(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether labels match a structured LabelSelector (matchLabels/matchExpressions)."""
    return selector_from_body(selector).matches(labels)
