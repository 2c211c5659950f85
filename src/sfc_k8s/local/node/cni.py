"""CNI invocation the way Multus does it, for the local node runtime.

For a pod, the runtime asks this module to attach the cluster network (the main interface) and
then every network of the pod's ``k8s.v1.cni.cncf.io/networks`` annotation: the annotation is
parsed (``name``, ``ns/name``, ``name@ifname``, or the JSON list form), each
NetworkAttachmentDefinition is fetched by the caller, and the real plugin binary named by the
config's ``type`` is executed from ``CNI_PATH`` with the ``CNI_*`` environment and the config on
stdin, inside the node's network namespace (the node is the "host" of the plugin). Conflists
run plugin after plugin with ``prevResult``; ``DEL`` runs in reverse with the cached result.
The ``k8s.v1.cni.cncf.io/network-status`` annotation is built from the results.

A plugin installed on the node itself (in the node's own tree, where the agent's ``install-cni``
init container puts the ``sfc-cni`` shim: ``hostPath`` ``/opt/cni/bin`` of that node) runs as
on that node: in a mount namespace of its own (``launch.py``) where the node's ``NODE_PATHS``
(the agent's CNI socket and DEL spool) are at their usual place, so the shim reaches that node's
agent, never another node's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from sfc_k8s.cni import wire
from sfc_k8s.local.netns import exec_argv, netns_path
from sfc_k8s.local.node import launch

NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
# A node's paths a plugin installed on it relies on: the shim's socket folder and DEL spool
# (deploy/base/agent.yaml mounts the same from the node).
NODE_PATHS = (os.path.dirname(wire.DEFAULT_SOCKET), wire.DEFAULT_SPOOL_DIR)
PLUGIN_TIMEOUT = 60.0

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")

JsonObj = dict[str, Any]


class NetworkAttachmentError(Exception):
    """Attaching a pod's networks failed (the runtime's Multus-like side, not the CNI plugin's
    own ``sfc_k8s.cni.errors.CniError``): a bad annotation or NetworkAttachmentDefinition, a
    missing plugin, or a plugin's error result (``code``, ``details``)."""

    def __init__(self, message: str, *, code: int = 0, details: str = "") -> None:
        super().__init__(message + (f" ({details})" if details else ""))
        self.code = code
        self.details = details


@dataclass(frozen=True)
class NetworkSelection:
    """One entry of the networks annotation."""

    name: str
    namespace: str
    interface: str | None = None
    mac: str | None = None
    ips: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _check_names(sel: NetworkSelection) -> NetworkSelection:
    for what, value in (("name", sel.name), ("namespace", sel.namespace)):
        if not _NAME_RE.match(value):
            raise NetworkAttachmentError(
                f"network {what} {value!r} in {NETWORKS_ANNOTATION} is not a DNS name"
            )
    if sel.interface is not None and not _IFNAME_RE.match(sel.interface):
        raise NetworkAttachmentError(
            f"interface name {sel.interface!r} in {NETWORKS_ANNOTATION} is not a valid Linux "
            "interface name (1-15 characters)"
        )
    return sel


def parse_networks(annotation: str, default_namespace: str) -> list[NetworkSelection]:
    """The network selections of a ``k8s.v1.cni.cncf.io/networks`` annotation value."""
    text = annotation.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            entries = json.loads(text)
        except ValueError as err:
            raise NetworkAttachmentError(f"{NETWORKS_ANNOTATION} is not valid JSON: {err}") from err
        if not isinstance(entries, list):
            raise NetworkAttachmentError(f"{NETWORKS_ANNOTATION} JSON must be a list of objects")
        result = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise NetworkAttachmentError(
                    f"{NETWORKS_ANNOTATION} entry {entry!r} needs a string 'name'"
                )
            ips = entry.get("ips") or []
            result.append(
                _check_names(
                    NetworkSelection(
                        name=entry["name"],
                        namespace=str(entry.get("namespace") or default_namespace),
                        interface=entry.get("interface"),
                        mac=entry.get("mac"),
                        ips=tuple(str(ip) for ip in ips),
                    )
                )
            )
        return result
    result = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        interface = None
        if "@" in item:
            item, interface = item.split("@", 1)
        namespace = default_namespace
        if "/" in item:
            namespace, item = item.split("/", 1)
        result.append(_check_names(NetworkSelection(item, namespace, interface)))
    return result


@dataclass(frozen=True)
class PodContext:
    """What a plugin learns about the pod: ids, netns, and the ``CNI_ARGS`` Multus passes."""

    namespace: str
    name: str
    uid: str
    netns: str  # path, e.g. /run/netns/sfcl-...-pod-<uid>
    container_id: str

    def cni_args(self) -> str:
        return ";".join(
            [
                "IgnoreUnknown=true",
                f"K8S_POD_NAMESPACE={self.namespace}",
                f"K8S_POD_NAME={self.name}",
                f"K8S_POD_INFRA_CONTAINER_ID={self.container_id}",
                f"K8S_POD_UID={self.uid}",
            ]
        )


@dataclass
class Attachment:
    """One network attached to a pod: enough to DEL it later, even after a crash."""

    network: str  # "ns/name", or the cluster network's name
    ifname: str
    config: JsonObj  # a single network config or a conflist ("plugins")
    result: JsonObj | None = None
    default: bool = False
    runtime_config: JsonObj = field(default_factory=dict)

    def to_json(self) -> JsonObj:
        return {
            "network": self.network,
            "ifname": self.ifname,
            "config": self.config,
            "result": self.result,
            "default": self.default,
            "runtimeConfig": self.runtime_config,
        }

    @classmethod
    def from_json(cls, doc: JsonObj) -> Attachment:
        return cls(
            network=doc["network"],
            ifname=doc["ifname"],
            config=doc["config"],
            result=doc.get("result"),
            default=bool(doc.get("default")),
            runtime_config=doc.get("runtimeConfig") or {},
        )


def parse_nad_config(nad: JsonObj) -> JsonObj:
    """The CNI config of a NetworkAttachmentDefinition (``spec.config`` is a JSON string)."""
    meta = nad.get("metadata") or {}
    where = f"NetworkAttachmentDefinition {meta.get('namespace')}/{meta.get('name')}"
    raw = (nad.get("spec") or {}).get("config")
    if not raw:
        raise NetworkAttachmentError(
            f"{where} has no spec.config (config files on the node are not supported)"
        )
    try:
        config = json.loads(raw)
    except ValueError as err:
        raise NetworkAttachmentError(f"{where}: spec.config is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise NetworkAttachmentError(f"{where}: spec.config must be a JSON object")
    if "plugins" not in config and "type" not in config:
        raise NetworkAttachmentError(f"{where}: spec.config needs 'type' (or a 'plugins' list)")
    config.setdefault("name", meta.get("name", "unnamed"))
    return config


def runtime_config_for(sel: NetworkSelection) -> JsonObj:
    rc: JsonObj = {}
    if sel.mac:
        rc["mac"] = sel.mac
    if sel.ips:
        rc["ips"] = list(sel.ips)
    return rc


def _plugins(config: JsonObj) -> list[JsonObj]:
    """The plugin configs of a config or conflist, each with the network's name and version."""
    if "plugins" in config:
        plugins = config["plugins"]
        if not isinstance(plugins, list) or not plugins:
            raise NetworkAttachmentError(
                f"conflist {config.get('name')!r} has an empty 'plugins' list"
            )
        base = {"name": config.get("name"), "cniVersion": config.get("cniVersion", "1.0.0")}
        return [{**p, **base} for p in plugins]
    return [config]


def _with_runtime(plugin: JsonObj, runtime: JsonObj) -> JsonObj:
    caps = plugin.get("capabilities") or {}
    wanted = {k: v for k, v in runtime.items() if caps.get(k)}
    return {**plugin, "runtimeConfig": wanted} if wanted else plugin


class CniInvoker:
    """Runs plugin binaries from ``cni_path`` inside the node namespace ``node_netns``; those
    found in the node's own tree ``node_root`` with the node's ``NODE_PATHS`` mounted."""

    def __init__(
        self, cni_path: list[str], node_netns: str | None, *, node_root: str | None = None
    ) -> None:
        self.cni_path = cni_path
        self.node_netns = node_netns
        self.node_root = node_root

    def _argv(self, binary: str) -> list[str]:
        root = self.node_root
        if not self.node_netns:
            return [binary]
        if root is None or not binary.startswith(root.rstrip("/") + "/"):
            return exec_argv(self.node_netns, [binary])
        mounts = []
        for path in NODE_PATHS:
            source = os.path.join(root, path.lstrip("/"))
            os.makedirs(source, exist_ok=True)
            mounts.append(launch.Mount(source, path))
        spec = launch.Spec([binary], netns=netns_path(self.node_netns), mounts=mounts)
        return launch.command_line(sys.executable, spec)

    def find(self, plugin_type: str) -> str:
        if not plugin_type or "/" in plugin_type:
            raise NetworkAttachmentError(f"invalid plugin type {plugin_type!r}")
        for folder in self.cni_path:
            candidate = os.path.join(folder, plugin_type)
            if os.access(candidate, os.X_OK):
                return candidate
        raise NetworkAttachmentError(
            f"CNI plugin {plugin_type!r} not found in CNI_PATH {':'.join(self.cni_path)}: "
            "build it (make) or fix the config's 'type'"
        )

    async def exec_plugin(
        self, command: str, plugin: JsonObj, pod: PodContext, ifname: str
    ) -> JsonObj:
        binary = self.find(str(plugin.get("type", "")))
        env = {
            "PATH": os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin:/usr/bin:/sbin:/bin"]),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": pod.container_id,
            "CNI_NETNS": pod.netns,
            "CNI_IFNAME": ifname,
            "CNI_ARGS": pod.cni_args(),
            "CNI_PATH": ":".join(self.cni_path),
        }
        argv = self._argv(binary)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(json.dumps(plugin).encode()), PLUGIN_TIMEOUT
            )
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise NetworkAttachmentError(
                f"CNI plugin {plugin.get('type')!r} {command} timed out after {PLUGIN_TIMEOUT}s"
            ) from exc
        if proc.returncode != 0:
            msg, code, details = err.decode(errors="replace").strip()[-500:], 0, ""
            try:
                doc = json.loads(out)
                msg = str(doc.get("msg", msg))
                code = int(doc.get("code", 0))
                details = str(doc.get("details", ""))
            except (ValueError, AttributeError, TypeError):
                pass
            raise NetworkAttachmentError(
                f"CNI plugin {plugin.get('type')!r} {command} for interface {ifname!r} "
                f"failed with code {code}: {msg}",
                code=code,
                details=details,
            )
        if command != "ADD" or not out.strip():
            return {}
        try:
            result: JsonObj = json.loads(out)
        except ValueError as exc:
            raise NetworkAttachmentError(
                f"CNI plugin {plugin.get('type')!r} ADD printed no JSON result: {out[:200]!r}"
            ) from exc
        return result

    async def add(self, att: Attachment, pod: PodContext) -> JsonObj:
        prev: JsonObj | None = None
        for plugin in _plugins(att.config):
            conf = _with_runtime(plugin, att.runtime_config)
            if prev is not None:
                conf = {**conf, "prevResult": prev}
            prev = await self.exec_plugin("ADD", conf, pod, att.ifname)
        att.result = prev or {}
        return att.result

    async def delete(self, att: Attachment, pod: PodContext) -> None:
        """DEL every plugin in reverse; all are tried, the first error is raised at the end."""
        first: NetworkAttachmentError | None = None
        for plugin in reversed(_plugins(att.config)):
            conf = _with_runtime(plugin, att.runtime_config)
            if att.result:
                conf = {**conf, "prevResult": att.result}
            try:
                await self.exec_plugin("DEL", conf, pod, att.ifname)
            except NetworkAttachmentError as err:
                first = first or err
        if first is not None:
            raise first


def network_status(att: Attachment) -> JsonObj:
    """One entry of the network-status annotation, from an attachment's result."""
    entry: JsonObj = {"name": att.network, "interface": att.ifname, "dns": {}}
    result = att.result or {}
    interfaces = result.get("interfaces") or []
    index = None
    for i, iface in enumerate(interfaces):
        if iface.get("name") == att.ifname and iface.get("sandbox"):
            index = i
            if iface.get("mac"):
                entry["mac"] = iface["mac"]
            break
    ips = [
        str(ip["address"]).split("/")[0]
        for ip in result.get("ips") or []
        if ip.get("address") and (ip.get("interface") is None or ip.get("interface") == index)
    ]
    if not ips and isinstance(result.get("ip4"), dict):  # 0.2.0 results
        ips = [str(result["ip4"].get("ip", "")).split("/")[0]]
    if ips:
        entry["ips"] = ips
    if att.default:
        entry["default"] = True
    if result.get("dns"):
        entry["dns"] = result["dns"]
    return entry


CLUSTER_CIDR = "10.244.0.0/16"  # every node's pod CIDR is a /24 of it
# Service addresses (kind's range), routed via the node: it holds the `kubernetes` Service's.
SERVICE_CIDR = "10.96.0.0/12"


def cluster_network_config(name: str, subnet: str, data_dir: str, *, mtu: int = 1500) -> JsonObj:
    """The main interface (eth0): a point-to-point veth to the node with host-local IPAM, as
    kindnet configures it: the whole cluster CIDR routed via the node, which routes other
    nodes' pod CIDRs over the underlay, and the Service CIDR (the node answers the API
    server's Service address); the MTU is the underlay's."""
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "ptp",
        "ipMasq": False,
        "mtu": mtu,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": subnet}]],
            "routes": [{"dst": CLUSTER_CIDR}, {"dst": SERVICE_CIDR}],
            "dataDir": data_dir,
        },
    }


def first_ip(result: JsonObj | None) -> str | None:
    for ip in (result or {}).get("ips") or []:
        if ip.get("address"):
            return str(ip["address"]).split("/")[0]
    return None
