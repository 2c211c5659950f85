"""Reading status conditions of Kubernetes objects: the one readiness check.

A pod and a node are Ready alike: their ``Ready`` condition says ``"True"``. Pure: used by
``api.pods`` (the controller's pod index), the local API server (scheduling, controllers, node
lifecycle, tables) and the local cluster's tools.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def object_condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The ``status.conditions`` entry of type ``kind`` of ``obj``, if it has one."""
    for entry in (obj.get("status") or {}).get("conditions") or ():
        if isinstance(entry, Mapping) and entry.get("type") == kind:
            return entry
    return None


def is_ready(obj: Mapping[str, Any]) -> bool:
    """Whether the pod or node ``obj`` has a ``Ready`` condition with status ``"True"``."""
    ready = object_condition(obj, "Ready")
    return ready is not None and ready.get("status") == "True"
