"""A minimal OpenAPI v3 description of the served resources, for kubectl.

kubectl 1.32 reads `/openapi/v3` before `apply`/`create` to learn whether the server validates
fields itself (the `fieldValidation` query parameter of each kind's PATCH operation); without it
kubectl refuses to send the object unless run with `--validate=false`. This module answers that
question for every served kind and publishes CRD schemas (so `kubectl explain` works for custom
resources). Built-in kinds carry no schema: kubectl then computes strategic merge patches from
its compiled-in types.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sfc_k8s.local.apiserver import errors
from sfc_k8s.local.apiserver.resources import Registry, ResourceType


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _schema_name(rtype: ResourceType) -> str:
    reversed_group = (
        ".".join(reversed(rtype.group.split("."))) if rtype.group else "io.k8s.api.core"
    )
    return f"{reversed_group}.{rtype.version}.{rtype.kind}"


def _gvk(rtype: ResourceType) -> dict[str, str]:
    return {"group": rtype.group, "version": rtype.version, "kind": rtype.kind}


def group_version(registry: Registry, gv_path: str) -> dict[str, Any]:
    """The OpenAPI v3 document of one group/version (`api/v1`, `apis/apps/v1`)."""
    parts = gv_path.split("/")
    if parts[:1] == ["api"] and len(parts) == 2:
        group, version = "", parts[1]
    elif parts[:1] == ["apis"] and len(parts) == 3:
        group, version = parts[1], parts[2]
    else:
        raise errors.resource_not_found(f"/openapi/v3/{gv_path}")
    types = registry.in_group_version(group, version)
    if not types:
        raise errors.resource_not_found(f"/openapi/v3/{gv_path}")
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    field_validation = {
        "name": "fieldValidation",
        "in": "query",
        "schema": {"type": "string"},
        "uniqueItems": True,
    }
    for rtype in types:
        prefix = f"/{_gv_path(group, version)}"
        scope = "/namespaces/{namespace}" if rtype.namespaced else ""
        operation = {
            "x-kubernetes-group-version-kind": _gvk(rtype),
            "parameters": [field_validation],
            "responses": {"200": {"description": "OK"}},
        }
        paths[f"{prefix}{scope}/{rtype.plural}/{{name}}"] = {
            "patch": operation,
            "put": operation,
            "get": operation,
            "delete": operation,
        }
        paths[f"{prefix}{scope}/{rtype.plural}"] = {"post": operation, "get": operation}
        if rtype.schema is not None:
            schemas[_schema_name(rtype)] = {
                **rtype.schema,
                "x-kubernetes-group-version-kind": [_gvk(rtype)],
            }
    return {
        "openapi": "3.0.0",
        "info": {"title": "sfc-k8s local API server", "version": "v1.32"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def root(registry: Registry) -> dict[str, Any]:
    """`/openapi/v3`: one entry per group/version, with a hash that changes with its content."""
    paths: dict[str, Any] = {}
    for group, versions in registry.groups().items():
        for version in versions:
            gv = _gv_path(group, version)
            digest = (
                hashlib.sha256(json.dumps(group_version(registry, gv), sort_keys=True).encode())
                .hexdigest()[:32]
                .upper()
            )
            paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
    return {"paths": paths}


# kubectl asks for the v2 document as protobuf (gnostic's openapi_v2.Document). Only when the v3
# document has no group/version for a kind does kubectl look at v2; an empty Document (field 1,
# `swagger: "2.0"`) makes it skip client-side validation of such unknown kinds, so that it goes
# on to report them as `no matches for kind`, as against a real server.
SWAGGER_PROTOBUF = b"\x0a\x03" + b"2.0"
SWAGGER_PROTOBUF_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def swagger(registry: Registry) -> dict[str, Any]:
    """`/openapi/v2`: the same operations in Swagger 2.0 form (kubectl's fallback)."""
    paths: dict[str, Any] = {}
    for group, versions in registry.groups().items():
        for version in versions:
            paths.update(group_version(registry, _gv_path(group, version))["paths"])
    return {
        "swagger": "2.0",
        "info": {"title": "sfc-k8s local API server", "version": "v1.32"},
        "paths": paths,
        "definitions": {},
    }
