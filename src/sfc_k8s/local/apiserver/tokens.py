"""Service-account tokens: signed JWTs in the format Kubernetes gives pods and TokenRequests.

`TokenIssuer` signs (RS256, with the cluster's ``sa.key``) and verifies tokens whose claims are
those of a Kubernetes bound service-account token: ``iss``, ``sub``
(``system:serviceaccount:NS:NAME``), ``aud``, ``iat``/``nbf``/``exp``, ``jti`` and the
``kubernetes.io`` claim naming the namespace, the service account (name and uid) and, for a
token bound to a pod (the projected token of a later step), the pod. Used by the API server's
access check (`access.py`) to authenticate bearer tokens and by its TokenRequest endpoint
(`POST .../serviceaccounts/NAME/token`, what `kubectl create token` and `local up` call).
Verifying the signature is the issuer's part; that the service account (and pod) still exist
with the token's uid is checked by the caller, against the store.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCE = ISSUER  # what kube-apiserver accepts by default (--api-audiences = the issuer)
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600  # the TokenRequest API's lower bound


class TokenError(Exception):
    """A token that cannot be trusted; the message says why (never shown to the client)."""


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says."""

    namespace: str
    service_account: str
    service_account_uid: str
    audiences: tuple[str, ...]
    expires: int
    pod_name: str = ""
    pod_uid: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key_id(key: rsa.RSAPublicKey) -> str:
    """A stable id of the signing key (as kube-apiserver's ``kid``: a hash of the public key)."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _b64(hashlib.sha256(der).digest())


class TokenIssuer:
    """Signs and verifies service-account tokens with one RSA key."""

    def __init__(self, key: rsa.RSAPrivateKey, *, issuer: str = ISSUER) -> None:
        self._key = key
        self._public = key.public_key()
        self.issuer = issuer
        self.key_id = _key_id(self._public)

    def issue(
        self,
        namespace: str,
        name: str,
        uid: str,
        *,
        audiences: Sequence[str] = (API_AUDIENCE,),
        expiration_seconds: int = DEFAULT_EXPIRATION,
        pod: tuple[str, str] | None = None,
        now: float | None = None,
    ) -> tuple[str, int]:
        """A token for service account ``namespace/name`` (``uid``), optionally bound to
        ``pod`` (name, uid); returns it and its expiry (seconds since the epoch)."""
        issued = int(time.time() if now is None else now)
        expires = issued + expiration_seconds
        private: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": uid},
        }
        if pod is not None:
            private["pod"] = {"name": pod[0], "uid": pod[1]}
        claims = {
            "aud": list(audiences),
            "exp": expires,
            "iat": issued,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": private,
            "nbf": issued,
            "sub": f"system:serviceaccount:{namespace}:{name}",
        }
        header = {"alg": "RS256", "kid": self.key_id}
        signing_input = ".".join(
            _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}", expires

    def verify(
        self, token: str, *, audience: str = API_AUDIENCE, now: float | None = None
    ) -> TokenClaims:
        """The claims of ``token`` if this issuer signed it, it is within its validity and is
        meant for ``audience``; else a TokenError."""
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("not a JWT")
        try:
            header = json.loads(_unb64(parts[0]))
            claims = json.loads(_unb64(parts[1]))
            signature = _unb64(parts[2])
        except ValueError as err:
            raise TokenError(f"malformed JWT: {err}") from err
        if not isinstance(header, dict) or header.get("alg") != "RS256":
            raise TokenError("unexpected signing algorithm")
        try:
            self._public.verify(
                signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature as err:
            raise TokenError("invalid signature") from err
        return self._check_claims(claims, audience, time.time() if now is None else now)

    def _check_claims(self, claims: Any, audience: str, now: float) -> TokenClaims:
        if not isinstance(claims, dict) or claims.get("iss") != self.issuer:
            raise TokenError("another issuer")
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences or []
        if audience not in audiences:
            raise TokenError(f"not meant for {audience}")
        try:
            expires, not_before = int(claims["exp"]), int(claims.get("nbf", 0))
            private = claims["kubernetes.io"]
            account = private["serviceaccount"]
            pod = private.get("pod") or {}
            result = TokenClaims(
                namespace=str(private["namespace"]),
                service_account=str(account["name"]),
                service_account_uid=str(account["uid"]),
                audiences=tuple(str(a) for a in audiences),
                expires=expires,
                pod_name=str(pod.get("name", "")),
                pod_uid=str(pod.get("uid", "")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise TokenError(f"missing or malformed claim: {err}") from err
        if now >= expires:
            raise TokenError("expired")
        if now < not_before:
            raise TokenError("not yet valid")
        return result
