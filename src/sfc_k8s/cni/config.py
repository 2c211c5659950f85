"""Parse what the runtime hands ``sfc-cni``: the ``CNI_*`` environment and the JSON network config.

Called by ``plugin.main`` before any command runs; every problem becomes a ``CniError`` with the
spec's code (4 for the environment, 6 for undecodable JSON, 7 for an invalid config, 1 for an
unsupported ``cniVersion``, 2 for a field this plugin does not implement). Plain classes with
``__slots__`` instead of dataclasses: ``dataclasses`` imports ``inspect`` and costs ~25 ms, more
than the rest of the ADD path together (see docs/cni.md).

Config keys (besides the standard ``cniVersion``, ``name``, ``type``, ``ipam``,
``runtimeConfig``, ``prevResult``): ``mtu`` (int), ``mac`` (str), ``macSeed`` (str),
``logFile`` (str), ``logLevel`` (``error``/``info``/``debug``).
"""

from __future__ import annotations

from sfc_k8s.cni.errors import CniError, Code

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
LOG_LEVELS = ("error", "info", "debug")
IFNAMSIZ = 15
MTU_MIN, MTU_MAX = 68, 65535


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _valid_id(value: str) -> bool:
    """The spec's ID/name syntax: a letter or digit, then letters, digits, ``_ . -``."""
    if not value or not value[0].isascii() or not value[0].isalnum():
        return False
    return all(c.isascii() and (c.isalnum() or c in "_.-") for c in value)


def check_ifname(name: str, what: str) -> None:
    """Reject names the kernel would refuse: empty, too long, ``.``/``..``, ``/``, ``:``, spaces."""
    problem = ""
    if not name:
        problem = "is empty"
    elif len(name.encode()) > IFNAMSIZ:
        problem = f"is longer than {IFNAMSIZ} bytes"
    elif name in (".", ".."):
        problem = "is not a valid interface name"
    elif any(c in "/:" or c.isspace() or not c.isprintable() for c in name):
        problem = "contains '/', ':', whitespace or control characters"
    if problem:
        raise CniError(Code.INVALID_ENVIRONMENT, f"{what}={name!r} {problem}")


class Env:
    """The ``CNI_*`` variables of one invocation."""

    __slots__ = ("args", "command", "container_id", "ifname", "netns", "path")

    def __init__(
        self,
        command: str,
        *,
        container_id: str = "",
        netns: str = "",
        ifname: str = "",
        args: dict[str, str] | None = None,
        path: tuple[str, ...] = (),
    ) -> None:
        self.command = command
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.args = args or {}
        self.path = path

    @property
    def pod_uid(self) -> str:
        """What names the host-side veth: the pod UID if Multus/kubelet passed it, else the ID."""
        return self.args.get("K8S_POD_UID") or self.container_id


def parse_cni_args(raw: str) -> dict[str, str]:
    """``CNI_ARGS`` (``K=V;K2=V2``) as a dict; raises code 4 when a pair has no ``=``."""
    args: dict[str, str] = {}
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(
                Code.INVALID_ENVIRONMENT,
                f"CNI_ARGS={raw!r} is malformed: each item must be KEY=VALUE, separated by ';'",
            )
        args[key] = value
    return args


def parse_env(environ: Mapping[str, str]) -> Env:
    """Read and validate the ``CNI_*`` variables for the command in ``CNI_COMMAND``."""
    command = environ.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(
            Code.INVALID_ENVIRONMENT,
            f"CNI_COMMAND={command!r} is not one of {', '.join(COMMANDS)}",
        )
    path = tuple(p for p in environ.get("CNI_PATH", "").split(":") if p)
    if command in ("VERSION", "STATUS", "GC"):
        return Env(command, path=path)
    container_id = environ.get("CNI_CONTAINERID", "")
    if not _valid_id(container_id):
        raise CniError(
            Code.INVALID_ENVIRONMENT,
            f"CNI_CONTAINERID={container_id!r} is missing or invalid: it must start with a letter"
            " or digit and contain only letters, digits, '_', '.' and '-'",
        )
    ifname = environ.get("CNI_IFNAME", "")
    check_ifname(ifname, "CNI_IFNAME")
    netns = environ.get("CNI_NETNS", "")
    if command != "DEL" and not netns:
        raise CniError(Code.INVALID_ENVIRONMENT, f"CNI_NETNS is required for {command}")
    args = parse_cni_args(environ.get("CNI_ARGS", ""))
    return Env(command, container_id=container_id, netns=netns, ifname=ifname, args=args, path=path)


class NetConf:
    """The network configuration on stdin, validated."""

    __slots__ = (
        "cni_version",
        "ipam_type",
        "log_file",
        "log_level",
        "mac",
        "mtu",
        "name",
        "prev_result",
        "raw",
        "text",
        "valid_attachments",
    )

    def __init__(self, raw: dict[str, object], text: str) -> None:
        self.raw = raw
        self.text = text
        self.cni_version = ""
        self.name = ""
        self.ipam_type: str | None = None
        self.mtu: int | None = None
        self.mac: str | None = None
        self.log_file: str | None = None
        self.log_level = "info"
        self.prev_result: dict[str, object] | None = None
        self.valid_attachments: list[tuple[str, str]] | None = None

    @property
    def l3(self) -> bool:
        """L3 mode: an IPAM plugin assigns addresses; L2 mode (no ``ipam``): none at all."""
        return self.ipam_type is not None


def _invalid(msg: str) -> CniError:
    return CniError(Code.INVALID_CONFIG, msg)


def decode_config(text: str) -> dict[str, object]:
    """Decode stdin as a JSON object (code 6 when it is not JSON, 7 when not an object)."""
    from sfc_k8s.coldstart import json_loads

    try:
        raw = json_loads(text)
    except ValueError as err:
        raise CniError(
            Code.DECODING_FAILURE, f"the network configuration on stdin is not valid JSON: {err}"
        ) from err
    if not isinstance(raw, dict):
        raise _invalid("the network configuration must be a JSON object")
    return raw


def check_version(raw: Mapping[str, object]) -> str:
    version = raw.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise _invalid('cniVersion is required (a string such as "1.0.0")')
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            Code.INCOMPATIBLE_VERSION,
            f"cniVersion {version!r} is not supported: use one of {', '.join(SUPPORTED_VERSIONS)}",
        )
    return version


def parse_config(text: str, command: str) -> NetConf:
    """Validate the network configuration ``text`` for ``command``."""
    from sfc_k8s.cni.netlink import mac_bytes
    from sfc_k8s.naming import mac_from_seed

    raw = decode_config(text)
    conf = NetConf(raw, text)
    conf.cni_version = check_version(raw)

    name = raw.get("name")
    if not isinstance(name, str) or not _valid_id(name):
        raise _invalid(
            f"name={name!r} is missing or invalid: the network name must start with a letter or"
            " digit and contain only letters, digits, '_', '.' and '-'"
        )
    conf.name = name
    kind = raw.get("type")
    if not isinstance(kind, str) or not kind:
        raise _invalid('type is required ("sfc-cni")')
    if raw.get("ipMasq") is True:
        raise CniError(
            Code.UNSUPPORTED_FIELD,
            "ipMasq=true is not supported by sfc-cni: data-plane interfaces are never masqueraded",
        )

    ipam = raw.get("ipam")
    if ipam is not None and ipam != {}:
        if not isinstance(ipam, dict):
            raise _invalid('ipam must be an object with a "type" (e.g. "host-local", "static")')
        ipam_type = ipam.get("type")
        if not isinstance(ipam_type, str) or not ipam_type or "/" in ipam_type:
            raise _invalid(
                f"ipam.type={ipam_type!r} must name an IPAM plugin found in CNI_PATH"
                ' (e.g. "host-local", "static")'
            )
        conf.ipam_type = ipam_type

    mtu = raw.get("mtu")
    if mtu is not None:
        if not isinstance(mtu, int) or isinstance(mtu, bool) or not MTU_MIN <= mtu <= MTU_MAX:
            raise _invalid(f"mtu={mtu!r} must be an integer between {MTU_MIN} and {MTU_MAX}")
        conf.mtu = mtu

    mac = raw.get("mac")
    seed = raw.get("macSeed")
    runtime = raw.get("runtimeConfig")
    if isinstance(runtime, dict) and runtime.get("mac"):
        mac = runtime["mac"]  # Multus' "mac" capability (pod annotation) wins
    if mac is not None:
        if not isinstance(mac, str):
            raise _invalid(f'mac={mac!r} must be a string like "02:00:5e:10:00:01"')
        try:
            octets = mac_bytes(mac)
        except ValueError as err:
            raise _invalid(f"mac={mac!r} is not a MAC address: {err}") from err
        if octets[0] & 1:
            raise _invalid(f"mac={mac!r} is a multicast address: the first octet must be even")
        conf.mac = mac.lower()
    elif seed is not None:
        if not isinstance(seed, str) or not seed:
            raise _invalid(f"macSeed={seed!r} must be a non-empty string")
        conf.mac = mac_from_seed(seed)

    log_file = raw.get("logFile")
    if log_file is not None:
        if not isinstance(log_file, str) or not log_file:
            raise _invalid(f"logFile={log_file!r} must be a file path")
        conf.log_file = log_file
    level = raw.get("logLevel", "info")
    if level not in LOG_LEVELS:
        raise _invalid(f"logLevel={level!r} must be one of {', '.join(LOG_LEVELS)}")
    conf.log_level = str(level)

    prev = raw.get("prevResult")
    if prev is not None:
        if not isinstance(prev, dict):
            raise _invalid("prevResult must be an object (the result of the ADD)")
        conf.prev_result = prev
    if command == "CHECK" and conf.prev_result is None:
        raise _invalid("CHECK needs prevResult: the result the ADD returned")

    if command == "GC":
        conf.valid_attachments = _valid_attachments(raw)
    return conf


def _valid_attachments(raw: Mapping[str, object]) -> list[tuple[str, str]]:
    items = raw.get("cni.dev/valid-attachments", [])
    if not isinstance(items, list):
        raise _invalid("cni.dev/valid-attachments must be a list of {containerID, ifname}")
    out: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, dict):
            raise _invalid(f"cni.dev/valid-attachments entry {item!r} must be an object")
        cid, ifname = item.get("containerID"), item.get("ifname")
        if not isinstance(cid, str) or not isinstance(ifname, str):
            raise _invalid(
                f"cni.dev/valid-attachments entry {item!r} needs string containerID and ifname"
            )
        out.append((cid, ifname))
    return out
