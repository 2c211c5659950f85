"""CNI results: read the IPAM plugin's (or a ``prevResult``) in any version, write ours.

``plugin`` calls ``IpConfig.from_result`` on what the IPAM delegate printed, applies the addresses
and routes, and prints ``format_result(...)`` in the config's ``cniVersion``. Formats differ:
0.3.x/0.4.0 tag each IP with ``version``; 1.1.0 adds interface ``mtu`` and route
``mtu``/``advmss``/``priority``/``table``/``scope``, which older versions do not have.
"""

from __future__ import annotations

import _socket

from sfc_k8s.cni.errors import MISSING, invalid

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

ROUTE_FIELDS_1_1 = ("mtu", "advmss", "priority", "table", "scope")
CIDR_FORM = 'an IP address with a prefix length, like "10.0.0.2/24" or "fd00::2/64"'
IP_FORM = 'an IP address, like "10.0.0.1" or "fd00::1"'


def parse_ip(text: str) -> tuple[int, bytes]:
    """``'10.0.0.1'`` or ``'fd00::1'`` -> (family, packed bytes); ``ValueError`` otherwise."""
    family = _socket.AF_INET6 if ":" in text else _socket.AF_INET
    try:
        return family, _socket.inet_pton(family, text)
    except OSError as err:
        raise ValueError(f"{text!r} is not an IP address") from err


def parse_cidr(text: str) -> tuple[int, bytes, int]:
    """``'10.0.0.1/24'`` -> (family, packed address, prefix length); ``ValueError`` otherwise."""
    addr, sep, prefix = text.partition("/")
    family, packed = parse_ip(addr)
    limit = 32 if family == _socket.AF_INET else 128
    if not sep or not prefix.isdigit() or not 0 <= int(prefix) <= limit:
        raise ValueError(f"{text!r} is not an address with a prefix length (like 10.0.0.2/24)")
    return family, packed, int(prefix)


def format_ip(family: int, packed: bytes) -> str:
    return _socket.inet_ntop(family, packed)


class IpConfig:
    """Addresses, routes and DNS as an IPAM plugin assigned them (version-independent)."""

    __slots__ = ("dns", "ips", "routes")

    def __init__(self) -> None:
        self.ips: list[dict[str, object]] = []  # {"address", "gateway"?}
        self.routes: list[dict[str, object]] = []  # {"dst", "gw"?, 1.1.0 fields?}
        self.dns: dict[str, object] = {}

    @classmethod
    def from_result(cls, result: Mapping[str, object], *, where: str, code: int) -> IpConfig:
        """Read the ``ips``/``routes``/``dns`` of a result in any supported version.

        A malformed one raises ``code``, naming the field as ``where`` + its path (``where`` is
        ``"prevResult."`` or ``'IPAM plugin "static" result: '``), the value and the form.
        """
        conf = cls()
        ips, routes, dns = (result.get(key) for key in ("ips", "routes", "dns"))
        conf.ips = _ips([] if ips is None else ips, where, code)
        conf.routes = _routes([] if routes is None else routes, where, code)
        if dns is not None and not isinstance(dns, dict):
            raise invalid(f"{where}dns", dns, "an object", code=code)
        conf.dns = dict(dns or {})
        return conf


def _valid(parse: Callable[[str], object], value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parse(value)
    except ValueError:
        return False
    return True


def _ips(ips: object, where: str, code: int) -> list[dict[str, object]]:
    if not isinstance(ips, list):
        raise invalid(f"{where}ips", ips, 'a list of {"address", "gateway"} objects', code=code)
    out: list[dict[str, object]] = []
    for i, ip in enumerate(ips):
        if not isinstance(ip, dict):
            raise invalid(f"{where}ips[{i}]", ip, 'an object with an "address"', code=code)
        address, gateway = ip.get("address", MISSING), ip.get("gateway")
        if not _valid(parse_cidr, address):
            raise invalid(f"{where}ips[{i}].address", address, CIDR_FORM, code=code)
        if gateway is not None and not _valid(parse_ip, gateway):
            raise invalid(f"{where}ips[{i}].gateway", gateway, IP_FORM, code=code)
        out.append({"address": address, "gateway": gateway} if gateway else {"address": address})
    return out


def _routes(routes: object, where: str, code: int) -> list[dict[str, object]]:
    if not isinstance(routes, list):
        raise invalid(f"{where}routes", routes, 'a list of {"dst", "gw"} objects', code=code)
    for i, route in enumerate(routes):
        if not isinstance(route, dict):
            raise invalid(f"{where}routes[{i}]", route, 'an object with a "dst"', code=code)
        dst, gw = route.get("dst", MISSING), route.get("gw")
        if not _valid(parse_cidr, dst):
            raise invalid(f"{where}routes[{i}].dst", dst, CIDR_FORM, code=code)
        if gw and not _valid(parse_ip, gw):
            raise invalid(f"{where}routes[{i}].gw", gw, IP_FORM, code=code)
    return [dict(route) for route in routes]


def format_result(
    version: str,
    interfaces: list[dict[str, object]],
    ip_config: IpConfig | None,
    *,
    pod_interface: int,
) -> dict[str, object]:
    """Our ADD result in the format of ``version``; IPs are attached to ``pod_interface``."""
    legacy = version in ("0.3.0", "0.3.1", "0.4.0")
    v11 = version == "1.1.0"
    result: dict[str, object] = {"cniVersion": version}
    result["interfaces"] = [
        {k: v for k, v in iface.items() if v is not None and (v11 or k != "mtu")}
        for iface in interfaces
    ]
    if ip_config is not None:
        ips: list[dict[str, object]] = []
        for ip in ip_config.ips:
            entry: dict[str, object] = {}
            if legacy:
                entry["version"] = "6" if ":" in str(ip["address"]) else "4"
            entry["address"] = ip["address"]
            if ip.get("gateway"):
                entry["gateway"] = ip["gateway"]
            entry["interface"] = pod_interface
            ips.append(entry)
        result["ips"] = ips
        routes: list[dict[str, object]] = []
        for route in ip_config.routes:
            keep = ("dst", "gw", *ROUTE_FIELDS_1_1) if v11 else ("dst", "gw")
            routes.append({k: route[k] for k in keep if route.get(k) is not None})
        if routes:
            result["routes"] = routes
        result["dns"] = ip_config.dns
    else:
        result["dns"] = {}
    return result
