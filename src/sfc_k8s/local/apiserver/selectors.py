"""Label and field selectors as the list and watch endpoints accept them.

Label selectors use the Kubernetes string syntax (`a=b`, `a==b`, `a!=b`, `a in (x,y)`,
`a notin (x)`, `a`, `!a`, comma-separated, all must hold). Field selectors take `path=value`,
`path==value` and `path!=value` for any dotted field path (`metadata.name`, `spec.nodeName`,
`status.phase`, `involvedObject.uid`...); a missing field compares as the empty string.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from sfc_k8s.local.apiserver.errors import bad_request

Predicate = Callable[[Mapping[str, Any]], bool]
LabelPredicate = Callable[[Mapping[str, str]], bool]

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\((.*)\)\s*$")
_CMP_RE = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside a parenthesised value set."""
    terms: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    return [t for t in terms if t.strip()]


def _label_check(key: str, op: str, values: frozenset[str]) -> LabelPredicate:
    """One requirement of a label selector as a predicate."""

    def check(labels: Mapping[str, str]) -> bool:
        if op == "in":
            return labels.get(key) in values
        if op == "notin":
            return labels.get(key) not in values
        if op == "=":
            return labels.get(key) in values
        if op == "!=":
            return labels.get(key) not in values
        if op == "exists":
            return key in labels
        return key not in labels

    return check


def parse_label_selector(text: str) -> LabelPredicate:
    """Compile a label selector string into a predicate over a labels mapping."""
    checks: list[LabelPredicate] = []
    for term in _split_terms(text):
        if match := _SET_RE.match(term):
            values = frozenset(v.strip() for v in match.group(4).split(",") if v.strip())
            checks.append(_label_check(match.group(1), match.group(3), values))
        elif match := _CMP_RE.match(term):
            op = "!=" if match.group(3) == "!=" else "="
            checks.append(_label_check(match.group(1), op, frozenset({match.group(4)})))
        elif match := _EXISTS_RE.match(term):
            op = "notexists" if match.group(1) == "!" else "exists"
            checks.append(_label_check(match.group(2), op, frozenset()))
        else:
            raise bad_request(f"unable to parse requirement: invalid label selector {text!r}")
    return lambda labels: all(check(labels) for check in checks)


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
    for term in _split_terms(text):
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
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True
