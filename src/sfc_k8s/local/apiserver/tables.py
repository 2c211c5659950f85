"""`Table` responses (meta.k8s.io/v1) that make `kubectl get` print columns.

The scaffold asks for a table when the client sends `Accept: ...;as=Table;g=meta.k8s.io;v=v1`.
Custom resources use their CRD's `additionalPrinterColumns` (evaluated with a small JSONPath
subset: `.a.b`, `[n]`, `[*]`, `[?(@.k=="v")]`); built-in kinds have the columns kubectl users
know (Pods: Ready/Status/Restarts/Age/IP/Node; Deployments: Ready/Up-to-date/Available/Age...);
anything else gets Name and Age.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

from sfc_k8s.api.conditions import is_ready
from sfc_k8s.api.timestamps import parse_rfc3339
from sfc_k8s.local.apiserver.hpaspec import hpa_cells
from sfc_k8s.local.apiserver.resources import ResourceType

_TOKEN_RE = re.compile(
    r"""\.([A-Za-z0-9_\-$]+)          # .field
      | \[\s*['"]([^'"]+)['"]\s*\]    # ['field.with.dots']
      | \[\s*(\*|-?\d+)\s*\]          # [*] or [n]
      | \[\?\(@\.([A-Za-z0-9_.\-]+)\s*(==|!=)\s*['"]?([^'")]*)['"]?\)\]   # [?(@.k=="v")]
    """,
    re.VERBOSE,
)


def _select(item: Any, step: tuple[str | None, ...]) -> list[Any]:
    """What one parsed JSONPath step (the groups of ``_TOKEN_RE``) selects from ``item``."""
    field, quoted, index, fkey, fop, fvalue = step
    name = field if field is not None else quoted
    if name is not None:
        return [item[name]] if isinstance(item, dict) and name in item else []
    if index is not None:
        return _indexed(item, index)
    if fkey is None or not isinstance(item, list):
        return []
    return [e for e in item if _filter_hit(e, fkey, fvalue or "") == (fop == "==")]


def _indexed(item: Any, index: str) -> list[Any]:
    """``[*]`` (every element or value) or ``[n]`` (one element, negative from the end)."""
    if isinstance(item, dict):
        return list(item.values()) if index == "*" else []
    if not isinstance(item, list):
        return []
    if index == "*":
        return list(item)
    return [item[int(index)]] if -len(item) <= int(index) < len(item) else []


def _filter_hit(element: Any, key: str, value: str) -> bool:
    actual = jsonpath(element, "." + key)
    return bool(actual) and str(actual[0]) == value


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Values selected by a printer-column JSONPath (empty list when nothing matches)."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    current = [obj]
    pos = 0
    while pos < len(path):
        match = _TOKEN_RE.match(path, pos)
        if match is None:
            return []
        pos = match.end()
        step = match.groups()
        current = [value for item in current for value in _select(item, step)]
    return current


def age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    """Human age as kubectl prints it (`45s`, `3m12s`, `5h`, `2d`)."""
    if not timestamp:
        return "<unknown>"
    then = parse_rfc3339(timestamp)
    if then is None:
        return "<invalid>"
    now = now or datetime.datetime.now(datetime.UTC)
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def _column(
    name: str, kind: str = "string", *, priority: int = 0, fmt: str = "", description: str = ""
) -> dict[str, Any]:
    return {
        "name": name,
        "type": kind,
        "format": fmt,
        "description": description,
        "priority": priority,
    }


NAME_COLUMN = _column("Name", fmt="name", description="Name of the object")
AGE_COLUMN = _column("Age", description="Time since the object was created")


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _created(obj: dict[str, Any]) -> str:
    return age(_meta(obj).get("creationTimestamp"))


def _pod_cells(obj: dict[str, Any]) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    total = len(spec.get("containers") or [])
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    phase = status.get("reason") or status.get("phase") or "Unknown"
    for s in statuses:
        waiting = (s.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            phase = waiting["reason"]
    if _meta(obj).get("deletionTimestamp"):
        phase = "Terminating"
    return [
        _meta(obj).get("name", ""),
        f"{ready}/{total}",
        phase,
        restarts,
        _created(obj),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
    ]


def _deployment_cells(obj: dict[str, Any]) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [
        _meta(obj).get("name", ""),
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        _created(obj),
    ]


def _daemonset_cells(obj: dict[str, Any]) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    pod_spec = (spec.get("template") or {}).get("spec") or {}
    selector = pod_spec.get("nodeSelector") or {}
    containers = pod_spec.get("containers") or []
    match = (spec.get("selector") or {}).get("matchLabels") or {}
    return [
        _meta(obj).get("name", ""),
        *(
            status.get(field, 0)
            for field in (
                "desiredNumberScheduled",
                "currentNumberScheduled",
                "numberReady",
                "updatedNumberScheduled",
                "numberAvailable",
            )
        ),
        ",".join(f"{k}={v}" for k, v in selector.items()) or "<none>",
        _created(obj),
        ",".join(str(c.get("name", "")) for c in containers),
        ",".join(str(c.get("image", "")) for c in containers),
        ",".join(f"{k}={v}" for k, v in match.items()) or "<none>",
    ]


def _node_cells(obj: dict[str, Any]) -> list[Any]:
    state = "Ready" if is_ready(obj) else "NotReady"
    if (obj.get("spec") or {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    version = ((obj.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")
    return [_meta(obj).get("name", ""), state, "<none>", _created(obj), version]


def _namespace_cells(obj: dict[str, Any]) -> list[Any]:
    phase = (obj.get("status") or {}).get("phase", "Active")
    return [_meta(obj).get("name", ""), phase, _created(obj)]


def _event_cells(obj: dict[str, Any]) -> list[Any]:
    involved = obj.get("involvedObject") or obj.get("regarding") or {}
    last = obj.get("lastTimestamp") or obj.get("eventTime") or _meta(obj).get("creationTimestamp")
    return [
        age(last),
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        obj.get("message") or obj.get("note") or "",
    ]


_BUILTIN: dict[tuple[str, str], tuple[list[dict[str, Any]], Callable[[dict[str, Any]], list[Any]]]]
_BUILTIN = {
    ("", "pods"): (
        [
            NAME_COLUMN,
            _column("Ready"),
            _column("Status"),
            _column("Restarts", "integer"),
            AGE_COLUMN,
            _column("IP", priority=1),
            _column("Node", priority=1),
        ],
        _pod_cells,
    ),
    ("apps", "deployments"): (
        [
            NAME_COLUMN,
            _column("Ready"),
            _column("Up-to-date", "integer"),
            _column("Available", "integer"),
            AGE_COLUMN,
        ],
        _deployment_cells,
    ),
    ("apps", "daemonsets"): (
        [
            NAME_COLUMN,
            _column("Desired", "integer"),
            _column("Current", "integer"),
            _column("Ready", "integer"),
            _column("Up-to-date", "integer"),
            _column("Available", "integer"),
            _column("Node Selector"),
            AGE_COLUMN,
            _column("Containers", priority=1),
            _column("Images", priority=1),
            _column("Selector", priority=1),
        ],
        _daemonset_cells,
    ),
    ("autoscaling", "horizontalpodautoscalers"): (
        [
            NAME_COLUMN,
            _column("Reference"),
            _column("Targets"),
            _column("MinPods", "integer"),
            _column("MaxPods", "integer"),
            _column("Replicas", "integer"),
            AGE_COLUMN,
        ],
        lambda obj: hpa_cells(obj, _created(obj)),
    ),
    ("", "nodes"): (
        [NAME_COLUMN, _column("Status"), _column("Roles"), AGE_COLUMN, _column("Version")],
        _node_cells,
    ),
    ("", "namespaces"): ([NAME_COLUMN, _column("Status"), AGE_COLUMN], _namespace_cells),
    ("", "events"): (
        [
            _column("Last Seen"),
            _column("Type"),
            _column("Reason"),
            _column("Object"),
            _column("Message"),
        ],
        _event_cells,
    ),
}


def _render(value: list[Any], kind: str) -> Any:
    if not value:
        return None
    if len(value) > 1:
        return ",".join(str(v) for v in value)
    single = value[0]
    if kind == "date" and isinstance(single, str):
        return age(single)
    if isinstance(single, dict | list):
        import json

        return json.dumps(single, separators=(",", ":"))
    return single


def _custom(
    rtype: ResourceType,
) -> tuple[list[dict[str, Any]], Callable[[dict[str, Any]], list[Any]]]:
    specs = list(rtype.printer_columns)
    columns = [NAME_COLUMN] + [
        _column(
            spec.get("name", ""),
            "string" if spec.get("type") == "date" else spec.get("type", "string"),
            priority=int(spec.get("priority", 0)),
            fmt=spec.get("format", ""),
            description=spec.get("description", ""),
        )
        for spec in specs
    ]
    if not specs:
        columns.append(AGE_COLUMN)

    def cells(obj: dict[str, Any]) -> list[Any]:
        row: list[Any] = [_meta(obj).get("name", "")]
        for spec in specs:
            row.append(_render(jsonpath(obj, spec.get("jsonPath", "")), spec.get("type", "")))
        if not specs:
            row.append(_created(obj))
        return row

    return columns, cells


def columns_for(
    rtype: ResourceType,
) -> tuple[list[dict[str, Any]], Callable[[dict[str, Any]], list[Any]]]:
    """Column definitions and the row function for a resource."""
    if not rtype.builtin:
        return _custom(rtype)
    if rtype.key in _BUILTIN:
        return _BUILTIN[rtype.key]
    return [NAME_COLUMN, AGE_COLUMN], lambda obj: [_meta(obj).get("name", ""), _created(obj)]


def _row_object(obj: dict[str, Any], include: str) -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": _meta(obj)}


def table(
    rtype: ResourceType,
    objects: list[dict[str, Any]],
    *,
    resource_version: str,
    include_object: str = "Metadata",
    with_columns: bool = True,
) -> dict[str, Any]:
    """A Table of the objects (one row each)."""
    columns, cells = columns_for(rtype)
    result: dict[str, Any] = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns if with_columns else None,
        "rows": [
            {"cells": cells(obj), "object": _row_object(obj, include_object)} for obj in objects
        ],
    }
    return result
