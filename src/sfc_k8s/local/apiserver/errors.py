"""Kubernetes-shaped API errors of the local API server.

The store and the admission code raise `StatusError`; the HTTP scaffold (`app.py`) turns it into
a `Status` object with the same code, reason, message and details that a real API server sends,
so that kubectl and Kopf print and branch on it exactly as they would against a real cluster.
(The server's side of an error; a client's view of one is `sfc_k8s.kube.ApiError`.)
"""

from __future__ import annotations

from typing import Any


class StatusError(Exception):
    """An error answered as a `Status` object: `code` is the HTTP status."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        """The `Status` body for this error."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _qualified(plural: str, group: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, group: str, name: str) -> StatusError:
    """404 for a missing object of a known resource."""
    return StatusError(
        404,
        "NotFound",
        f'{_qualified(plural, group)} "{name}" not found',
        details={"name": name, "group": group, "kind": plural},
    )


def resource_not_found(path: str) -> StatusError:
    """404 for a URL that names no served resource."""
    return StatusError(
        404,
        "NotFound",
        "the server could not find the requested resource",
        details={
            "causes": [
                {"reason": "UnexpectedServerResponse", "message": f"404 page not found: {path}"}
            ]
        },
    )


def already_exists(plural: str, group: str, name: str) -> StatusError:
    """409 for a create of a name already taken."""
    return StatusError(
        409,
        "AlreadyExists",
        f'{_qualified(plural, group)} "{name}" already exists',
        details={"name": name, "group": group, "kind": plural},
    )


def conflict(plural: str, group: str, name: str, why: str) -> StatusError:
    """409 for a failed optimistic-concurrency precondition."""
    return StatusError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(plural, group)} "{name}": {why}',
        details={"name": name, "group": group, "kind": plural},
    )


def stale(plural: str, group: str, name: str) -> StatusError:
    """409 for an update carrying an outdated resourceVersion."""
    return conflict(
        plural,
        group,
        name,
        "the object has been modified; please apply your changes to the latest version "
        "and try again",
    )


class Cause:
    """One field error of a 422 Invalid answer."""

    def __init__(self, field: str, reason: str, message: str) -> None:
        self.field = field
        self.reason = reason
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def invalid(kind: str, group: str, name: str, causes: list[Cause]) -> StatusError:
    """422 listing the field errors of a rejected object."""
    qualified = f"{kind}.{group}" if group else kind
    summary = str(causes[0]) if len(causes) == 1 else "[" + ", ".join(map(str, causes)) + "]"
    return StatusError(
        422,
        "Invalid",
        f'{qualified} "{name}" is invalid: {summary}',
        details={
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [c.as_dict() for c in causes],
        },
    )


def bad_request(message: str) -> StatusError:
    """400 for a body or query the server cannot understand."""
    return StatusError(400, "BadRequest", message)


def method_not_allowed(method: str, what: str) -> StatusError:
    """405 for a verb the resource does not support."""
    return StatusError(
        405,
        "MethodNotAllowed",
        f"the server does not allow this method on the requested resource: {method} {what}",
    )


def gone(requested: int, oldest: int) -> StatusError:
    """410 for a watch or list from a resourceVersion no longer kept."""
    return StatusError(410, "Expired", f"too old resource version: {requested} ({oldest})")


def forbidden(plural: str, group: str, name: str, why: str) -> StatusError:
    """403, used for creations in a terminating namespace."""
    return StatusError(
        403,
        "Forbidden",
        f'{_qualified(plural, group)} "{name}" is forbidden: {why}',
        details={"name": name, "group": group, "kind": plural},
    )


def unsupported_media_type(content_type: str) -> StatusError:
    """415 for a patch type or body encoding the server does not read."""
    return StatusError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown "
        f"format - accepted media types include: application/json, "
        f"application/merge-patch+json, application/json-patch+json, "
        f"application/strategic-merge-patch+json, application/apply-patch+yaml "
        f"(got {content_type!r})",
    )


def internal(message: str) -> StatusError:
    """500, for a write the server could not store."""
    return StatusError(500, "InternalError", f"Internal error occurred: {message}")
