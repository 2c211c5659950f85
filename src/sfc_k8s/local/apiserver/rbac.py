"""Kubernetes RBAC as pure functions: what a request asks, and whether a set of roles allows it.

The local API server's access check (`access.py`) calls `request_attributes` on every request
to learn its verb, API group, resource, subresource, namespace and name (as the Kubernetes API
server's request-info resolver does, from the URL alone), then `authorize` with the RBAC objects
of the store (a `Policy`). A denial is answered with `forbidden_status`, the `Status` a real
server sends. `bootstrap_policy` gives the default ClusterRoles and bindings every cluster has
(the subset this project needs). Nothing here does I/O; `tests/unit/local/test_rbac.py` checks
the rules against the documented RBAC semantics.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = Mapping[str, Any]

SUPERUSER_GROUP = "system:masters"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = "system:anonymous"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"

# Path segments after /namespaces/NAME that address the namespace itself, not a resource in it.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_VERBS_BY_METHOD = {
    "GET": "get",
    "HEAD": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


@dataclass(frozen=True)
class User:
    """Who sent a request, as authentication found out."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def service_account_user(namespace: str, name: str, *, uid: str = "") -> User:
    """The user a service account's token stands for, with the groups Kubernetes gives it."""
    return User(
        f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}",
        (SERVICE_ACCOUNTS_GROUP, f"{SERVICE_ACCOUNTS_GROUP}:{namespace}", AUTHENTICATED),
        uid,
    )


def anonymous_user() -> User:
    return User(ANONYMOUS, (UNAUTHENTICATED,))


@dataclass(frozen=True)
class Attributes:
    """What a request asks for. `resource` is empty for a non-resource request (`path` then)."""

    verb: str
    path: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def is_resource_request(self) -> bool:
        return bool(self.resource)


def _list_verb(query: Mapping[str, str]) -> str:
    return "watch" if query.get("watch") in ("true", "1") else "list"


def _name_from_field_selector(query: Mapping[str, str]) -> str:
    """The name a list or watch is limited to by ``fieldSelector=metadata.name=X`` (resourceNames
    rules can allow it), else ""."""
    selector = query.get("fieldSelector", "")
    for term in selector.split(","):
        key, sep, value = term.partition("==") if "==" in term else term.partition("=")
        if sep and key.strip() == "metadata.name" and not term.strip().startswith("!"):
            name = value.strip()
            if name and "/" not in name and name not in (".", ".."):
                return name
    return ""


def request_attributes(method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """The attributes of a request, from its method, path and query alone.

    ``/api/v1/...`` and ``/apis/GROUP/VERSION/...`` with at least a resource are resource
    requests; everything else (discovery documents, /version, /healthz, /openapi) is a
    non-resource request whose verb is the lower-case HTTP method. A GET without a name is a
    list, or a watch with ``watch=true``; a DELETE without a name a deletecollection."""
    path = urllib.parse.unquote(path)
    parts = [p for p in path.split("/") if p]
    method_verb = _VERBS_BY_METHOD.get(method.upper(), method.lower())
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, parts = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, parts = parts[1], parts[2], parts[3:]
    else:
        return Attributes(verb=method.lower(), path=path)
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) > 1 else ""
    subresource = parts[2] if len(parts) > 2 else ""
    verb = method_verb
    if verb == "get" and not name:
        verb = _list_verb(query)
        name = _name_from_field_selector(query)
    elif verb == "get" and not subresource and query.get("watch") in ("true", "1"):
        verb = "watch"  # the old per-object watch URL, which this server still serves
    elif verb == "delete" and not name:
        verb = "deletecollection"
    return Attributes(
        verb=verb,
        path=path,
        api_group=group,
        api_version=version,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
    )


# ----- rules ------------------------------------------------------------------------------------


def _listed(rule: Obj, key: str) -> Sequence[str]:
    value = rule.get(key) or ()
    return [str(v) for v in value] if isinstance(value, list | tuple) else ()


def _resource_matches(rule_resources: Sequence[str], resource: str, subresource: str) -> bool:
    """``*`` matches everything, ``pods`` the resource only, ``pods/status`` that subresource,
    ``*/status`` the subresource of every resource."""
    wanted = f"{resource}/{subresource}" if subresource else resource
    for item in rule_resources:
        if item in ("*", wanted):
            return True
        if subresource and item == f"*/{subresource}":
            return True
    return False


def _url_matches(rule_urls: Sequence[str], path: str) -> bool:
    """An exact path, ``*``, or a prefix ending in ``*`` (``/healthz/*``)."""
    for item in rule_urls:
        if item in ("*", path):
            return True
        if item.endswith("*") and path.startswith(item[:-1]):
            return True
    return False


def rule_allows(rule: Obj, attrs: Attributes) -> bool:
    """Whether one PolicyRule allows the request (verbs, apiGroups, resources, resourceNames,
    or nonResourceURLs for a non-resource request)."""
    verbs = _listed(rule, "verbs")
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    if not attrs.is_resource_request:
        return _url_matches(_listed(rule, "nonResourceURLs"), attrs.path)
    groups = _listed(rule, "apiGroups")
    if "*" not in groups and attrs.api_group not in groups:
        return False
    if not _resource_matches(_listed(rule, "resources"), attrs.resource, attrs.subresource):
        return False
    names = _listed(rule, "resourceNames")
    return not names or attrs.name in names


def subject_matches(subject: Obj, user: User, binding_namespace: str) -> bool:
    """Whether a binding's subject names the user: a User by name, a Group among the user's
    groups, a ServiceAccount by namespace (the binding's own when not given) and name."""
    kind, name = subject.get("kind"), str(subject.get("name") or "")
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        namespace = str(subject.get("namespace") or binding_namespace)
        return bool(namespace) and user.name == f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"
    return False


# ----- the policy -------------------------------------------------------------------------------


def _key(obj: Obj) -> tuple[str, str]:
    md = obj.get("metadata") or {}
    return (str(md.get("namespace") or ""), str(md.get("name") or ""))


@dataclass(frozen=True)
class Policy:
    """The RBAC objects of a cluster, indexed for `authorize`."""

    roles: Mapping[tuple[str, str], Obj]  # (namespace, name) -> Role
    cluster_roles: Mapping[str, Obj]
    role_bindings: Mapping[str, Sequence[Obj]]  # namespace -> its RoleBindings
    cluster_role_bindings: Sequence[Obj]

    @classmethod
    def of(
        cls,
        *,
        roles: Iterable[Obj] = (),
        cluster_roles: Iterable[Obj] = (),
        role_bindings: Iterable[Obj] = (),
        cluster_role_bindings: Iterable[Obj] = (),
    ) -> Policy:
        by_namespace: dict[str, list[Obj]] = {}
        for binding in role_bindings:
            by_namespace.setdefault(_key(binding)[0], []).append(binding)
        return cls(
            roles={_key(r): r for r in roles},
            cluster_roles={_key(r)[1]: r for r in cluster_roles},
            role_bindings=by_namespace,
            cluster_role_bindings=list(cluster_role_bindings),
        )

    def rules_of(self, role_ref: Obj, namespace: str) -> Sequence[Obj]:
        """The rules a binding's roleRef grants (a Role only from the binding's namespace; a
        missing role grants nothing). Aggregated ClusterRoles carry their rules already
        (`aggregate_cluster_roles`)."""
        name = str(role_ref.get("name") or "")
        if role_ref.get("kind") == "ClusterRole":
            role = self.cluster_roles.get(name)
        elif role_ref.get("kind") == "Role" and namespace:
            role = self.roles.get((namespace, name))
        else:
            role = None
        rules = (role or {}).get("rules") or []
        return rules if isinstance(rules, list) else []


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


def _binding_grants(
    policy: Policy, binding: Obj, namespace: str, user: User, attrs: Attributes
) -> bool:
    subjects = binding.get("subjects") or []
    if not any(subject_matches(s, user, namespace) for s in subjects if isinstance(s, dict)):
        return False
    rules = policy.rules_of(binding.get("roleRef") or {}, namespace)
    return any(rule_allows(rule, attrs) for rule in rules if isinstance(rule, dict))


def _describe(binding: Obj, kind: str, user: User) -> str:
    ref = binding.get("roleRef") or {}
    _, name = _key(binding)
    return (
        f'RBAC: allowed by {kind} "{name}" of {ref.get("kind")} "{ref.get("name")}" '
        f'to user "{user.name}"'
    )


def authorize(policy: Policy, user: User, attrs: Attributes) -> Decision:
    """RBAC's decision: allowed if a ClusterRoleBinding, or (for a namespaced request) a
    RoleBinding of that namespace, binds a role with a matching rule to the user or one of its
    groups. Members of system:masters are allowed everything, as on every Kubernetes server."""
    if SUPERUSER_GROUP in user.groups:
        return Decision(True, f"member of {SUPERUSER_GROUP}")
    for binding in policy.cluster_role_bindings:
        if _binding_grants(policy, binding, "", user, attrs):
            return Decision(True, _describe(binding, "ClusterRoleBinding", user))
    if attrs.namespace:
        for binding in policy.role_bindings.get(attrs.namespace, ()):
            if _binding_grants(policy, binding, attrs.namespace, user, attrs):
                return Decision(True, _describe(binding, "RoleBinding", user))
    return Decision(False)


def impersonation_checks(name: str, groups: Sequence[str]) -> list[Attributes]:
    """What a user must be allowed to act as ``name`` with ``groups`` (`kubectl --as`,
    `--as-group`): `impersonate` on the user, or on the service account its name stands for,
    and on each group."""
    checks = []
    if name.startswith(SERVICE_ACCOUNT_PREFIX) and name.count(":") == 3:
        namespace, account = name[len(SERVICE_ACCOUNT_PREFIX) :].split(":")
        checks.append(
            Attributes("impersonate", resource="serviceaccounts", namespace=namespace, name=account)
        )
    else:
        checks.append(Attributes("impersonate", resource="users", name=name))
    checks += [Attributes("impersonate", resource="groups", name=g) for g in groups]
    return checks


def impersonated_user(name: str, groups: Sequence[str]) -> User:
    """The user a request impersonating ``name`` (and ``groups``) is served as."""
    if name.startswith(SERVICE_ACCOUNT_PREFIX) and name.count(":") == 3 and not groups:
        namespace, account = name[len(SERVICE_ACCOUNT_PREFIX) :].split(":")
        return service_account_user(namespace, account)
    extra = () if name == ANONYMOUS or AUTHENTICATED in groups else (AUTHENTICATED,)
    return User(name, (*groups, *extra))


def rules_for(policy: Policy, user: User, namespace: str) -> list[Obj]:
    """Every rule granted to ``user`` in ``namespace`` (cluster-wide ones included), as a
    SelfSubjectRulesReview lists them; system:masters gets the one rule allowing everything."""
    if SUPERUSER_GROUP in user.groups:
        return [
            {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
            {"verbs": ["*"], "nonResourceURLs": ["*"]},
        ]
    found: list[Obj] = []
    scopes = [(b, "") for b in policy.cluster_role_bindings]
    if namespace:
        scopes += [(b, namespace) for b in policy.role_bindings.get(namespace, ())]
    for binding, where in scopes:
        subjects = binding.get("subjects") or []
        if any(subject_matches(s, user, where) for s in subjects if isinstance(s, dict)):
            for rule in policy.rules_of(binding.get("roleRef") or {}, where):
                if isinstance(rule, dict) and rule not in found:
                    found.append(rule)
    return found


def forbidden_message(user: User, attrs: Attributes) -> str:
    """What follows "is forbidden: " in Kubernetes' 403 message."""
    if not attrs.is_resource_request:
        return f'User "{user.name}" cannot {attrs.verb} path "{attrs.path}"'
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return (
        f'User "{user.name}" cannot {attrs.verb} resource "{resource}" in API group '
        f'"{attrs.api_group}" {where}'
    )


def forbidden_status(user: User, attrs: Attributes) -> dict[str, Any]:
    """The 403 `Status` a Kubernetes API server answers a denied request with."""
    reason = forbidden_message(user, attrs)
    if not attrs.is_resource_request:
        message = f"forbidden: {reason}"
    else:
        qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
        named = f' "{attrs.name}"' if attrs.name else ""
        message = f"{qualified}{named} is forbidden: {reason}"
    details: dict[str, Any] = {"kind": attrs.resource}
    if attrs.api_group:
        details["group"] = attrs.api_group
    if attrs.name:
        details["name"] = attrs.name
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    }


# ----- least privilege --------------------------------------------------------------------------


def permission(attrs: Attributes) -> tuple[str, str, str]:
    """(verb, apiGroup, resource[/subresource]) of a resource request."""
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    return (attrs.verb, attrs.api_group, resource)


def unused_grants(
    rules: Iterable[Obj], used: Iterable[tuple[str, str, str]]
) -> list[tuple[str, str, str]]:
    """The (verb, apiGroup, resource) that ``rules`` grant by name and no request in ``used``
    needed: candidates for removal from a least-privilege role. Wildcards and resourceNames
    rules are not expanded (they name no single permission)."""
    seen = set(used)
    unused = []
    for rule in rules:
        if rule.get("resourceNames"):
            continue
        for group in _listed(rule, "apiGroups"):
            for resource in _listed(rule, "resources"):
                for verb in _listed(rule, "verbs"):
                    if "*" not in (group, resource, verb) and (verb, group, resource) not in seen:
                        unused.append((verb, group, resource))
    return sorted(set(unused))


# ----- aggregation and the default policy -------------------------------------------------------


def _selected(labels: Mapping[str, str], selectors: Sequence[Obj]) -> bool:
    for selector in selectors:
        wanted = selector.get("matchLabels") or {}
        if wanted and all(labels.get(k) == v for k, v in wanted.items()):
            return True
    return False


def aggregate_cluster_roles(cluster_roles: Iterable[Obj]) -> list[Obj]:
    """ClusterRoles with an ``aggregationRule`` get the rules of every ClusterRole its
    ``matchLabels`` selectors select, as the aggregation controller writes them (copies; the
    input is not changed)."""
    roles = list(cluster_roles)
    result: list[Obj] = []
    for role in roles:
        selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []
        if not selectors:
            result.append(role)
            continue
        rules: list[Obj] = []
        for other in roles:
            labels = (other.get("metadata") or {}).get("labels") or {}
            if other is not role and _selected(labels, selectors):
                rules.extend(r for r in other.get("rules") or [] if r not in rules)
        result.append({**role, "rules": rules})
    return result


_DISCOVERY_URLS = [
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/openapi",
    "/openapi/*",
    "/readyz",
    "/version",
    "/version/",
]
_PUBLIC_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]


def _bootstrap_metadata(name: str) -> dict[str, Any]:
    """The metadata of a default role or binding, as kube-apiserver marks its own."""
    return {
        "name": name,
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    }


def _cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": _bootstrap_metadata(name),
        "rules": rules,
    }


def _cluster_role_binding(name: str, role: str, groups: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _bootstrap_metadata(name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g} for g in groups
        ],
    }


def bootstrap_policy() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(ClusterRoles, ClusterRoleBindings) a new cluster starts with: cluster-admin for
    system:masters, discovery and self-reviews for every authenticated user, the version and
    health endpoints for everyone (Kubernetes' defaults of those names)."""
    everything = {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}
    self_reviews = {
        "apiGroups": ["authorization.k8s.io"],
        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
        "verbs": ["create"],
    }
    whoami = {
        "apiGroups": ["authentication.k8s.io"],
        "resources": ["selfsubjectreviews"],
        "verbs": ["create"],
    }
    roles = [
        _cluster_role("cluster-admin", [everything, {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        _cluster_role("system:discovery", [{"nonResourceURLs": _DISCOVERY_URLS, "verbs": ["get"]}]),
        _cluster_role("system:basic-user", [self_reviews, whoami]),
        _cluster_role(
            "system:public-info-viewer", [{"nonResourceURLs": _PUBLIC_URLS, "verbs": ["get"]}]
        ),
    ]
    bindings = [
        _cluster_role_binding("cluster-admin", "cluster-admin", [SUPERUSER_GROUP]),
        _cluster_role_binding("system:discovery", "system:discovery", [AUTHENTICATED]),
        _cluster_role_binding("system:basic-user", "system:basic-user", [AUTHENTICATED]),
        _cluster_role_binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            [AUTHENTICATED, UNAUTHENTICATED],
        ),
    ]
    return roles, bindings
