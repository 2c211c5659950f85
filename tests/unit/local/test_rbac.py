"""RBAC as the Kubernetes documentation describes it, table by table (`local/apiserver/rbac.py`).

Covers: request attributes from URLs (verbs get/list/watch/create/update/patch/delete/
deletecollection, the per-object watch, a list narrowed to one name by its field selector,
namespaced and cluster-scoped resources, subresources, the namespace itself and its `status`/
`finalize`, non-resource paths and discovery); one rule against a request (verbs, apiGroups,
resources, `pods/status`, `*/scale`, resourceNames, nonResourceURLs with `*` prefixes, every
`*` wildcard, resource rules never matching paths and the other way round); binding subjects
(User, Group, ServiceAccount with and without namespace); a whole policy (ClusterRoleBinding
cluster-wide, RoleBinding only in its namespace, a RoleBinding of a ClusterRole, a Role of
another namespace, a missing role, system:masters, aggregated ClusterRoles, the default
discovery and public-info roles for authenticated and anonymous users); and Kubernetes' 403
`Status` wording.
"""

from __future__ import annotations

from typing import Any

import pytest

from sfc_k8s.local.apiserver import rbac
from sfc_k8s.local.apiserver.rbac import Attributes, Policy

SA = rbac.service_account_user("sfc-system", "sfc-k8s-controller")


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/namespaces/x/pods", {}, ("list", "", "pods", "", "x", "")),
        ("GET", "/api/v1/pods", {"watch": "true"}, ("watch", "", "pods", "", "", "")),
        ("GET", "/api/v1/namespaces/x/pods/p", {}, ("get", "", "pods", "", "x", "p")),
        (
            "GET",
            "/api/v1/namespaces/x/pods/p",
            {"watch": "1"},
            ("watch", "", "pods", "", "x", "p"),
        ),
        (
            "GET",
            "/api/v1/namespaces/x/pods",
            {"fieldSelector": "metadata.name=p", "watch": "true"},
            ("watch", "", "pods", "", "x", "p"),
        ),
        (
            "GET",
            "/api/v1/namespaces/x/pods",
            {"fieldSelector": "metadata.name!=p"},
            ("list", "", "pods", "", "x", ""),
        ),
        ("POST", "/api/v1/namespaces/x/pods", {}, ("create", "", "pods", "", "x", "")),
        ("PUT", "/api/v1/namespaces/x/pods/p", {}, ("update", "", "pods", "", "x", "p")),
        (
            "PATCH",
            "/apis/sfc-k8s.io/v1alpha1/namespaces/x/servicefunctionchains/c/status",
            {},
            ("patch", "sfc-k8s.io", "servicefunctionchains", "status", "x", "c"),
        ),
        ("DELETE", "/api/v1/namespaces/x/pods/p", {}, ("delete", "", "pods", "", "x", "p")),
        (
            "DELETE",
            "/api/v1/namespaces/x/pods",
            {},
            ("deletecollection", "", "pods", "", "x", ""),
        ),
        (
            "PUT",
            "/apis/apps/v1/namespaces/x/deployments/d/scale",
            {},
            ("update", "apps", "deployments", "scale", "x", "d"),
        ),
        ("GET", "/api/v1/nodes/n", {}, ("get", "", "nodes", "", "", "n")),
        # the namespace itself: its name is also the request's namespace, as in Kubernetes
        ("GET", "/api/v1/namespaces/x", {}, ("get", "", "namespaces", "", "x", "x")),
        (
            "PUT",
            "/api/v1/namespaces/x/finalize",
            {},
            ("update", "", "namespaces", "finalize", "x", "x"),
        ),
        ("GET", "/api/v1/namespaces", {}, ("list", "", "namespaces", "", "", "")),
    ],
)
def test_resource_request_attributes(
    method: str, path: str, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    attrs = rbac.request_attributes(method, path, query)
    assert attrs.is_resource_request
    got = (
        attrs.verb,
        attrs.api_group,
        attrs.resource,
        attrs.subresource,
        attrs.namespace,
        attrs.name,
    )
    assert got == expected


@pytest.mark.parametrize(
    ("method", "path", "verb"),
    [
        ("GET", "/version", "get"),
        ("GET", "/healthz", "get"),
        ("GET", "/api", "get"),
        ("GET", "/api/v1", "get"),
        ("GET", "/apis/sfc-k8s.io/v1alpha1", "get"),
        ("GET", "/openapi/v3/apis/apps/v1", "get"),
        ("POST", "/logs", "post"),
    ],
)
def test_non_resource_request_attributes(method: str, path: str, verb: str) -> None:
    attrs = rbac.request_attributes(method, path, {})
    assert not attrs.is_resource_request
    assert (attrs.verb, attrs.path) == (verb, path)


def _attrs(verb: str, resource: str = "pods", **kw: str) -> Attributes:
    return Attributes(verb=verb, resource=resource, **kw)


POD_READER = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}


@pytest.mark.parametrize(
    ("rule", "attrs", "allowed"),
    [
        (POD_READER, _attrs("list"), True),
        (POD_READER, _attrs("watch"), True),
        (POD_READER, _attrs("delete"), False),
        (POD_READER, _attrs("deletecollection"), False),
        (POD_READER, _attrs("list", api_group="apps"), False),  # same name, other group
        (POD_READER, _attrs("get", subresource="status"), False),  # a subresource is apart
        (POD_READER, _attrs("get", "services"), False),
        ({**POD_READER, "resources": ["pods/status"]}, _attrs("get", subresource="status"), True),
        ({**POD_READER, "resources": ["pods/status"]}, _attrs("get"), False),
        (
            {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["update"]},
            _attrs("update", "deployments", api_group="apps", subresource="scale"),
            True,
        ),
        (
            {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["update"]},
            _attrs("update", "deployments", api_group="apps"),
            False,
        ),
        ({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, _attrs("patch"), True),
        (
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            _attrs("patch", subresource="status"),
            True,
        ),
        ({**POD_READER, "resourceNames": ["a"]}, _attrs("get", name="a"), True),
        ({**POD_READER, "resourceNames": ["a"]}, _attrs("get", name="b"), False),
        ({**POD_READER, "resourceNames": ["a"]}, _attrs("list"), False),  # a list names none
        ({"nonResourceURLs": ["/healthz"], "verbs": ["get"]}, Attributes("get", "/healthz"), True),
        (
            {"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
            Attributes("post", "/healthz"),
            False,
        ),
        ({"nonResourceURLs": ["/apis/*"], "verbs": ["get"]}, Attributes("get", "/apis/x/v1"), True),
        ({"nonResourceURLs": ["/apis/*"], "verbs": ["get"]}, Attributes("get", "/api"), False),
        ({"nonResourceURLs": ["*"], "verbs": ["*"]}, Attributes("delete", "/anything"), True),
        # a resource rule never allows a path, nor a path rule a resource
        ({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, Attributes("get", "/x"), False),
        ({"nonResourceURLs": ["*"], "verbs": ["*"]}, _attrs("get"), False),
        ({"apiGroups": [""], "resources": ["pods"]}, _attrs("get"), False),  # no verbs: nothing
    ],
)
def test_rule_allows(rule: dict[str, Any], attrs: Attributes, allowed: bool) -> None:
    assert rbac.rule_allows(rule, attrs) is allowed


@pytest.mark.parametrize(
    ("subject", "binding_namespace", "user", "matches"),
    [
        ({"kind": "User", "name": "jane"}, "", rbac.User("jane"), True),
        ({"kind": "User", "name": "jane"}, "", rbac.User("bob", ("jane",)), False),
        ({"kind": "Group", "name": "devs"}, "", rbac.User("bob", ("devs",)), True),
        ({"kind": "Group", "name": "devs"}, "", rbac.User("devs"), False),
        (
            {"kind": "ServiceAccount", "name": "sfc-k8s-controller", "namespace": "sfc-system"},
            "",
            SA,
            True,
        ),
        ({"kind": "ServiceAccount", "name": "sfc-k8s-controller"}, "sfc-system", SA, True),
        ({"kind": "ServiceAccount", "name": "sfc-k8s-controller"}, "other", SA, False),
        ({"kind": "ServiceAccount", "name": "sfc-k8s-controller"}, "", SA, False),
        ({"kind": "Group", "name": "system:serviceaccounts:sfc-system"}, "", SA, True),
        ({"kind": "Group", "name": "system:authenticated"}, "", rbac.anonymous_user(), False),
    ],
)
def test_subject_matches(
    subject: dict[str, str], binding_namespace: str, user: rbac.User, matches: bool
) -> None:
    assert rbac.subject_matches(subject, user, binding_namespace) is matches


def _role(kind: str, name: str, rules: list[Any], namespace: str = "") -> dict[str, Any]:
    md = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": kind, "metadata": md, "rules": rules}


def _binding(kind: str, name: str, role: tuple[str, str], subject: Any, ns: str = "") -> Any:
    md = {"name": name, **({"namespace": ns} if ns else {})}
    return {
        "kind": kind,
        "metadata": md,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role[0], "name": role[1]},
        "subjects": [subject],
    }


JANE = rbac.User("jane", ("devs", rbac.AUTHENTICATED))
POLICY = Policy.of(
    cluster_roles=[
        _role("ClusterRole", "pod-reader", [POD_READER]),
        _role("ClusterRole", "node-lister", [{**POD_READER, "resources": ["nodes"]}]),
    ],
    roles=[
        _role("Role", "secret-writer", [{**POD_READER, "resources": ["secrets"]}], "a"),
        _role("Role", "cm-reader", [{**POD_READER, "resources": ["configmaps"]}], "b"),
    ],
    role_bindings=[
        _binding(
            "RoleBinding",
            "r1",
            ("ClusterRole", "pod-reader"),
            {"kind": "User", "name": "jane"},
            "a",
        ),
        _binding(
            "RoleBinding", "r2", ("Role", "secret-writer"), {"kind": "Group", "name": "devs"}, "a"
        ),
        # a RoleBinding names a Role of its own namespace only
        _binding("RoleBinding", "r3", ("Role", "cm-reader"), {"kind": "User", "name": "jane"}, "a"),
        _binding("RoleBinding", "r4", ("Role", "missing"), {"kind": "User", "name": "jane"}, "a"),
    ],
    cluster_role_bindings=[
        _binding(
            "ClusterRoleBinding",
            "c1",
            ("ClusterRole", "node-lister"),
            {"kind": "Group", "name": "devs"},
        ),
    ],
)


@pytest.mark.parametrize(
    ("user", "attrs", "allowed"),
    [
        (JANE, _attrs("list", namespace="a"), True),  # RoleBinding of a ClusterRole, in a
        (JANE, _attrs("list", namespace="b"), False),  # ... and only in a
        (JANE, _attrs("list"), False),  # ... not cluster-wide
        (JANE, _attrs("get", "secrets", namespace="a"), True),  # through her group
        (JANE, _attrs("get", "configmaps", namespace="a"), False),  # Role of namespace b
        (JANE, _attrs("list", "nodes"), True),  # ClusterRoleBinding: cluster-wide
        (JANE, _attrs("list", "nodes", namespace="b"), True),
        (rbac.User("bob"), _attrs("list", "nodes"), False),
        (rbac.User("root", (rbac.SUPERUSER_GROUP,)), _attrs("delete", "nodes"), True),
    ],
)
def test_authorize(user: rbac.User, attrs: Attributes, allowed: bool) -> None:
    assert rbac.authorize(POLICY, user, attrs).allowed is allowed


def test_an_allowed_request_names_the_binding_that_allowed_it() -> None:
    decision = rbac.authorize(POLICY, JANE, _attrs("list", "nodes"))
    assert decision.reason == (
        'RBAC: allowed by ClusterRoleBinding "c1" of ClusterRole "node-lister" to user "jane"'
    )


def test_aggregated_cluster_role_gets_the_rules_of_the_roles_it_selects() -> None:
    selector = {"matchLabels": {"rbac.sfc-k8s.io/aggregate-to-view": "true"}}
    aggregate = {
        "kind": "ClusterRole",
        "metadata": {"name": "view"},
        "aggregationRule": {"clusterRoleSelectors": [selector]},
        "rules": [],
    }
    part = _role("ClusterRole", "chains-view", [{**POD_READER, "resources": ["chains"]}])
    part["metadata"]["labels"] = {"rbac.sfc-k8s.io/aggregate-to-view": "true"}
    other = _role("ClusterRole", "unrelated", [{**POD_READER, "resources": ["secrets"]}])
    policy = Policy.of(
        cluster_roles=rbac.aggregate_cluster_roles([aggregate, part, other]),
        cluster_role_bindings=[
            _binding(
                "ClusterRoleBinding", "v", ("ClusterRole", "view"), {"kind": "User", "name": "jane"}
            )
        ],
    )
    assert rbac.authorize(policy, JANE, _attrs("list", "chains")).allowed
    assert not rbac.authorize(policy, JANE, _attrs("list", "secrets")).allowed
    assert aggregate["rules"] == []  # the input is not changed


def test_default_policy_lets_users_discover_and_anyone_read_the_version() -> None:
    roles, bindings = rbac.bootstrap_policy()
    policy = Policy.of(cluster_roles=roles, cluster_role_bindings=bindings)
    anonymous = rbac.anonymous_user()
    assert rbac.authorize(policy, SA, Attributes("get", "/apis/sfc-k8s.io/v1alpha1")).allowed
    assert rbac.authorize(policy, SA, Attributes("get", "/openapi/v3")).allowed
    assert rbac.authorize(policy, anonymous, Attributes("get", "/version")).allowed
    assert not rbac.authorize(policy, anonymous, Attributes("get", "/apis")).allowed
    review = Attributes(
        "create", resource="selfsubjectaccessreviews", api_group="authorization.k8s.io"
    )
    assert rbac.authorize(policy, SA, review).allowed
    assert not rbac.authorize(policy, SA, _attrs("list", "pods", namespace="x")).allowed


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        (
            _attrs("list", namespace="x"),
            'pods is forbidden: User "system:serviceaccount:sfc-system:sfc-k8s-controller" '
            'cannot list resource "pods" in API group "" in the namespace "x"',
        ),
        (
            _attrs("create", "crossconnections", api_group="sfc-k8s.io", namespace="x"),
            'crossconnections.sfc-k8s.io is forbidden: User "system:serviceaccount:sfc-system:'
            'sfc-k8s-controller" cannot create resource "crossconnections" in API group '
            '"sfc-k8s.io" in the namespace "x"',
        ),
        (
            _attrs("patch", "nodes", name="node-1", subresource="status"),
            'nodes "node-1" is forbidden: User "system:serviceaccount:sfc-system:'
            'sfc-k8s-controller" cannot patch resource "nodes/status" in API group "" at the '
            "cluster scope",
        ),
        (
            Attributes("get", "/metrics"),
            'forbidden: User "system:serviceaccount:sfc-system:sfc-k8s-controller" cannot get '
            'path "/metrics"',
        ),
    ],
)
def test_forbidden_status_reads_as_kubernetes(attrs: Attributes, message: str) -> None:
    status = rbac.forbidden_status(SA, attrs)
    assert status["code"] == 403
    assert status["reason"] == "Forbidden"
    assert status["message"] == message


def test_unused_grants_names_what_a_role_grants_and_nobody_used() -> None:
    rules = [
        {"apiGroups": ["sfc-k8s.io"], "resources": ["crossconnections"], "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["pods", "pods/status"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["x"]},
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
    ]
    used = [("patch", "sfc-k8s.io", "crossconnections"), ("list", "", "pods")]
    assert rbac.unused_grants(rules, used) == [
        ("get", "sfc-k8s.io", "crossconnections"),
        ("list", "", "pods/status"),
    ]
    attrs = _attrs("patch", "crossconnections", api_group="sfc-k8s.io", subresource="status")
    assert rbac.permission(attrs) == ("patch", "sfc-k8s.io", "crossconnections/status")


def test_rules_for_lists_what_the_bindings_grant_in_a_namespace() -> None:
    assert rbac.rules_for(POLICY, JANE, "a") == [
        {**POD_READER, "resources": ["nodes"]},
        POD_READER,
        {**POD_READER, "resources": ["secrets"]},
    ]
    assert rbac.rules_for(POLICY, JANE, "b") == [{**POD_READER, "resources": ["nodes"]}]
    assert rbac.rules_for(POLICY, rbac.User("bob"), "a") == []


def test_impersonation_needs_impersonate_on_the_user_account_and_groups() -> None:
    checks = rbac.impersonation_checks("system:serviceaccount:sfc-system:agent", [])
    assert checks == [
        Attributes("impersonate", resource="serviceaccounts", namespace="sfc-system", name="agent")
    ]
    checks = rbac.impersonation_checks("jane", ["devs"])
    assert [(c.resource, c.name) for c in checks] == [("users", "jane"), ("groups", "devs")]
    account = rbac.impersonated_user("system:serviceaccount:sfc-system:agent", [])
    assert account == rbac.service_account_user("sfc-system", "agent")
    assert rbac.impersonated_user("jane", ["devs"]).groups == ("devs", rbac.AUTHENTICATED)
