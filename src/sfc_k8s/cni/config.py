"""Parse what the runtime hands ``sfc-cni``: the ``CNI_*`` environment and the JSON network config.

Called by ``plugin.main`` before any command runs; every problem becomes a ``CniError`` with the
spec's code (4 for the environment, 6 for undecodable JSON, 7 for an invalid config, 1 for an
unsupported ``cniVersion``, 2 for a field this plugin does not implement) whose message names
the field, the value given and the expected form (``errors.invalid``). Plain classes with
``__slots__`` instead of dataclasses: ``dataclasses`` imports ``inspect`` and costs ~25 ms, more
than the rest of the ADD path together (see docs/cni.md).

Config keys (besides the standard ``cniVersion``, ``name``, ``type``, ``ipam``,
``runtimeConfig``, ``prevResult``): ``mtu`` (int), ``mac`` (str), ``macSeed`` (str),
``logFile`` (str), ``logLevel`` (``error``/``info``/``debug``).
"""

from __future__ import annotations

from sfc_k8s.cni.errors import MISSING, Code, invalid

# sfc_k8s.naming.IFNAME_MAX, written again so that parsing a config does not import naming (and
# its hashing) on the DEL/CHECK paths, which never name a host end.
IFNAME_MAX = 15

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
LOG_LEVELS = ("error", "info", "debug")
MTU_MIN, MTU_MAX = 68, 65535
ENV = Code.INVALID_ENVIRONMENT  # the code of every error about a CNI_* variable

# The expected forms that error messages name (see ``errors.invalid``).
ID_FORM = "a letter or digit, then letters, digits, '_', '.' or '-'"
IFNAME_FORM = (
    f"an interface name of 1 to {IFNAME_MAX} bytes, not '.' or '..', without '/', ':',"
    " whitespace or control characters"
)
CONFIG_FORM = "a JSON object (the network configuration)"
MAC_FORM = 'a unicast MAC address: six hex octets, the first even, like "02:00:5e:10:00:01"'
ATTACHMENT_FORM = 'an object with string "containerID" and "ifname"'


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _valid_id(value: str) -> bool:
    """The spec's ID/name syntax: a letter or digit, then letters, digits, ``_ . -``."""
    if not value or not value[0].isascii() or not value[0].isalnum():
        return False
    return all(c.isascii() and (c.isalnum() or c in "_.-") for c in value)


def _valid_ifname(name: str) -> bool:
    """A name the kernel accepts: 1-15 bytes, not ``.``/``..``, no ``/``, ``:``, spaces."""
    if not name or len(name.encode()) > IFNAME_MAX or name in (".", ".."):
        return False
    return not any(c in "/:" or c.isspace() or not c.isprintable() for c in name)


def check_ifname(name: str | None, what: str) -> str:
    """``name`` when the kernel would accept it; code 4, naming ``what`` holds it, otherwise."""
    if name is None or not _valid_ifname(name):
        raise invalid(what, MISSING if name is None else name, IFNAME_FORM, code=ENV)
    return name


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
            raise invalid("CNI_ARGS", raw, "KEY=VALUE items separated by ';'", code=ENV)
        args[key] = value
    return args


def parse_env(environ: Mapping[str, str]) -> Env:
    """Read and validate the ``CNI_*`` variables for the command in ``CNI_COMMAND``."""
    command = environ.get("CNI_COMMAND")
    if command not in COMMANDS:
        given = MISSING if command is None else command
        raise invalid("CNI_COMMAND", given, f"one of {', '.join(COMMANDS)}", code=ENV)
    path = tuple(p for p in environ.get("CNI_PATH", "").split(":") if p)
    if command in ("VERSION", "STATUS", "GC"):
        return Env(command, path=path)
    container_id = environ.get("CNI_CONTAINERID")
    if container_id is None or not _valid_id(container_id):
        given = MISSING if container_id is None else container_id
        raise invalid("CNI_CONTAINERID", given, f"a container ID: {ID_FORM}", code=ENV)
    ifname = check_ifname(environ.get("CNI_IFNAME"), "CNI_IFNAME")
    netns = environ.get("CNI_NETNS", "")
    if command != "DEL" and not netns:
        given = MISSING if "CNI_NETNS" not in environ else netns
        raise invalid("CNI_NETNS", given, f"the pod's network namespace path ({command})", code=ENV)
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


def decode_config(text: str) -> dict[str, object]:
    """Decode stdin as a JSON object (code 6 when it is not JSON, 7 when not an object)."""
    from sfc_k8s.coldstart import json_loads

    try:
        raw = json_loads(text)
    except ValueError as err:  # the decoder's position goes to details
        code = Code.DECODING_FAILURE
        raise invalid("stdin", text, CONFIG_FORM, code=code, details=str(err)) from err
    if not isinstance(raw, dict):
        raise invalid("stdin", raw, CONFIG_FORM)
    return raw


def check_version(raw: Mapping[str, object]) -> str:
    """The config's ``cniVersion``: code 7 when missing or not a string, 1 when unsupported."""
    version = raw.get("cniVersion", MISSING)
    expected = f"one of {', '.join(SUPPORTED_VERSIONS)}"
    if not isinstance(version, str):
        raise invalid("cniVersion", version, expected)
    if version not in SUPPORTED_VERSIONS:
        raise invalid("cniVersion", version, expected, code=Code.INCOMPATIBLE_VERSION)
    return version


def parse_config(text: str, command: str) -> NetConf:
    """Validate the network configuration ``text`` for ``command``."""
    raw = decode_config(text)
    conf = NetConf(raw, text)
    conf.cni_version = check_version(raw)
    conf.name = _name(raw)
    _check_type(raw)
    if raw.get("ipMasq") is True:
        raise invalid(
            "ipMasq",
            True,
            "false or absent: sfc-cni never masquerades",
            code=Code.UNSUPPORTED_FIELD,
        )
    conf.ipam_type = _ipam_type(raw)
    conf.mtu = _mtu(raw)
    conf.mac = _mac(raw)
    conf.log_file = _log_file(raw)
    conf.log_level = _log_level(raw)
    conf.prev_result = _prev_result(raw, command)
    if command == "GC":
        conf.valid_attachments = _valid_attachments(raw)
    return conf


def _name(raw: Mapping[str, object]) -> str:
    name = raw.get("name", MISSING)
    if not isinstance(name, str) or not _valid_id(name):
        raise invalid("name", name, f"a network name: {ID_FORM}")
    return name


def _check_type(raw: Mapping[str, object]) -> None:
    kind = raw.get("type", MISSING)
    if not isinstance(kind, str) or not kind:
        raise invalid("type", kind, '"sfc-cni"')


def _ipam_type(raw: Mapping[str, object]) -> str | None:
    """The IPAM plugin's name (L3 mode), or None for no ``ipam`` or ``{}`` (L2 mode)."""
    ipam = raw.get("ipam")
    if ipam is None or ipam == {}:
        return None
    if not isinstance(ipam, dict):
        raise invalid("ipam", ipam, 'an object with a "type", like {"type": "host-local"}')
    kind = ipam.get("type", MISSING)
    if not isinstance(kind, str) or not kind or "/" in kind:
        raise invalid("ipam.type", kind, 'the name of an IPAM plugin, like "host-local"')
    return kind


def _mtu(raw: Mapping[str, object]) -> int | None:
    mtu = raw.get("mtu")
    if mtu is None:
        return None
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not MTU_MIN <= mtu <= MTU_MAX:
        raise invalid("mtu", mtu, f"an integer from {MTU_MIN} to {MTU_MAX}")
    return mtu


def _mac(raw: Mapping[str, object]) -> str | None:
    """The pod end's MAC: Multus' ``runtimeConfig.mac``, else ``mac``, else from ``macSeed``."""
    runtime = raw.get("runtimeConfig")
    if isinstance(runtime, dict) and runtime.get("mac"):
        return _unicast_mac("runtimeConfig.mac", runtime["mac"])  # the pod annotation wins
    mac = raw.get("mac")
    if mac is not None:
        return _unicast_mac("mac", mac)
    seed = raw.get("macSeed")
    if seed is None:
        return None
    if not isinstance(seed, str) or not seed:
        raise invalid("macSeed", seed, "a non-empty string")
    from sfc_k8s.naming import mac_from_seed

    return mac_from_seed(seed)


def _unicast_mac(field: str, value: object) -> str:
    """``value`` lower-cased when it is a unicast MAC address; the config error otherwise."""
    octets = value.split(":") if isinstance(value, str) else []
    if len(octets) != 6 or not all(len(o) == 2 and _is_hex(o) for o in octets):
        raise invalid(field, value, MAC_FORM)
    if int(octets[0], 16) & 1:  # the group bit: a multicast address
        raise invalid(field, value, MAC_FORM)
    return str(value).lower()


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _log_file(raw: Mapping[str, object]) -> str | None:
    log_file = raw.get("logFile")
    if log_file is None:
        return None
    if not isinstance(log_file, str) or not log_file:
        raise invalid("logFile", log_file, "a file path")
    return log_file


def _log_level(raw: Mapping[str, object]) -> str:
    level = raw.get("logLevel", "info")
    if not isinstance(level, str) or level not in LOG_LEVELS:
        raise invalid("logLevel", level, f"one of {', '.join(LOG_LEVELS)}")
    return level


def _prev_result(raw: Mapping[str, object], command: str) -> dict[str, object] | None:
    prev = raw.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise invalid("prevResult", prev, "an object: the result the ADD returned")
    if command == "CHECK" and prev is None:
        raise invalid("prevResult", MISSING, "the result the ADD returned (CHECK needs it)")
    return prev


def _valid_attachments(raw: Mapping[str, object]) -> list[tuple[str, str]]:
    field = "cni.dev/valid-attachments"
    items = raw.get(field, [])
    if not isinstance(items, list):
        raise invalid(field, items, f"a list, each item {ATTACHMENT_FORM}")
    out: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        cid = item.get("containerID") if isinstance(item, dict) else None
        ifname = item.get("ifname") if isinstance(item, dict) else None
        if not isinstance(cid, str) or not isinstance(ifname, str):
            raise invalid(f"{field}[{i}]", item, ATTACHMENT_FORM)
        out.append((cid, ifname))
    return out
