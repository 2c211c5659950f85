"""Service-account tokens and the cluster PKI (`local/apiserver/tokens.py`, `pki.py`).

Covers: a token carries Kubernetes' claims and verifies; a pod-bound token names its pod; a
token signed by another key, altered claims, an expired or not-yet-valid token, another audience
or issuer, and what is not a JWT are refused; `ensure_pki` makes a CA whose certificates verify,
keeps existing files (so tokens and kubeconfigs survive a restart), and writes keys owner-only.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sfc_k8s.local.apiserver import Store
from sfc_k8s.local.apiserver import pki as pki_files
from sfc_k8s.local.apiserver.access import Access
from sfc_k8s.local.apiserver.errors import StatusError
from sfc_k8s.local.apiserver.tokens import API_AUDIENCE, TokenClaims, TokenError, TokenIssuer

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NOW = 1_800_000_000.0


def _payload(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def test_token_carries_kubernetes_claims_and_verifies() -> None:
    issuer = TokenIssuer(KEY)
    token, expires = issuer.issue("sfc-system", "agent", "uid-1", expiration_seconds=900, now=NOW)
    assert expires == NOW + 900
    claims = _payload(token)
    assert claims["sub"] == "system:serviceaccount:sfc-system:agent"
    assert claims["aud"] == [API_AUDIENCE]
    assert claims["kubernetes.io"] == {
        "namespace": "sfc-system",
        "serviceaccount": {"name": "agent", "uid": "uid-1"},
    }
    verified = issuer.verify(token, now=NOW + 899)
    assert (verified.namespace, verified.service_account, verified.service_account_uid) == (
        "sfc-system",
        "agent",
        "uid-1",
    )
    assert not verified.pod_uid


def test_pod_bound_token_names_its_pod() -> None:
    issuer = TokenIssuer(KEY)
    token, _ = issuer.issue("ns", "sa", "u", pod=("web-1", "pod-uid"), now=NOW)
    claims = issuer.verify(token, now=NOW)
    assert (claims.pod_name, claims.pod_uid) == ("web-1", "pod-uid")


def _tampered(token: str) -> str:
    header, _, signature = token.split(".")
    claims = _payload(token)
    claims["sub"] = "system:serviceaccount:kube-system:admin"
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{raw}.{signature}"


@pytest.mark.parametrize(
    ("make", "verify_at", "audience"),
    [
        (lambda: TokenIssuer(OTHER_KEY).issue("ns", "sa", "u", now=NOW)[0], NOW, API_AUDIENCE),
        (lambda: _tampered(TokenIssuer(KEY).issue("ns", "sa", "u", now=NOW)[0]), NOW, API_AUDIENCE),
        (lambda: TokenIssuer(KEY).issue("ns", "sa", "u", now=NOW)[0], NOW + 3600, API_AUDIENCE),
        (lambda: TokenIssuer(KEY).issue("ns", "sa", "u", now=NOW)[0], NOW - 60, API_AUDIENCE),
        (lambda: TokenIssuer(KEY).issue("ns", "sa", "u", now=NOW)[0], NOW, "https://vault"),
        (
            lambda: TokenIssuer(KEY, issuer="https://elsewhere").issue("ns", "sa", "u", now=NOW)[0],
            NOW,
            API_AUDIENCE,
        ),
        (lambda: "not-a-jwt", NOW, API_AUDIENCE),
        (lambda: "a.b.c", NOW, API_AUDIENCE),
    ],
    ids=[
        "other-key",
        "altered",
        "expired",
        "not-yet-valid",
        "other-audience",
        "other-issuer",
        "no-jwt",
        "garbage",
    ],
)
def test_untrustworthy_tokens_are_refused(make, verify_at: float, audience: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TokenError):
        TokenIssuer(KEY).verify(make(), now=verify_at, audience=audience)


class CountingIssuer(TokenIssuer):
    verified = 0

    def verify(self, token: str, **kwargs: Any) -> TokenClaims:
        self.verified += 1
        return super().verify(token, **kwargs)


def test_the_server_checks_a_signature_once_and_the_account_and_expiry_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = Store()
    accounts = store.resource("", "v1", "serviceaccounts")
    uid = store.create(accounts, "default", {"metadata": {"name": "a"}})["metadata"]["uid"]
    issuer = CountingIssuer(KEY)
    access = Access(store, issuer)
    token, _ = issuer.issue("default", "a", uid)
    for _ in range(5):
        assert access.token_user(token).name == "system:serviceaccount:default:a"
    assert issuer.verified == 1
    # expiring while cached: refused once its time is up
    soon, expires = issuer.issue("default", "a", uid, expiration_seconds=600)
    assert access.token_user(soon).uid == uid
    monkeypatch.setattr(time, "time", lambda: expires + 1.0)  # the wall clock passes expiry
    with pytest.raises(StatusError) as expired:
        access.token_user(soon)
    assert expired.value.code == 401
    # its account deleted: refused at once, cache or not
    store.delete(accounts, "default", "a", {})
    with pytest.raises(StatusError) as gone:
        access.token_user(token)
    assert gone.value.code == 401


def test_pki_is_made_once_and_its_certificates_verify(tmp_path: Path) -> None:
    made = pki_files.ensure_pki(tmp_path / "pki")
    first = {p.name: p.read_bytes() for p in made.directory.iterdir()}
    assert set(first) == {
        "ca.crt",
        "ca.key",
        "apiserver.crt",
        "apiserver.key",
        "admin.crt",
        "admin.key",
        "sa.key",
    }
    for key in ("ca.key", "apiserver.key", "admin.key", "sa.key"):
        assert (made.directory / key).stat().st_mode & 0o077 == 0, key
    again = pki_files.ensure_pki(tmp_path / "pki")
    assert {p.name: p.read_bytes() for p in again.directory.iterdir()} == first
    # a TLS handshake as kubectl and the server make it: both certificates chain to the CA,
    # the serving one is valid for 127.0.0.1, the admin one says who the client is
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(made.ca_cert))
    server.load_cert_chain(str(made.serving_cert), str(made.serving_key))
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(cafile=str(made.ca_cert))
    client.load_cert_chain(str(made.admin_cert), str(made.admin_key))
    left, right = socket.socketpair()
    peer: list[object] = []

    def serve() -> None:
        with server.wrap_socket(left, server_side=True) as tls:
            peer.append(tls.getpeercert())

    thread = threading.Thread(target=serve)
    thread.start()
    with client.wrap_socket(right, server_hostname="127.0.0.1") as tls:
        tls.do_handshake()
    thread.join(10)
    subject = dict(item[0] for item in peer[0]["subject"])  # type: ignore[index]
    assert subject == {"commonName": "kubernetes-admin", "organizationName": "system:masters"}


def test_a_certificate_of_another_ca_is_refused(tmp_path: Path) -> None:
    ours = pki_files.ensure_pki(tmp_path / "ours")
    theirs = pki_files.ensure_pki(tmp_path / "theirs")
    client = ssl.create_default_context(cafile=str(ours.ca_cert))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(str(theirs.serving_cert), str(theirs.serving_key))
    left, right = socket.socketpair()
    thread = threading.Thread(target=lambda: _handshake_quietly(server, left))
    thread.start()
    with pytest.raises(ssl.SSLCertVerificationError):
        client.wrap_socket(right, server_hostname="127.0.0.1")
    right.close()
    thread.join(10)


def _handshake_quietly(context: ssl.SSLContext, sock: socket.socket) -> None:
    try:
        context.wrap_socket(sock, server_side=True).close()
    except (ssl.SSLError, OSError):
        sock.close()
