"""Authentication and RBAC authorization of every request to the local API server (aiohttp glue).

`Access` is what `server.APIServer` adds to the scaffold when it serves HTTPS (`pki` given):
- a middleware that authenticates each request (a client certificate signed by the cluster CA:
  CN = user, O = groups; a bearer token: a service-account token of `tokens.TokenIssuer`, or
  the server's own loopback token; nothing: `system:anonymous`), answers a token it cannot
  trust with 401, applies impersonation headers (`kubectl --as`) the user may use, then asks
  `rbac.authorize` about the request's attributes against the store's Roles, ClusterRoles and
  bindings and answers a denial with Kubernetes' 403 (and records, per user, what was granted
  and denied: `USED_PATH`);
- routes for what clients ask of authentication itself: TokenRequest
  (`POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`, `kubectl create token`),
  SelfSubjectAccessReview (`kubectl auth can-i`), SelfSubjectRulesReview (`kubectl auth can-i
  --list`) and SelfSubjectReview (`kubectl auth whoami`).
The decisions are `rbac.py`'s pure functions; this module only gathers their inputs. The RBAC
objects are indexed once and again only after one of them changes (a store listener).
"""

from __future__ import annotations

import datetime
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from sfc_k8s.api.timestamps import format_rfc3339
from sfc_k8s.local.apiserver import errors, protobuf, rbac
from sfc_k8s.local.apiserver.errors import StatusError
from sfc_k8s.local.apiserver.store import Event, Store, meta
from sfc_k8s.local.apiserver.tokens import (
    API_AUDIENCE,
    DEFAULT_EXPIRATION,
    MIN_EXPIRATION,
    TokenClaims,
    TokenError,
    TokenIssuer,
)

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RBAC_GROUP = "rbac.authorization.k8s.io"
_RBAC_KEYS = {
    (RBAC_GROUP, plural)
    for plural in ("roles", "clusterroles", "rolebindings", "clusterrolebindings")
}
LOOPBACK_USER = rbac.User("system:apiserver", (rbac.SUPERUSER_GROUP, rbac.AUTHENTICATED))
TOKEN_CACHE_SECONDS = 10.0  # kube-apiserver's default success TTL for token authentication
TOKEN_CACHE_SIZE = 4096
USED_PATH = "/debug/rbac/used"
USER_KEY = web.RequestKey("user", rbac.User)  # where the middleware leaves the request's user


def unauthorized() -> StatusError:
    return StatusError(401, "Unauthorized", "Unauthorized")


def _certificate_user(peercert: Mapping[str, Any]) -> rbac.User | None:
    """The user of a verified client certificate: CN is the name, each O a group."""
    name, groups = "", []
    for rdn in peercert.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                name = value
            elif key == "organizationName":
                groups.append(value)
    if not name:
        return None
    return rbac.User(name, (*groups, rbac.AUTHENTICATED))


class Access:
    """Authentication and authorization for one server and its store."""

    def __init__(self, store: Store, issuer: TokenIssuer, *, authorization: bool = True) -> None:
        """``authorization``: enforce RBAC (False: kube-apiserver's AlwaysAllow mode; requests
        are still authenticated)."""
        self.store = store
        self.issuer = issuer
        self.authorization = authorization
        self.loopback_token = secrets.token_urlsafe(32)
        self._policy: rbac.Policy | None = None
        # user -> the permissions RBAC granted (denied) it so far, as (verb, apiGroup,
        # resource[/sub]); served at USED_PATH so that a test can find granted permissions
        # nobody uses, and needed ones that are missing
        self.used: dict[str, set[tuple[str, str, str]]] = {}
        self.denied: dict[str, set[tuple[str, str, str]]] = {}
        # token -> its claims and when its signature was checked (monotonic seconds)
        self._tokens: dict[str, tuple[TokenClaims, float]] = {}
        store.listeners.append(self._changed)

    # ----- the policy ----------------------------------------------------------------------

    def _changed(self, key: tuple[str, str], event: Event) -> None:
        del event
        if key in _RBAC_KEYS:
            self._policy = None

    def policy(self) -> rbac.Policy:
        """The store's RBAC objects, aggregated ClusterRoles filled in."""
        if self._policy is None:
            store = self.store
            self._policy = rbac.Policy.of(
                roles=store.objects((RBAC_GROUP, "roles")),
                cluster_roles=rbac.aggregate_cluster_roles(
                    store.objects((RBAC_GROUP, "clusterroles"))
                ),
                role_bindings=store.objects((RBAC_GROUP, "rolebindings")),
                cluster_role_bindings=store.objects((RBAC_GROUP, "clusterrolebindings")),
            )
        return self._policy

    def bootstrap(self) -> int:
        """Create the default ClusterRoles and bindings that are missing; how many were."""
        created = 0
        roles, bindings = rbac.bootstrap_policy()
        for plural, objects in (("clusterroles", roles), ("clusterrolebindings", bindings)):
            rtype = self.store.resource(RBAC_GROUP, "v1", plural)
            for obj in objects:
                if self.store.find(rtype.key, None, obj["metadata"]["name"]) is None:
                    self.store.create(rtype, None, obj)
                    created += 1
        return created

    # ----- authentication ------------------------------------------------------------------

    def _verified(self, token: str) -> TokenClaims:
        """The token's claims, its signature checked at most once per TOKEN_CACHE_SECONDS (as
        kube-apiserver caches token authentications); its validity is checked every time."""
        now = time.monotonic()
        cached = self._tokens.get(token)
        if cached is not None and now - cached[1] < TOKEN_CACHE_SECONDS:
            if time.time() < cached[0].expires:
                return cached[0]
            raise TokenError("expired")
        claims = self.issuer.verify(token)
        if len(self._tokens) >= TOKEN_CACHE_SIZE:
            self._tokens.clear()
        self._tokens[token] = (claims, now)
        return claims

    def token_user(self, token: str) -> rbac.User:
        """The user a bearer token stands for; 401 if it cannot be trusted."""
        if secrets.compare_digest(token.encode(), self.loopback_token.encode()):
            return LOOPBACK_USER
        try:
            claims = self._verified(token)
        except TokenError as err:
            logger.info("refused a bearer token: %s", err)
            raise unauthorized() from err
        account = self.store.find(("", "serviceaccounts"), claims.namespace, claims.service_account)
        if account is None or meta(account).get("uid") != claims.service_account_uid:
            logger.info(
                "refused the token of service account %s/%s: it no longer exists",
                claims.namespace,
                claims.service_account,
            )
            raise unauthorized()
        if claims.pod_uid:
            pod = self.store.find(("", "pods"), claims.namespace, claims.pod_name)
            if pod is None or meta(pod).get("uid") != claims.pod_uid:
                raise unauthorized()
        return rbac.service_account_user(
            claims.namespace, claims.service_account, uid=claims.service_account_uid
        )

    def authenticate(self, request: web.Request) -> rbac.User:
        """The request's user; 401 for a bearer token that is not valid."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return self.token_user(token.strip())
        if header:
            raise unauthorized()  # basic credentials: no such users here
        transport = request.transport
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        if peercert:
            user = _certificate_user(peercert)
            if user is not None:
                return user
        return rbac.anonymous_user()

    # ----- the middleware ------------------------------------------------------------------

    def _impersonate(self, request: web.Request, user: rbac.User) -> rbac.User:
        """The user ``Impersonate-User``/``Impersonate-Group`` name, if ``user`` may act as
        them (403 naming the first permission it lacks)."""
        name = request.headers.get("Impersonate-User", "")
        groups = request.headers.getall("Impersonate-Group", [])
        if not name:
            if groups:
                raise errors.bad_request("Impersonate-Group needs an Impersonate-User")
            return user
        for check in rbac.impersonation_checks(name, groups):
            if self.authorization and not rbac.authorize(self.policy(), user, check).allowed:
                status = rbac.forbidden_status(user, check)
                raise StatusError(403, "Forbidden", status["message"], details=status["details"])
        return rbac.impersonated_user(name, groups)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        user = self._impersonate(request, self.authenticate(request))
        request[USER_KEY] = user
        if self.authorization:
            attrs = rbac.request_attributes(request.method, request.path, request.query)
            decision = rbac.authorize(self.policy(), user, attrs)
            if not decision.allowed:
                status = rbac.forbidden_status(user, attrs)
                if attrs.is_resource_request:
                    self.denied.setdefault(user.name, set()).add(rbac.permission(attrs))
                logger.info("403 %s %s: %s", request.method, request.path_qs, status["message"])
                raise StatusError(403, "Forbidden", status["message"], details=status["details"])
            if attrs.is_resource_request and rbac.SUPERUSER_GROUP not in user.groups:
                self.used.setdefault(user.name, set()).add(rbac.permission(attrs))
        return await handler(request)

    # ----- endpoints -----------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) to route before the scaffold's resource URLs."""
        return [
            ("POST", "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", self._token),
            (
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                self._access_review,
            ),
            ("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", self._rules_review),
            ("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", self._whoami),
            ("GET", USED_PATH, self._used),
        ]

    async def _used(self, request: web.Request) -> web.Response:
        """The permissions each user was granted and denied since the server started
        (cluster-admin only: a non-resource URL no default role grants)."""
        del request
        return web.json_response(
            {
                "allowed": {user: sorted(perms) for user, perms in self.used.items()},
                "denied": {user: sorted(perms) for user, perms in self.denied.items()},
            }
        )

    @staticmethod
    async def _json_body(request: web.Request) -> dict[str, Any]:
        """The body as JSON (kubectl posts these reviews and TokenRequests as protobuf)."""
        raw = await request.read() or b"{}"
        try:
            if "protobuf" in request.headers.get("Content-Type", ""):
                body: Any = protobuf.decode(raw)
            else:
                body = json.loads(raw)
        except protobuf.ProtobufError as err:
            raise StatusError(415, "UnsupportedMediaType", str(err)) from err
        except ValueError as err:
            raise errors.bad_request("the request body is not valid JSON") from err
        if not isinstance(body, dict):
            raise errors.bad_request("the request body is not an object")
        return body

    async def _token(self, request: web.Request) -> web.Response:
        """TokenRequest: a token of the named service account (``spec.audiences``,
        ``spec.expirationSeconds`` >= 600, ``spec.boundObjectRef`` to a pod)."""
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        body = await self._json_body(request)
        spec = body.get("spec") or {}
        account = self.store.get(self.store.resource("", "v1", "serviceaccounts"), namespace, name)
        expiration = spec.get("expirationSeconds") or DEFAULT_EXPIRATION
        if not isinstance(expiration, int) or expiration < MIN_EXPIRATION:
            raise errors.invalid(
                "TokenRequest",
                "authentication.k8s.io",
                name,
                [
                    errors.Cause(
                        "spec.expirationSeconds",
                        "FieldValueInvalid",
                        f"Invalid value: {expiration!r}: may not specify a duration less than "
                        "10 minutes",
                    )
                ],
            )
        pod = self._bound_pod(namespace, spec.get("boundObjectRef"))
        audiences = spec.get("audiences") or [API_AUDIENCE]
        token, expires = self.issuer.issue(
            namespace,
            name,
            str(meta(account).get("uid")),
            audiences=[str(a) for a in audiences],
            expiration_seconds=expiration,
            pod=pod,
        )
        answer = {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {**spec, "audiences": audiences, "expirationSeconds": expiration},
            "status": {
                "token": token,
                "expirationTimestamp": format_rfc3339(
                    datetime.datetime.fromtimestamp(expires, datetime.UTC)
                ),
            },
        }
        return web.json_response(answer, status=201)

    def _bound_pod(self, namespace: str, ref: Any) -> tuple[str, str] | None:
        if not ref:
            return None
        if not isinstance(ref, dict) or ref.get("kind") != "Pod":
            raise errors.bad_request("boundObjectRef: only a Pod is supported here")
        pod = self.store.get(self.store.resource("", "v1", "pods"), namespace, ref.get("name", ""))
        uid = str(meta(pod).get("uid"))
        if ref.get("uid") and ref["uid"] != uid:
            raise errors.conflict("pods", "", ref.get("name", ""), "the pod's uid does not match")
        return str(ref.get("name")), uid

    async def _access_review(self, request: web.Request) -> web.Response:
        """SelfSubjectAccessReview: may the requesting user do what ``spec`` describes?"""
        body = await self._json_body(request)
        spec = body.get("spec") or {}
        user: rbac.User = request[USER_KEY]
        resource = spec.get("resourceAttributes")
        non_resource = spec.get("nonResourceAttributes")
        if isinstance(resource, dict):
            attrs = rbac.Attributes(
                verb=str(resource.get("verb", "")),
                api_group=str(resource.get("group", "")),
                api_version=str(resource.get("version", "")),
                resource=str(resource.get("resource", "")),
                subresource=str(resource.get("subresource", "")),
                namespace=str(resource.get("namespace", "")),
                name=str(resource.get("name", "")),
            )
        elif isinstance(non_resource, dict):
            attrs = rbac.Attributes(
                verb=str(non_resource.get("verb", "")), path=str(non_resource.get("path", ""))
            )
        else:
            raise errors.bad_request("exactly one of resourceAttributes or nonResourceAttributes")
        decision = (
            rbac.authorize(self.policy(), user, attrs)
            if self.authorization
            else rbac.Decision(True, "AlwaysAllow")
        )
        status: dict[str, Any] = {"allowed": decision.allowed}
        if decision.reason:
            status["reason"] = decision.reason
        answer = {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }
        return web.json_response(answer, status=201)

    async def _rules_review(self, request: web.Request) -> web.Response:
        """SelfSubjectRulesReview (`kubectl auth can-i --list`): the requesting user's rules in
        ``spec.namespace``."""
        body = await self._json_body(request)
        spec = body.get("spec") or {}
        user = request[USER_KEY]
        resource_rules, url_rules = [], []
        for rule in rbac.rules_for(self.policy(), user, str(spec.get("namespace") or "")):
            if rule.get("nonResourceURLs"):
                url_rules.append(
                    {"verbs": rule.get("verbs") or [], "nonResourceURLs": rule["nonResourceURLs"]}
                )
            if rule.get("resources"):
                keys = ("verbs", "apiGroups", "resources", "resourceNames")
                resource_rules.append({k: rule[k] for k in keys if rule.get(k)})
        answer = {
            "kind": "SelfSubjectRulesReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": {
                "resourceRules": resource_rules,
                "nonResourceRules": url_rules,
                "incomplete": not self.authorization,
            },
        }
        return web.json_response(answer, status=201)

    async def _whoami(self, request: web.Request) -> web.Response:
        user: rbac.User = request[USER_KEY]
        info: dict[str, Any] = {"username": user.name, "groups": list(user.groups)}
        if user.uid:
            info["uid"] = user.uid
        answer = {
            "kind": "SelfSubjectReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "status": {"userInfo": info},
        }
        return web.json_response(answer, status=201)
