"""CNI results: read the IPAM plugin's (or a ``prevResult``) in any version, write ours.

``plugin`` calls ``IpConfig.from_result`` on what the IPAM delegate printed, applies the addresses
and routes, and prints ``format_result(...)`` in the config's ``cniVersion``. Formats differ:
0.3.x/0.4.0 tag each IP with ``version``; 1.1.0 adds interface ``mtu`` and route
``mtu``/``advmss``/``priority``/``table``/``scope``, which older versions do not have.
"""

from __future__ import annotations

import _socket

from sfc_k8s.cni.errors import CniError, Code

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

ROUTE_FIELDS_1_1 = ("mtu", "advmss", "priority", "table", "scope")


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
    def from_result(cls, result: Mapping[str, object], source: str) -> IpConfig:
        """Read the ``ips``/``routes``/``dns`` of a result in any supported version."""
        conf = cls()
        ips = result.get("ips", [])
        routes = result.get("routes", [])
        dns = result.get("dns", {})
        ips = [] if ips is None else ips
        routes = [] if routes is None else routes
        dns = {} if dns is None else dns
        if not isinstance(ips, list) or not isinstance(routes, list) or not isinstance(dns, dict):
            raise CniError(
                Code.IPAM_FAILURE, f"{source} returned a malformed result: {dict(result)!r}"
            )
        for ip in ips:
            address = ip.get("address") if isinstance(ip, dict) else None
            if not isinstance(address, str):
                raise CniError(
                    Code.IPAM_FAILURE, f"{source} returned an IP without address: {ip!r}"
                )
            try:
                parse_cidr(address)
                gateway = ip.get("gateway")
                if gateway is not None:
                    parse_ip(str(gateway))
            except ValueError as err:
                raise CniError(Code.IPAM_FAILURE, f"{source} returned a bad IP: {err}") from err
            entry: dict[str, object] = {"address": address}
            if gateway:
                entry["gateway"] = gateway
            conf.ips.append(entry)
        for route in routes:
            dst = route.get("dst") if isinstance(route, dict) else None
            if not isinstance(dst, str):
                raise CniError(
                    Code.IPAM_FAILURE, f"{source} returned a route without dst: {route!r}"
                )
            try:
                parse_cidr(dst)
                if route.get("gw"):
                    parse_ip(str(route["gw"]))
            except ValueError as err:
                raise CniError(Code.IPAM_FAILURE, f"{source} returned a bad route: {err}") from err
            conf.routes.append(dict(route))
        conf.dns = dict(dns)
        return conf


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
