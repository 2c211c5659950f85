"""Structural-schema behaviour of CRD versions: defaulting, pruning, OpenAPI and CEL validation.

The store compiles one `StructuralSchema` per served CRD version when the CRD is registered and
runs it on every write of a custom object: prune unknown fields, apply `default`s, then check
the OpenAPI v3 schema (with jsonschema) and the `x-kubernetes-validations` CEL rules (with
cel-python). Failures come back as `errors.Cause` lists, answered as 422 Invalid.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sfc_k8s.local.apiserver.errors import Cause

if TYPE_CHECKING:
    import jsonschema  # type: ignore[import-untyped]

# jsonschema and cel-python are imported on first use: together they cost a few hundred
# milliseconds of start-up that a server with no custom objects yet does not need.

_ROOT_KEEP = ("apiVersion", "kind", "metadata")
_CEL_ENV: Any = None
_CEL_CACHE: dict[str, Any] = {}


def _cel_program(rule: str) -> Any:
    global _CEL_ENV  # noqa: PLW0603 - one shared parser; building it costs ~0.3 s
    if rule not in _CEL_CACHE:
        if _CEL_ENV is None:
            import celpy

            _CEL_ENV = celpy.Environment()
        _CEL_CACHE[rule] = _CEL_ENV.program(_CEL_ENV.compile(rule))
    return _CEL_CACHE[rule]


def field_path(parts: list[str | int]) -> str:
    """`['spec', 'links', 0, 'a']` -> `spec.links[0].a`."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _to_jsonschema(node: Any) -> Any:
    """Rewrite OpenAPI v3 (Kubernetes flavour) into plain JSON Schema draft 4."""
    if isinstance(node, list):
        return [_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    result = {k: _to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    result.pop("nullable", None)
    result.pop("format", None)
    if node.get("x-kubernetes-int-or-string"):
        result.pop("type", None)
        result["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in result:
        base = result["type"]
        result["type"] = [*base, "null"] if isinstance(base, list) else [base, "null"]
    return result


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return json.dumps(value)


class SchemaInvalidError(ValueError):
    """A CRD's openAPIV3Schema that is not a valid schema."""


class StructuralSchema:
    """One CRD version's `openAPIV3Schema`, ready to default, prune and validate objects."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._plain = _to_jsonschema(schema)
        self._validator: Any = None

    def check(self) -> None:
        """Raise SchemaInvalidError if the schema itself is not a valid OpenAPI schema."""
        import jsonschema

        try:
            jsonschema.Draft4Validator.check_schema(self._plain)
        except jsonschema.SchemaError as err:
            raise SchemaInvalidError(err.message) from err

    def apply_defaults(self, obj: dict[str, Any]) -> dict[str, Any]:
        result = copy.deepcopy(obj)
        _default(self.schema, result)
        return result

    def prune(self, obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The object without the fields the schema does not declare, and their paths."""
        result = copy.deepcopy(obj)
        removed: list[str] = []
        _prune(self.schema, result, root=True, removed=removed)
        return result, removed

    def validate(self, obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
        if self._validator is None:
            import jsonschema

            self._validator = jsonschema.Draft4Validator(self._plain)
        body = {k: v for k, v in obj.items() if k != "metadata"}
        causes = [_cause(err) for err in self._validator.iter_errors(body)]
        if not causes:
            causes.extend(_check_rules(self.schema, obj, old, []))
        return causes


def _default(schema: dict[str, Any], value: Any) -> None:
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for name, sub in props.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
        for name, sub in props.items():
            if name in value:
                _default(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                if name not in props:
                    _default(extra, item)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default(schema["items"], item)


def _prune(
    schema: dict[str, Any],
    value: Any,
    *,
    root: bool = False,
    path: list[str | int] | None = None,
    removed: list[str] | None = None,
) -> None:
    path = path or []
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keep_all = schema.get("x-kubernetes-preserve-unknown-fields") or extra not in (None, False)
        embedded = root or schema.get("x-kubernetes-embedded-resource")
        if props and not keep_all:
            for name in list(value):
                if name not in props and not (embedded and name in _ROOT_KEEP):
                    del value[name]
                    if removed is not None:
                        removed.append(field_path([*path, name]))
        for name, item in value.items():
            if name in props:
                _prune(props[name], item, path=[*path, name], removed=removed)
            elif isinstance(extra, dict):
                _prune(extra, item, path=[*path, name], removed=removed)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _prune(schema["items"], item, path=[*path, index], removed=removed)


def _cause(err: jsonschema.ValidationError) -> Cause:
    parts: list[str | int] = list(err.absolute_path)
    path = field_path(parts)
    if err.validator == "required":
        missing = [p for p in err.validator_value if p not in (err.instance or {})]
        name = missing[0] if missing else "?"
        return Cause(field_path([*parts, name]), "FieldValueRequired", "Required value")
    if err.validator == "type":
        want = err.validator_value
        return Cause(
            path,
            "FieldValueTypeInvalid",
            f"Invalid value: {_show(err.instance)}: {path or 'body'} in body must be of type "
            f"{want if isinstance(want, str) else ' or '.join(want)}: {_show(err.instance)}",
        )
    if err.validator == "enum":
        allowed = ", ".join(json.dumps(v) for v in err.validator_value)
        return Cause(
            path,
            "FieldValueNotSupported",
            f"Unsupported value: {_show(err.instance)}: supported values: {allowed}",
        )
    return Cause(path, "FieldValueInvalid", f"Invalid value: {_show(err.instance)}: {err.message}")


def _walk_rules(
    schema: dict[str, Any], value: Any, old: Any, path: list[str | int]
) -> Iterator[tuple[dict[str, Any], Any, Any, list[str | int]]]:
    if schema.get("x-kubernetes-validations"):
        yield schema, value, old, path
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        old_map = old if isinstance(old, dict) else {}
        for name, item in value.items():
            sub = props.get(name) if name in props else extra if isinstance(extra, dict) else None
            if sub is not None and name != "metadata":
                yield from _walk_rules(sub, item, old_map.get(name), [*path, name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _walk_rules(schema["items"], item, None, [*path, index])


def _check_rules(
    schema: dict[str, Any], value: Any, old: Any, path: list[str | int]
) -> Iterator[Cause]:
    from celpy import celtypes
    from celpy.adapter import json_to_cel
    from celpy.evaluation import CELEvalError

    for node, current, previous, where in _walk_rules(schema, value, old, path):
        for rule in node["x-kubernetes-validations"]:
            text = rule.get("rule", "")
            is_transition = "oldSelf" in text
            if is_transition and previous is None:
                continue
            activation = {"self": json_to_cel(current)}
            if is_transition:
                activation["oldSelf"] = json_to_cel(previous)
            try:
                result = _cel_program(text).evaluate(activation)
            except CELEvalError as err:
                result = err
            target = field_path(where)
            extra_path = rule.get("fieldPath", "")
            if extra_path:
                target = (
                    target + extra_path
                    if extra_path.startswith("[")
                    else (f"{target}{extra_path}" if target else extra_path.lstrip("."))
                )
            if isinstance(result, celtypes.BoolType) and bool(result):
                continue
            if isinstance(result, celtypes.BoolType):
                message = rule.get("message") or f"failed rule: {text}"
            else:
                message = f"rule {text!r} could not be evaluated: {result}"
            yield Cause(
                target,
                rule.get("reason", "FieldValueInvalid"),
                f"Invalid value: {_show(current)}: {message}",
            )
