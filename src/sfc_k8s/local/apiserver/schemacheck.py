"""A compiled acceptance check of JSON values against a CRD's OpenAPI schema (draft 4 form).

`schema.StructuralSchema.validate` asks `compile_acceptor()`'s function first: True means
jsonschema's Draft4Validator would report no error for the value, so it is not run. False means
"invalid, or not sure" and jsonschema runs as before and gives the errors (or none). jsonschema
is thus only the reference, still producing every message, while a valid write (nearly all of
them) costs a walk of plain Python checks instead of jsonschema's per-keyword dispatch (about
ten times less).

Only the keywords structural schemas use are compiled (type, properties, required,
additionalProperties, items, enum of strings, bounds on numbers, lengths and sizes, pattern);
a schema with any other draft-4 validation keyword (`$ref`, `allOf`, `uniqueItems`, …) gets no
acceptor (None), and jsonschema checks everything as before. Keywords jsonschema ignores are
ignored here too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Acceptor = Callable[[Any], bool]


class _UnsupportedKeywordError(Exception):
    """A keyword this module does not compile: no acceptor for the schema."""


# draft 4 types as jsonschema's draft-4 type checker reads them (bool is no integer, 1.0 is no
# integer)
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
    "string": lambda v: type(v) is str,
    "integer": lambda v: type(v) is int,
    "number": lambda v: type(v) is int or type(v) is float,
    "boolean": lambda v: type(v) is bool,
    "null": lambda v: v is None,
}
_COMPILED = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "pattern",
}


def compile_acceptor(schema: dict[str, Any], keywords: frozenset[str]) -> Acceptor | None:
    """The acceptance check of a draft-4 `schema`, or None if it uses a validation keyword (of
    `keywords`: the validator's) that is not compiled here."""
    try:
        return _compile(schema, keywords)
    except _UnsupportedKeywordError:
        return None


def _compile(schema: Any, keywords: frozenset[str]) -> Acceptor:
    if not isinstance(schema, dict):
        raise _UnsupportedKeywordError(repr(schema))
    unknown = (set(schema) & keywords) - _COMPILED
    if unknown:
        raise _UnsupportedKeywordError(", ".join(sorted(unknown)))
    checks: list[Acceptor] = []
    if "type" in schema:
        checks.append(_type_check(schema["type"]))
    checks.extend(_object_checks(schema, keywords))
    checks.extend(_array_checks(schema, keywords))
    checks.extend(_scalar_checks(schema))
    if len(checks) == 1:
        return checks[0]
    return lambda value: all(check(value) for check in checks)


def _type_check(wanted: Any) -> Acceptor:
    names = [wanted] if isinstance(wanted, str) else wanted
    if not isinstance(names, list) or not all(n in _TYPES for n in names):
        raise _UnsupportedKeywordError(f"type {wanted!r}")
    tests = [_TYPES[n] for n in names]
    if len(tests) == 1:
        return tests[0]
    return lambda value: any(test(value) for test in tests)


def _object_checks(schema: dict[str, Any], keywords: frozenset[str]) -> list[Acceptor]:
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    extra = schema.get("additionalProperties", True)
    if not isinstance(properties, dict) or not isinstance(required, list):
        raise _UnsupportedKeywordError("properties")
    subs = {name: _compile(sub, keywords) for name, sub in properties.items()}
    extra_check = _compile(extra, keywords) if isinstance(extra, dict) else None
    if not isinstance(extra, dict | bool):
        raise _UnsupportedKeywordError("additionalProperties")
    low, high = schema.get("minProperties", 0), schema.get("maxProperties")
    checks: list[Acceptor] = []
    if required:
        checks.append(lambda v: type(v) is not dict or all(name in v for name in required))
    if low or high is not None:
        checks.append(lambda v: type(v) is not dict or _within(len(v), low, high))
    if subs or extra is not True:

        def members(value: Any) -> bool:
            if type(value) is not dict:
                return True
            for name, item in value.items():
                check = subs.get(name)
                if check is not None:
                    if not check(item):
                        return False
                elif extra is False or (extra_check is not None and not extra_check(item)):
                    return False
            return True

        checks.append(members)
    return checks


def _array_checks(schema: dict[str, Any], keywords: frozenset[str]) -> list[Acceptor]:
    items = schema.get("items")
    if items is not None and not isinstance(items, dict):
        raise _UnsupportedKeywordError("items as a list")
    item_check = _compile(items, keywords) if items is not None else None
    low, high = schema.get("minItems", 0), schema.get("maxItems")
    checks: list[Acceptor] = []
    if low or high is not None:
        checks.append(lambda v: type(v) is not list or _within(len(v), low, high))
    if item_check is not None:
        checks.append(lambda v: type(v) is not list or all(item_check(i) for i in v))
    return checks


def _scalar_checks(schema: dict[str, Any]) -> list[Acceptor]:
    checks: list[Acceptor] = []
    if "enum" in schema:
        allowed = schema["enum"]
        if not isinstance(allowed, list) or not all(type(a) is str for a in allowed):
            raise _UnsupportedKeywordError("enum of non-strings")
        choices = frozenset(allowed)
        checks.append(lambda v: type(v) is str and v in choices)
    if "exclusiveMinimum" in schema or "exclusiveMaximum" in schema:
        raise _UnsupportedKeywordError("exclusive bounds")
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None or high is not None:
        checks.append(lambda v: type(v) not in (int, float) or _within(v, low, high))
    low_len, high_len = schema.get("minLength", 0), schema.get("maxLength")
    if low_len or high_len is not None:
        checks.append(lambda v: type(v) is not str or _within(len(v), low_len, high_len))
    if "pattern" in schema:
        search = re.compile(schema["pattern"]).search  # jsonschema: re.search(pattern, value)
        checks.append(lambda v: type(v) is not str or search(v) is not None)
    return checks


def _within(value: float, low: float | None, high: float | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)
