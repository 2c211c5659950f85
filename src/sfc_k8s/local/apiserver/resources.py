"""The resources the local API server serves: built-in kinds and those registered by CRDs.

`Registry` answers discovery (which groups, versions and resources exist) and resolves a URL's
group/version/plural (or a kind) to a `ResourceType`. The store keeps objects per
`ResourceType.key` (group, plural), so all served versions of a CRD share one storage.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One served resource in one group/version."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    printer_columns: tuple[dict[str, Any], ...] = ()
    schema: dict[str, Any] | None = None
    storage_version: str = ""
    builtin: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def singular_name(self) -> str:
        return self.singular or self.kind.lower()


def _core(plural: str, kind: str, *, namespaced: bool = True, **kw: Any) -> ResourceType:
    return ResourceType("", "v1", plural, kind, namespaced, **kw)


BUILTINS: tuple[ResourceType, ...] = (
    _core(
        "namespaces",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        subresources=frozenset({"status", "finalize"}),
    ),
    _core(
        "nodes", "Node", namespaced=False, short_names=("no",), subresources=frozenset({"status"})
    ),
    _core(
        "pods",
        "Pod",
        short_names=("po",),
        categories=("all",),
        subresources=frozenset({"status", "binding", "log"}),
    ),
    _core("events", "Event", short_names=("ev",)),
    _core("configmaps", "ConfigMap", short_names=("cm",)),
    _core("secrets", "Secret"),
    _core("serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _core(
        "services",
        "Service",
        short_names=("svc",),
        categories=("all",),
        subresources=frozenset({"status"}),
    ),
    _core("endpoints", "Endpoints", short_names=("ep",)),
    ResourceType(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        True,
        short_names=("deploy",),
        categories=("all",),
        subresources=frozenset({"status", "scale"}),
    ),
    ResourceType(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        True,
        short_names=("rs",),
        categories=("all",),
        subresources=frozenset({"status", "scale"}),
    ),
    ResourceType(
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        True,
        short_names=("ds",),
        categories=("all",),
        subresources=frozenset({"status"}),
    ),
    ResourceType(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        True,
        short_names=("hpa",),
        categories=("all",),
        subresources=frozenset({"status"}),
        storage_version="v2",
    ),
    # the same objects seen through v1 (hpaconvert.py): what `kubectl autoscale` posts
    ResourceType(
        "autoscaling",
        "v1",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        True,
        short_names=("hpa",),
        categories=("all",),
        subresources=frozenset({"status"}),
        storage_version="v2",
    ),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        short_names=("crd", "crds"),
        subresources=frozenset({"status"}),
    ),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True),
    ResourceType(
        "apiregistration.k8s.io",
        "v1",
        "apiservices",
        "APIService",
        False,
        subresources=frozenset({"status"}),
    ),
    ResourceType("events.k8s.io", "v1", "events", "Event", True, short_names=("ev",)),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    ResourceType(
        "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False
    ),
    # stored only (deploy/ carries them: the scheduler has no preemption, nothing evicts)
    ResourceType(
        "scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, short_names=("pc",)
    ),
    ResourceType(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        True,
        short_names=("pdb",),
        subresources=frozenset({"status"}),
    ),
)


@dataclass
class Registry:
    """Served resources by (group, version, plural); CRDs add and remove theirs at runtime."""

    _types: dict[tuple[str, str, str], ResourceType] = field(default_factory=dict)
    _crd_types: dict[str, list[ResourceType]] = field(default_factory=dict)

    @classmethod
    def with_builtins(cls) -> Registry:
        registry = cls()
        for rtype in BUILTINS:
            registry._types[(rtype.group, rtype.version, rtype.plural)] = rtype
        return registry

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(list(self._types.values()))

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def by_key(self, key: tuple[str, str]) -> ResourceType | None:
        """The storage-version type for a (group, plural), or None if not served."""
        found = [t for t in self._types.values() if t.key == key]
        for rtype in found:
            if not rtype.storage_version or rtype.storage_version == rtype.version:
                return rtype
        return found[0] if found else None

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rtype in self._types.values():
            if rtype.group == group and rtype.version == version and rtype.kind == kind:
                return rtype
        return None

    def groups(self) -> dict[str, list[str]]:
        """Group name -> served versions, preferred (storage) version first."""
        result: dict[str, list[str]] = {}
        for rtype in self._types.values():
            versions = result.setdefault(rtype.group, [])
            if rtype.version not in versions:
                if rtype.storage_version == rtype.version:
                    versions.insert(0, rtype.version)
                else:
                    versions.append(rtype.version)
        return result

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [t for t in self._types.values() if t.group == group and t.version == version]

    def register_crd(self, name: str, types: Iterable[ResourceType]) -> None:
        self.unregister_crd(name)
        new = list(types)
        for rtype in new:
            self._types[(rtype.group, rtype.version, rtype.plural)] = rtype
        self._crd_types[name] = new

    def unregister_crd(self, name: str) -> list[ResourceType]:
        old = self._crd_types.pop(name, [])
        for rtype in old:
            self._types.pop((rtype.group, rtype.version, rtype.plural), None)
        return old


def types_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The served resource types a CustomResourceDefinition declares."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    namespaced = spec.get("scope", "Namespaced") == "Namespaced"
    versions = spec.get("versions", [])
    storage = next((v["name"] for v in versions if v.get("storage")), "")
    result = []
    for version in versions:
        if not version.get("served", True):
            continue
        subresources = frozenset(version.get("subresources", {}) or {})
        result.append(
            ResourceType(
                group=spec.get("group", ""),
                version=version["name"],
                plural=names.get("plural", ""),
                kind=names.get("kind", ""),
                namespaced=namespaced,
                singular=names.get("singular", ""),
                short_names=tuple(names.get("shortNames", []) or ()),
                categories=tuple(names.get("categories", []) or ()),
                subresources=subresources,
                printer_columns=tuple(version.get("additionalPrinterColumns", []) or ()),
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                storage_version=storage,
                builtin=False,
            )
        )
    return result
