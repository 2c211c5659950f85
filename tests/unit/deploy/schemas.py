"""Offline validation helpers for the CRDs: OpenAPI -> JSON Schema, and CEL rule evaluation.

Used by the deploy unit tests. CEL rules are evaluated with cel-python at every schema node that
carries ``x-kubernetes-validations``, the way the API server applies them (``self`` bound to the
node's value).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[3]
CRD_DIR = ROOT / "deploy" / "crds"


def load_crd(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CRD_DIR / name).read_text())
    return data


def version_schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def to_json_schema(node: Any) -> Any:
    """Drop the Kubernetes extensions so that jsonschema checks types, patterns and bounds."""
    if isinstance(node, dict):
        return {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if isinstance(node, list):
        return [to_json_schema(v) for v in node]
    return node


def schema_errors(schema: dict[str, Any], instance: Any) -> list[str]:
    validator = jsonschema.Draft7Validator(
        to_json_schema(schema), format_checker=jsonschema.FormatChecker()
    )
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def walk_rules(schema: dict[str, Any], value: Any) -> Iterator[tuple[dict[str, Any], Any]]:
    """Yield (rule, value) for every CEL rule applying to ``value`` under ``schema``."""
    for rule in schema.get("x-kubernetes-validations", ()):
        yield rule, value
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                yield from walk_rules(sub, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                if key not in (schema.get("properties") or {}):
                    yield from walk_rules(extra, item)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            yield from walk_rules(schema["items"], item)


def all_rules(schema: dict[str, Any]) -> Iterator[str]:
    for rule in schema.get("x-kubernetes-validations", ()):
        yield rule["rule"]
    for sub in (schema.get("properties") or {}).values():
        yield from all_rules(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from all_rules(schema[key])


_ENV = celpy.Environment()


def cel_failures(schema: dict[str, Any], instance: Any) -> list[str]:
    """Messages of the CEL rules that ``instance`` violates."""
    failures = []
    for rule, value in walk_rules(schema, instance):
        program = _ENV.program(_ENV.compile(rule["rule"]))
        result = program.evaluate({"self": celpy.json_to_cel(value)})
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and result):
            failures.append(rule["message"])
    return failures


def admit(crd: dict[str, Any], instance: Any) -> list[str]:
    """What an API server with this CRD would say: schema errors, then CEL failures."""
    schema = version_schema(crd)
    return schema_errors(schema, instance) or cel_failures(schema, instance)
