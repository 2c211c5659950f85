"""Decoding of the Kubernetes protobuf request bodies kubectl sends for a few simple kinds.

`kubectl create namespace|configmap|secret|serviceaccount|deployment|role|clusterrole|
rolebinding|clusterrolebinding|token`, `kubectl autoscale` and `kubectl auth can-i|whoami` post
their object as `application/vnd.kubernetes.protobuf` (the `k8s\\0` magic, a runtime.Unknown
envelope, then the object's generated message). The server speaks JSON everywhere else; this
module turns those bodies into the JSON form for the kinds listed in `_KINDS`, and says plainly
which kind it cannot read otherwise. Field numbers follow k8s.io/api's generated.proto files.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    """A protobuf body that is malformed or of a kind this server cannot decode."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs: ints for varints, bytes for length-delimited fields."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ProtobufError("truncated length-delimited field")
            yield number, data[pos : pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")


def _text(value: int | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(value: int | bytes) -> tuple[str, bytes]:
    key, item = "", b""
    for number, part in _fields(value if isinstance(value, bytes) else b""):
        if number == 1:
            key = _text(part)
        elif number == 2 and isinstance(part, bytes):
            item = part
    return key, item


# Message layouts for the kinds `kubectl create` sends, as field number -> (JSON name, kind,
# nested layout). Kinds: str, int, bool, map (string map), bmap (bytes map, base64 in JSON),
# strs (repeated string), msg (nested message), msgs (repeated message). Fields not listed
# (probes, resources, volumes...) are dropped: those commands never set them.
Layout = dict[int, tuple[str, str, Any]]
_OBJECT_META: Layout = {
    1: ("name", "str", None),
    2: ("generateName", "str", None),
    3: ("namespace", "str", None),
    11: ("labels", "map", None),
    12: ("annotations", "map", None),
    14: ("finalizers", "strs", None),
}
_SELECTOR: Layout = {
    1: ("matchLabels", "map", None),
    2: (
        "matchExpressions",
        "msgs",
        {1: ("key", "str", None), 2: ("operator", "str", None), 3: ("values", "strs", None)},
    ),
}
_CONTAINER: Layout = {
    1: ("name", "str", None),
    2: ("image", "str", None),
    3: ("command", "strs", None),
    4: ("args", "strs", None),
    5: ("workingDir", "str", None),
    6: (
        "ports",
        "msgs",
        {
            1: ("name", "str", None),
            2: ("hostPort", "int", None),
            3: ("containerPort", "int", None),
            4: ("protocol", "str", None),
        },
    ),
    7: ("env", "msgs", {1: ("name", "str", None), 2: ("value", "str", None)}),
    14: ("imagePullPolicy", "str", None),
}
_POD_SPEC: Layout = {
    2: ("containers", "msgs", _CONTAINER),
    3: ("restartPolicy", "str", None),
    4: ("terminationGracePeriodSeconds", "int", None),
    7: ("nodeSelector", "map", None),
    8: ("serviceAccountName", "str", None),
    10: ("nodeName", "str", None),
    20: ("initContainers", "msgs", _CONTAINER),
}
_TEMPLATE: Layout = {1: ("metadata", "msg", _OBJECT_META), 2: ("spec", "msg", _POD_SPEC)}
_DEPLOYMENT: Layout = {
    1: ("metadata", "msg", _OBJECT_META),
    2: (
        "spec",
        "msg",
        {
            1: ("replicas", "int", None),
            2: ("selector", "msg", _SELECTOR),
            3: ("template", "msg", _TEMPLATE),
            5: ("minReadySeconds", "int", None),
            6: ("revisionHistoryLimit", "int", None),
            7: ("paused", "bool", None),
            9: ("progressDeadlineSeconds", "int", None),
        },
    ),
}
_POD: Layout = {1: ("metadata", "msg", _OBJECT_META), 2: ("spec", "msg", _POD_SPEC)}
_METADATA_ONLY: Layout = {1: ("metadata", "msg", _OBJECT_META)}
_CONFIGMAP: Layout = {
    **_METADATA_ONLY,
    2: ("data", "map", None),
    3: ("binaryData", "bmap", None),
    4: ("immutable", "bool", None),
}
_SECRET: Layout = {
    **_METADATA_ONLY,
    2: ("data", "bmap", None),
    3: ("type", "str", None),
    4: ("stringData", "map", None),
    5: ("immutable", "bool", None),
}

# RBAC objects (`kubectl create role|clusterrole|rolebinding|clusterrolebinding`) and what
# `kubectl create token`, `auth can-i` and `auth whoami` post.
_RULE: Layout = {
    1: ("verbs", "strs", None),
    2: ("apiGroups", "strs", None),
    3: ("resources", "strs", None),
    4: ("resourceNames", "strs", None),
    5: ("nonResourceURLs", "strs", None),
}
_ROLE: Layout = {**_METADATA_ONLY, 2: ("rules", "msgs", _RULE)}
_CLUSTER_ROLE: Layout = {
    **_ROLE,
    3: ("aggregationRule", "msg", {1: ("clusterRoleSelectors", "msgs", _SELECTOR)}),
}
_BINDING: Layout = {
    **_METADATA_ONLY,
    2: (
        "subjects",
        "msgs",
        {
            1: ("kind", "str", None),
            2: ("apiGroup", "str", None),
            3: ("name", "str", None),
            4: ("namespace", "str", None),
        },
    ),
    3: (
        "roleRef",
        "msg",
        {1: ("apiGroup", "str", None), 2: ("kind", "str", None), 3: ("name", "str", None)},
    ),
}
_TOKEN_REQUEST: Layout = {
    **_METADATA_ONLY,
    2: (
        "spec",
        "msg",
        {
            1: ("audiences", "strs", None),
            3: (
                "boundObjectRef",
                "msg",
                {
                    1: ("kind", "str", None),
                    2: ("apiVersion", "str", None),
                    3: ("name", "str", None),
                    4: ("uid", "str", None),
                },
            ),
            4: ("expirationSeconds", "int", None),
        },
    ),
}
_ACCESS_REVIEW: Layout = {
    **_METADATA_ONLY,
    2: (
        "spec",
        "msg",
        {
            1: (
                "resourceAttributes",
                "msg",
                {
                    1: ("namespace", "str", None),
                    2: ("verb", "str", None),
                    3: ("group", "str", None),
                    4: ("version", "str", None),
                    5: ("resource", "str", None),
                    6: ("subresource", "str", None),
                    7: ("name", "str", None),
                },
            ),
            2: (
                "nonResourceAttributes",
                "msg",
                {1: ("path", "str", None), 2: ("verb", "str", None)},
            ),
        },
    ),
}


# `kubectl autoscale` posts an autoscaling/v1 HPA (its v2 message has other fields).
_HPA_V1: Layout = {
    **_METADATA_ONLY,
    2: (
        "spec",
        "msg",
        {
            1: (
                "scaleTargetRef",
                "msg",
                {
                    1: ("kind", "str", None),
                    2: ("name", "str", None),
                    3: ("apiVersion", "str", None),
                },
            ),
            2: ("minReplicas", "int", None),
            3: ("maxReplicas", "int", None),
            4: ("targetCPUUtilizationPercentage", "int", None),
        },
    ),
}


def _message(data: bytes, layout: Layout) -> dict[str, Any]:
    """Decode a message by its layout (fields it does not list are skipped)."""
    result: dict[str, Any] = {}
    for number, value in _fields(data):
        if number not in layout:
            continue
        name, kind, sub = layout[number]
        if kind == "str" and _text(value):
            result[name] = _text(value)
        elif kind == "int" and isinstance(value, int):
            result[name] = value - (1 << 64) if value >= 1 << 63 else value
        elif kind == "bool" and isinstance(value, int):
            result[name] = bool(value)
        elif kind == "map":
            key, item = _entry(value)
            result.setdefault(name, {})[key] = item.decode()
        elif kind == "bmap":
            key, item = _entry(value)
            result.setdefault(name, {})[key] = base64.b64encode(item).decode()
        elif kind == "strs":
            result.setdefault(name, []).append(_text(value))
        elif kind == "msg" and isinstance(value, bytes):
            result[name] = _message(value, sub)
        elif kind == "msgs" and isinstance(value, bytes):
            result.setdefault(name, []).append(_message(value, sub))
    return result


_KINDS: dict[str, Callable[[bytes], dict[str, Any]]] = {
    "Deployment": lambda data: _message(data, _DEPLOYMENT),
    "Pod": lambda data: _message(data, _POD),
    "Namespace": lambda data: _message(data, _METADATA_ONLY),
    "ConfigMap": lambda data: _message(data, _CONFIGMAP),
    "Secret": lambda data: _message(data, _SECRET),
    "ServiceAccount": lambda data: _message(data, _METADATA_ONLY),  # only its metadata is kept
    "Role": lambda data: _message(data, _ROLE),
    "ClusterRole": lambda data: _message(data, _CLUSTER_ROLE),
    "RoleBinding": lambda data: _message(data, _BINDING),
    "ClusterRoleBinding": lambda data: _message(data, _BINDING),
    "TokenRequest": lambda data: _message(data, _TOKEN_REQUEST),
    "SelfSubjectAccessReview": lambda data: _message(data, _ACCESS_REVIEW),
    "SelfSubjectReview": lambda data: _message(data, _METADATA_ONLY),
    "SelfSubjectRulesReview": lambda data: _message(
        data, {**_METADATA_ONLY, 2: ("spec", "msg", {1: ("namespace", "str", None)})}
    ),
    # by API version too where the versions' messages differ
    "autoscaling/v1 HorizontalPodAutoscaler": lambda data: _message(data, _HPA_V1),
}


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a Kubernetes protobuf body."""
    if not body.startswith(MAGIC):
        raise ProtobufError("the body does not start with the Kubernetes protobuf magic")
    api_version = kind = ""
    raw = b""
    for number, value in _fields(body[len(MAGIC) :]):
        if number == 1 and isinstance(value, bytes):
            for sub, part in _fields(value):
                if sub == 1:
                    api_version = _text(part)
                elif sub == 2:
                    kind = _text(part)
        elif number == 2 and isinstance(value, bytes):
            raw = value
    decoder = _KINDS.get(f"{api_version} {kind}") or _KINDS.get(kind)
    if decoder is None:
        raise ProtobufError(
            f"cannot decode a protobuf {kind or 'object'} ({api_version}); this server reads "
            f"protobuf only for {', '.join(sorted(_KINDS))}: send JSON instead"
        )
    obj = decoder(raw)
    return {"apiVersion": api_version, "kind": kind, **obj}
