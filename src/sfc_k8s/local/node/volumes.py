"""The volumes of a local pod: where each one's content lives on the host, and its mounts.

Called by the pod worker (``pod.py``) once the sandbox is up: ``prepare`` writes (or finds) the
content of every volume of the pod and returns its host path; ``container_mounts`` turns a
container's ``volumeMounts`` into the bind mounts that ``launch.py`` makes in the container's
own mount namespace. Supported: ``hostPath``, ``emptyDir``, ``configMap``, ``secret``,
``downwardAPI`` and ``projected`` (``serviceAccountToken``, ``configMap``, ``secret``,
``downwardAPI``). ConfigMap and Secret content is written once, when the pod starts (a real
kubelet refreshes it).

Where a ``hostPath`` lands (``hostpath_source``): each node is a network namespace, not a
machine, so every node gets its own directory tree, ``<state>/nodes/<node>/root``, and a
``hostPath`` resolves inside it: two nodes never share ``/etc/cni/net.d``, ``/opt/cni/bin`` or
``/var/lib/...``. Three exceptions: ``/sys/fs/bpf`` (and below) is the node's own bpffs
subtree (``Layout.node_bpffs``), ``/proc``, ``/sys``, ``/dev`` and ``/run/netns`` are the host's
(the kernel's views, shared by every node as by every container on one machine).

The service account token: ``service_account_token`` is the one place it comes from. Today it
is the token of the ServiceAccount's ``kubernetes.io/service-account-token`` Secret, if there is
one; without one the ``token`` file is left out (nothing authenticates requests yet).
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from sfc_k8s.local.kube import KubeClient, KubeError, NotFoundError
from sfc_k8s.local.layout import Layout
from sfc_k8s.local.node.launch import Mount

JsonObj = dict[str, Any]

log = logging.getLogger("sfc_k8s.local.node")

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
SHARED_HOST_PATHS = ("/proc", "/sys", "/dev", "/run/netns")
BPFFS = "/sys/fs/bpf"
DEFAULT_MODE = 0o644
AUTOMOUNT_VOLUME = "kube-api-access-local"
TOKEN_EXPIRATION = 3607  # seconds: what the ServiceAccount admission plugin asks for


class VolumeError(Exception):
    """A volume could not be prepared; the message says which and why (a FailedMount event)."""


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base + "/")


def hostpath_source(layout: Layout, node: str, path: str) -> Path:
    """The host path behind ``hostPath.path`` on ``node`` (see the module docstring)."""
    clean = os.path.normpath("/" + path.lstrip("/"))
    if _under(clean, "/var/run"):  # a symbolic link to /run on every distribution
        clean = "/run" + clean[len("/var/run") :]
    if _under(clean, BPFFS):
        return Path(layout.node_bpffs(node) + clean[len(BPFFS) :])
    if any(_under(clean, base) for base in SHARED_HOST_PATHS):
        return Path(clean)
    return layout.node_root(node) / clean.lstrip("/")


def _check_host_path(source: Path, kind: str, name: str) -> None:
    """``hostPath.type``, as the kubelet checks it (``...OrCreate`` creates)."""
    if kind in ("", "DirectoryOrCreate"):
        source.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate":
        source.parent.mkdir(parents=True, exist_ok=True)
        source.touch(exist_ok=True)
    checks = {
        "Directory": source.is_dir,
        "File": source.is_file,
        "Socket": source.is_socket,
        "CharDevice": source.is_char_device,
        "BlockDevice": source.is_block_device,
    }
    if kind in checks and not checks[kind]():
        raise VolumeError(f"volume {name!r}: hostPath type check failed: {source} is not a {kind}")
    if kind not in (*checks, "", "DirectoryOrCreate", "FileOrCreate"):
        raise VolumeError(f"volume {name!r}: unknown hostPath type {kind!r}")


async def service_account_token(
    kube: KubeClient,
    namespace: str,
    account: str,
    *,
    pod: tuple[str, str] | None = None,
    expiration: int = TOKEN_EXPIRATION,
) -> str | None:
    """The token a pod of ``account`` presents to the API server, or None if there is none.

    As the kubelet does: a TokenRequest for the service account, bound to the pod (``pod`` =
    name, uid) so it dies with it. A server without the TokenRequest API (the plain-HTTP test
    server, which authenticates nobody) answers 404: then the ServiceAccount's legacy token
    Secret, if one exists."""
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"
    spec: JsonObj = {"expirationSeconds": expiration}
    if pod is not None:
        spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": pod[0], "uid": pod[1]}
    try:
        answer = await kube.create(path, {"apiVersion": "authentication.k8s.io/v1",
                                          "kind": "TokenRequest", "spec": spec})  # fmt: skip
        return str(answer["status"]["token"])
    except NotFoundError:
        pass
    except KubeError as err:
        log.warning("no token for %s/%s: %s", namespace, account, err)
        return None
    return await _legacy_token(kube, namespace, account)


async def _legacy_token(kube: KubeClient, namespace: str, account: str) -> str | None:
    try:
        secrets = await kube.get(f"/api/v1/namespaces/{namespace}/secrets")
    except KubeError:
        return None
    for secret in secrets.get("items") or []:
        annotations = (secret.get("metadata") or {}).get("annotations") or {}
        if (
            secret.get("type") == "kubernetes.io/service-account-token"
            and annotations.get("kubernetes.io/service-account.name") == account
            and (secret.get("data") or {}).get("token")
        ):
            return base64.b64decode(secret["data"]["token"]).decode()
    return None


def automount_volume(pod: Mapping[str, Any]) -> JsonObj | None:
    """The projected volume the ServiceAccount admission plugin would add (token, ca.crt,
    namespace), unless the pod opts out or already mounts that path."""
    spec = pod.get("spec") or {}
    if spec.get("automountServiceAccountToken") is False:
        return None
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        if any(m.get("mountPath") == SERVICE_ACCOUNT_DIR for m in c.get("volumeMounts") or []):
            return None
    return {
        "name": AUTOMOUNT_VOLUME,
        "projected": {
            "defaultMode": DEFAULT_MODE,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_EXPIRATION}},
                {
                    "configMap": {
                        "name": ROOT_CA_CONFIGMAP,
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        "optional": True,  # published only by a server with a CA (rootca.py)
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ],
        },
    }


class VolumeBuilder:
    """Writes the content of one pod's volumes under ``<pod dir>/volumes``."""

    def __init__(
        self, kube: KubeClient, layout: Layout, node: str, pod: Mapping[str, Any], fields: Any
    ) -> None:
        """``fields``: the pod's downward API values, ``{"metadata.name": ..., ...}``."""
        self.kube = kube
        self.layout = layout
        self.node = node
        self.pod = pod
        self.namespace = str((pod.get("metadata") or {}).get("namespace", "default"))
        self.root = layout.pod_dir(str(pod["metadata"]["uid"])) / "volumes"
        self.fields: Mapping[str, str] = fields

    def read_only(self) -> set[str]:
        """The volumes mounted read-only whatever the container asks (their content is the
        API's)."""
        kinds = ("configMap", "secret", "downwardAPI", "projected")
        return {str(v.get("name")) for v in self.volumes() if any(k in v for k in kinds)}

    def token_lifetime(self) -> int | None:
        """The shortest ``expirationSeconds`` of the pod's projected service-account tokens
        (None without one): the kubelet renews each at 80 % of it."""
        lifetimes = [
            int(source["serviceAccountToken"].get("expirationSeconds") or TOKEN_EXPIRATION)
            for volume in self.volumes()
            for source in (volume.get("projected") or {}).get("sources") or []
            if "serviceAccountToken" in source
        ]
        return min(lifetimes) if lifetimes else None

    def volumes(self) -> list[JsonObj]:
        declared = list((self.pod.get("spec") or {}).get("volumes") or [])
        extra = automount_volume(self.pod)
        return [*declared, extra] if extra else declared

    async def prepare(self) -> dict[str, Path]:
        """Every volume's host path, by name."""
        paths: dict[str, Path] = {}
        for volume in self.volumes():
            name = str(volume.get("name", ""))
            paths[name] = await self._prepare(name, volume)
        return paths

    async def _prepare(self, name: str, volume: Mapping[str, Any]) -> Path:
        if "hostPath" in volume:
            source = hostpath_source(self.layout, self.node, str(volume["hostPath"]["path"]))
            _check_host_path(source, str(volume["hostPath"].get("type") or ""), name)
            return source
        target = self.root / name
        if "emptyDir" in volume:
            target.mkdir(parents=True, exist_ok=True)
            return target
        files: dict[str, tuple[bytes, int]] = {}
        mode = int(_volume_body(volume).get("defaultMode", DEFAULT_MODE))
        if "configMap" in volume or "secret" in volume:
            kind = "configMap" if "configMap" in volume else "secret"
            files = await self._object_files(kind, volume[kind], mode, name)
        elif "downwardAPI" in volume:
            files = self._downward_files(volume["downwardAPI"], mode)
        elif "projected" in volume:
            files = await self._projected_files(volume["projected"], mode, name)
        else:
            raise VolumeError(f"volume {name!r}: this volume type is not supported locally")
        _write_files(target, files)
        return target

    async def _object_files(
        self, kind: str, source: Mapping[str, Any], mode: int, volume: str
    ) -> dict[str, tuple[bytes, int]]:
        """The files of a ConfigMap or Secret: every key, or the ``items`` chosen."""
        name = str(source.get("name") or source.get("secretName") or "")
        plural = "configmaps" if kind == "configMap" else "secrets"
        try:
            obj = await self.kube.get(f"/api/v1/namespaces/{self.namespace}/{plural}/{name}")
        except NotFoundError as err:
            if source.get("optional"):
                return {}
            what = "configmap" if kind == "configMap" else "secret"
            raise VolumeError(f'volume {volume!r}: {what} "{name}" not found') from err
        except KubeError as err:
            raise VolumeError(f"volume {volume!r}: cannot read {plural}/{name}: {err}") from err
        values = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
        if kind == "secret":
            values = {k: base64.b64decode(v) for k, v in values.items()}
        values.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        items = source.get("items")
        if not items:
            return {key: (value, mode) for key, value in values.items()}
        files = {}
        for item in items:
            key = str(item.get("key", ""))
            if key not in values:
                if source.get("optional"):
                    continue
                raise VolumeError(f"volume {volume!r}: {plural}/{name} has no key {key!r}")
            files[str(item.get("path") or key)] = (values[key], int(item.get("mode", mode)))
        return files

    def _downward_files(self, source: Mapping[str, Any], mode: int) -> dict[str, tuple[bytes, int]]:
        files = {}
        for item in source.get("items") or []:
            field = str((item.get("fieldRef") or {}).get("fieldPath", ""))
            value = self.fields.get(field, "")
            files[str(item["path"])] = (value.encode(), int(item.get("mode", mode)))
        return files

    async def _projected_files(
        self, projected: Mapping[str, Any], mode: int, volume: str
    ) -> dict[str, tuple[bytes, int]]:
        files: dict[str, tuple[bytes, int]] = {}
        account = str((self.pod.get("spec") or {}).get("serviceAccountName") or "default")
        for source in projected.get("sources") or []:
            if "serviceAccountToken" in source:
                meta = self.pod.get("metadata") or {}
                token = await service_account_token(
                    self.kube,
                    self.namespace,
                    account,
                    pod=(str(meta.get("name")), str(meta.get("uid"))),
                    expiration=int(
                        source["serviceAccountToken"].get("expirationSeconds") or TOKEN_EXPIRATION
                    ),
                )
                if token is not None:  # left out: see service_account_token
                    path = str(source["serviceAccountToken"].get("path") or "token")
                    files[path] = (token.encode(), mode)
            elif "configMap" in source or "secret" in source:
                kind = "configMap" if "configMap" in source else "secret"
                files.update(await self._object_files(kind, source[kind], mode, volume))
            elif "downwardAPI" in source:
                files.update(self._downward_files(source["downwardAPI"], mode))
        return files


def _volume_body(volume: Mapping[str, Any]) -> Mapping[str, Any]:
    for kind in ("configMap", "secret", "downwardAPI", "projected"):
        if kind in volume:
            return volume[kind] or {}
    return {}


def _write_files(target: Path, files: Mapping[str, tuple[bytes, int]]) -> None:
    """Write the volume's files in place: the directory stays the same one, as running
    containers of the pod may have it mounted (an adopted pod's container restarting, a
    renewed token); each file is replaced whole, so a reader never sees half of one."""
    target.mkdir(parents=True, exist_ok=True)
    for relative, (content, mode) in files.items():
        path = target / _safe_relative(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(content)
        tmp.chmod(mode)
        tmp.replace(path)


def _safe_relative(path: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts:
        raise VolumeError(f"volume file path {path!r} must be relative, without '..'")
    return relative


def container_mounts(
    spec: Mapping[str, Any], paths: Mapping[str, Path], read_only_volumes: set[str]
) -> list[Mount]:
    """The bind mounts of one container: ``volumeMounts`` (``subPath``, ``readOnly``) plus the
    service-account volume if the runtime added it. ConfigMap, Secret, downward API and
    projected volumes are read-only, as the kubelet mounts them."""
    mounts = list(spec.get("volumeMounts") or [])
    if AUTOMOUNT_VOLUME in paths:
        mounts.append({"name": AUTOMOUNT_VOLUME, "mountPath": SERVICE_ACCOUNT_DIR})
    result = []
    for m in mounts:
        name = str(m.get("name", ""))
        if name not in paths:
            raise VolumeError(f"volumeMounts {name!r}: the pod has no volume of that name")
        source = paths[name]
        if m.get("subPath"):
            source = source / _safe_relative(str(m["subPath"]))
            if not source.exists():
                source.mkdir(parents=True)  # as the kubelet does for a missing subPath
        read_only = bool(m.get("readOnly")) or name in read_only_volumes
        result.append(Mount(str(source), str(m["mountPath"]), read_only))
    return result
