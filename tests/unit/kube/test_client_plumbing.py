"""The shared Kubernetes client plumbing (``sfc_k8s.kube``): kubeconfig, TLS and errors.

Covers: the current context (or the only one when none is named), server, token from a file,
inline certificate data kept in memory, basic credentials as a header, a clear error for a
context without a server; TLS only for https and verification off only when asked; the error
subclass chosen by status with the Status reason and message, and which errors are retryable.
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import pytest

from sfc_k8s.kube import (
    ApiError,
    ConflictError,
    Connection,
    GoneError,
    KubeconfigError,
    NotFoundError,
    api_error,
    auth_headers,
    load_kubeconfig,
    ssl_context,
)


def test_without_current_context_the_first_context_is_used(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t0k\n")
    config = tmp_path / "config"
    config.write_text(
        f"""
contexts: [{{name: a, context: {{cluster: c, user: u}}}}]
clusters: [{{name: c, cluster: {{server: "https://h:6443/", certificate-authority-data: "{
            base64.b64encode(b"PEM").decode()
        }"}}}}]
users: [{{name: u, user: {{tokenFile: token}}}}]
"""
    )
    conn = load_kubeconfig(config)
    assert conn.server == "https://h:6443"
    assert conn.ca_data == b"PEM" and conn.ca_path is None
    assert conn.token == "t0k"
    assert auth_headers(conn) == {"Authorization": "Bearer t0k"}


def test_a_context_without_a_server_is_named(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("current-context: a\ncontexts: [{name: a, context: {cluster: gone}}]\n")
    with pytest.raises(KubeconfigError, match="context 'a' names no cluster with a server"):
        load_kubeconfig(config)


def test_basic_credentials_become_a_header() -> None:
    conn = Connection(server="http://h", username="u", password="p")
    assert auth_headers(conn) == {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    assert auth_headers(Connection(server="http://h")) == {}


def test_tls_only_for_https_and_verification_off_only_when_asked() -> None:
    assert ssl_context(Connection(server="http://h")) is None
    verified = ssl_context(Connection(server="https://h"))
    assert verified is not None and verified.verify_mode is ssl.CERT_REQUIRED
    insecure = ssl_context(Connection(server="https://h", insecure=True))
    assert insecure is not None and insecure.verify_mode is ssl.CERT_NONE


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (404, NotFoundError, False),
        (409, ConflictError, True),
        (410, GoneError, False),
        (422, ApiError, False),
        (429, ApiError, True),
        (503, ApiError, True),
    ],
)
def test_errors_by_status(status: int, cls: type[ApiError], retryable: bool) -> None:
    body = b'{"kind": "Status", "reason": "Why", "message": "what happened"}'
    err = api_error("GET", "/api/v1/pods/x", status, body)
    assert type(err) is cls
    assert (err.status, err.reason, err.message) == (status, "Why", "what happened")
    assert err.retryable is retryable
    assert str(err) == f"GET /api/v1/pods/x failed: HTTP {status} Why: what happened"


def test_a_body_that_is_not_a_status_is_the_message() -> None:
    err = api_error("POST", "/x", 502, b"<html>bad gateway</html>", reason="Bad Gateway")
    assert (err.reason, err.message) == ("Bad Gateway", "<html>bad gateway</html>")
    assert ApiError("GET", "/x", 0, "ClientConnectorError", "refused").retryable
