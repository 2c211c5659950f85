"""Label selectors from their two wire forms, both onto ``api.models.LabelSelector``.

A selector is matched in one place (``LabelSelector.matches``). This module builds one from a
``LabelSelector`` body that the API server has already admitted (``selector_from_body``: a
Deployment's or a chain's ``matchLabels``/``matchExpressions``) and from the string syntax of
``?labelSelector=`` (``parse_label_selector_string``: ``a=b``, ``a==b``, ``a!=b``,
``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``; comma-separated, all must hold). Pure: used by
the local API server's list, watch and controllers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sfc_k8s.api.models import LabelSelector, SelectorOperator, SelectorRequirement

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\((.*)\)\s*$")
_CMP_RE = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")
_OPERATORS = {op.value: op for op in SelectorOperator}


class SelectorSyntaxError(ValueError):
    """A label selector string that does not parse; the message names the selector."""


def selector_from_body(body: Mapping[str, Any]) -> LabelSelector:
    """The ``LabelSelector`` of an admitted body (requirements with an unknown operator are
    left out, as they were never admitted)."""
    labels = tuple((str(k), str(v)) for k, v in (body.get("matchLabels") or {}).items())
    requirements = tuple(
        SelectorRequirement(
            str(expr.get("key")),
            _OPERATORS[expr.get("operator")],
            tuple(str(v) for v in expr.get("values") or ()),
        )
        for expr in body.get("matchExpressions") or ()
        if expr.get("operator") in _OPERATORS
    )
    return LabelSelector(labels, requirements)


def split_terms(text: str) -> list[str]:
    """Split on commas that are not inside a parenthesised value set; blank terms dropped."""
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


def _requirement(term: str) -> SelectorRequirement | tuple[str, str] | None:
    """One term: a requirement, a ``(key, value)`` equality, or None if it does not parse."""
    if match := _SET_RE.match(term):
        values = tuple(v.strip() for v in match.group(4).split(",") if v.strip())
        op = SelectorOperator.IN if match.group(3) == "in" else SelectorOperator.NOT_IN
        return SelectorRequirement(match.group(1), op, values)
    if match := _CMP_RE.match(term):
        if match.group(3) == "!=":
            return SelectorRequirement(match.group(1), SelectorOperator.NOT_IN, (match.group(4),))
        return (match.group(1), match.group(4))
    if match := _EXISTS_RE.match(term):
        absent = match.group(1) == "!"
        op = SelectorOperator.DOES_NOT_EXIST if absent else SelectorOperator.EXISTS
        return SelectorRequirement(match.group(2), op)
    return None


def parse_label_selector_string(text: str) -> LabelSelector:
    """The ``LabelSelector`` written as ``text``; ``SelectorSyntaxError`` if it does not parse."""
    labels: list[tuple[str, str]] = []
    requirements: list[SelectorRequirement] = []
    for term in split_terms(text):
        parsed = _requirement(term)
        if parsed is None:
            raise SelectorSyntaxError(
                f"unable to parse requirement: invalid label selector {text!r}"
            )
        if isinstance(parsed, SelectorRequirement):
            requirements.append(parsed)
        else:
            labels.append(parsed)
    return LabelSelector(tuple(labels), tuple(requirements))
