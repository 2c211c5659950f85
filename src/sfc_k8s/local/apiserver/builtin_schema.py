"""Strict field validation of built-in kinds, as a real API server applies it for kubectl.

kubectl sends `fieldValidation=Strict` with every write, so a real cluster rejects a manifest
with a misspelt field (`comand:`) that would otherwise be silently ignored here and break only
later, on a real cluster. The store calls `strict_problems()` for built-in kinds under Strict;
it checks the object against the Kubernetes 1.32 JSON schemas shipped by kubernetes-validate
when that package is installed (the project's dev extra, which `make test` and `make demo`
install). Without it, built-in kinds are not checked. Custom resources are checked by their CRD
schema instead (`schema.py`).
"""

from __future__ import annotations

import importlib
from typing import Any

from sfc_k8s.local.apiserver.schema import field_path

K8S_VERSION = "1.32"


def strict_problems(obj: dict[str, Any]) -> list[str]:
    """What a strict decoder would reject in `obj` (empty when fine or when not checkable)."""
    try:
        kubernetes_validate: Any = importlib.import_module("kubernetes_validate")
    except ImportError:
        return []
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [_describe(err)]
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError):
        return []
    return []


def _describe(err: Any) -> str:
    parts: list[str | int] = list(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        declared = set((err.schema or {}).get("properties") or {})
        unknown = sorted(set(err.instance) - declared)
        return ", ".join(f'unknown field "{field_path([*parts, name])}"' for name in unknown)
    where = field_path(parts) or "the object"
    return f"{where}: {err.message}"
