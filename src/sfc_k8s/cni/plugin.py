"""The ``sfc-cni`` executable: one data-plane veth per call, as Multus delegates it.

Invoked by the runtime (Multus, containerd, the local cluster's node runtime) once per command,
with the ``CNI_*`` environment and the network config on stdin; ``main`` dispatches on
``CNI_COMMAND`` to ``cmd_add``/``cmd_del``/``cmd_check``/``cmd_status``/``cmd_gc``/``cmd_version``
and prints the result, or the spec's error object, on stdout. Logs go to stderr and to the
config's ``logFile``; stdout carries nothing else.

ADD creates a veth pair whose host end is named by ``sfc_k8s.naming.host_ifname`` (so the node
agent finds it from the pod object) and whose pod end carries the shared MAC of the NF interface;
in L3 mode the IPAM delegate's addresses and routes go on the pod end. The import graph stays on C
modules of the standard library (see docs/cni.md): this file is on every pod start's latency path.
"""

from __future__ import annotations

import os
import sys
import time

from sfc_k8s.cni.config import (
    CONFIG_FORM,
    Env,
    NetConf,
    parse_config,
    parse_env,
    version_tuple,
)
from sfc_k8s.cni.errors import CniError, Code, invalid, show

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from sfc_k8s.cni.ipam import Delegate
    from sfc_k8s.cni.netlink import Link, NetlinkError, Rtnl
    from sfc_k8s.cni.result import IpConfig

ENODEV = 19
EEXIST = 17
TRANSIENT_ERRNOS = (4, 11, 16, 105)  # EINTR, EAGAIN, EBUSY, ENOBUFS
ALIAS_PREFIX = "sfc-cni/"
LATEST_VERSION = "1.1.0"
_LEVELS = {"error": 0, "info": 1, "debug": 2}


class Log:
    """Log lines to stderr and, when the config names one, to a file; never to stdout."""

    def __init__(self) -> None:
        self.level = _LEVELS["info"]
        self.file: str | None = None
        self.context = ""

    def configure(self, conf: NetConf, env: Env) -> None:
        self.level = _LEVELS[conf.log_level]
        self.file = conf.log_file
        self.context = f"{env.command} net={conf.name}"
        if env.container_id:
            self.context += f" container={env.container_id[:12]} if={env.ifname}"

    def write(self, level: str, msg: str) -> None:
        if _LEVELS[level] > self.level:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        line = f"{stamp}Z {level.upper()} sfc-cni[{os.getpid()}] {self.context}: {msg}\n"
        sys.stderr.write(line)
        if self.file:
            try:
                with open(self.file, "a", encoding="utf-8") as out:
                    out.write(line)
            except OSError as err:
                sys.stderr.write(f"sfc-cni: cannot write log file {self.file!r}: {err}\n")


log = Log()


class Undo:
    """Undo steps of a half-done ADD, run newest first (a dependency-free ``ExitStack``)."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, step: Callable[[], object]) -> None:
        self._steps.append((what, step))

    def discard(self) -> None:
        self._steps.clear()

    def run(self) -> None:
        while self._steps:
            what, step = self._steps.pop()
            try:
                step()
            except Exception as err:  # keep undoing; the ADD error is the one to report
                log.write("error", f"rollback: could not {what}: {err}")


def netlink_error(err: NetlinkError) -> CniError:
    code = Code.TRY_AGAIN_LATER if err.errno in TRANSIENT_ERRNOS else Code.NETLINK_FAILURE
    return CniError(code, str(err), err.kernel_msg)


def host_name_for(env: Env) -> str:
    from sfc_k8s.naming import host_ifname

    return host_ifname(env.pod_uid, env.ifname)


def alias_for(conf: NetConf, env: Env) -> str:
    """What the host end's ifalias records: lets GC map a veth back to its attachment."""
    return f"{ALIAS_PREFIX}{conf.name}/{env.container_id}/{env.ifname}"


# --- ADD ----------------------------------------------------------------------------------------


def cmd_add(env: Env, conf: NetConf) -> dict[str, object]:
    """Lease (L3), create the veth with its pod end inside the pod, configure both ends.

    Each step that leaves something behind pushes its undo first thing after it succeeds; any
    failure runs them newest first (the veth goes, then the lease), so a failed ADD leaves nothing.
    """
    from sfc_k8s.cni import netlink as nl
    from sfc_k8s.cni.netns import open_netns
    from sfc_k8s.cni.result import format_result

    host_name = host_name_for(env)
    netns_fd = open_netns(env.netns)
    undo = Undo()
    try:
        # The IPAM delegate runs while the veth is made; its addresses are applied last.
        lease = _ipam_start(env, conf, undo) if conf.l3 else None
        host = nl.Rtnl()
        undo.push("close the host netlink socket", host.close)
        mac = nl.mac_bytes(conf.mac) if conf.mac else None
        try:
            host.request(
                nl.new_veth(
                    host_name, env.ifname, peer_netns_fd=netns_fd, peer_mac=mac, mtu=conf.mtu
                )
            )
        except nl.NetlinkError as err:
            if err.errno == EEXIST:
                raise _exists_error(host, host_name, env) from err
            raise netlink_error(err) from err
        undo.push(f"delete veth {host_name!r}", lambda: _delete_link(host, host_name))
        try:
            host_link = _bring_up(host, host_name, alias=alias_for(conf, env))
            try:
                pod = nl.Rtnl.in_netns(netns_fd)
            except OSError as err:
                raise CniError(
                    Code.IO_FAILURE, f"failed to open netlink in {env.netns!r}: {err}"
                ) from err
            undo.push("close the pod netlink socket", pod.close)
            pod_link = _bring_up(pod, env.ifname, alias=None)
            ip_config = _ipam_finish(lease, conf) if lease is not None else None
            if ip_config is not None:
                _apply_ip_config(pod, pod_link, ip_config)
        except nl.NetlinkError as err:
            raise netlink_error(err) from err
        except OSError as err:
            raise CniError(Code.IO_FAILURE, f"netlink I/O failed: {err}") from err
        interfaces: list[dict[str, object]] = [
            {"name": host_name, "mac": host_link.mac, "mtu": host_link.mtu},
            {"name": env.ifname, "mac": pod_link.mac, "mtu": pod_link.mtu, "sandbox": env.netns},
        ]
        result = format_result(conf.cni_version, interfaces, ip_config, pod_interface=1)
        host.close()
        pod.close()
        undo.discard()
        log.write("info", f"added {host_name} <-> {env.ifname} mac={pod_link.mac}")
        return result
    finally:
        undo.run()
        os.close(netns_fd)


def _ipam_start(env: Env, conf: NetConf, undo: Undo) -> Delegate:
    """Start the IPAM ADD; arm its release (wait for it, then IPAM DEL) for rollback."""
    from sfc_k8s.cni.ipam import delegate_config, run_ipam, start

    kind = conf.ipam_type or ""
    stdin = delegate_config(conf.raw, conf.text, conf.cni_version)
    lease = start("ADD", kind, env.path, stdin)

    def release() -> None:
        lease.abandon()
        run_ipam("DEL", kind, env.path, stdin, parse=False)

    undo.push(f"release the IPAM lease ({kind})", release)
    return lease


def _ipam_finish(lease: Delegate, conf: NetConf) -> IpConfig:
    from sfc_k8s.cni.result import IpConfig

    result = lease.finish()
    assert result is not None
    where = f"IPAM plugin {show(conf.ipam_type)} result: "
    return IpConfig.from_result(result, where=where, code=Code.IPAM_FAILURE)


def _bring_up(rtnl: Rtnl, name: str, *, alias: str | None) -> Link:
    """No IPv6 autoconfiguration, then up, in one round trip; returns the link as it is now."""
    from sfc_k8s.cni import netlink as nl

    replies = rtnl.batch(
        [
            nl.set_no_ipv6_autoconf(name),
            nl.set_up(name, alias=alias),
            nl.get_link(name),
        ]
    )
    return nl.Link(replies[2][0])


def link_local(mac: bytes) -> bytes:
    """The fe80::/64 address whose interface identifier is ``mac``'s modified EUI-64.

    Derived from the shared MAC, so every replica of an NF interface has the same one, as it has
    the same MAC: neighbours keep one entry whichever replica answers (RFC 4291, appendix A).
    """
    return b"\xfe\x80" + bytes(6) + bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:6]


def _addresses(ip_config: IpConfig, mac: str) -> list[tuple[int, bytes, int]]:
    """(family, address, prefix length) of every address the pod end carries in L3 mode.

    The IPAM plugin's, and with any IPv6 among them, first, the link-local address
    (``link_local``) unless the IPAM plugin gave one: addr_gen_mode is none, so the kernel
    makes none, and without one a routing NF cannot resolve a next hop (Neighbour Solicitations
    are sent from a link-local address) nor answer a neighbour that uses link-local addresses.
    """
    from sfc_k8s.cni import netlink as nl
    from sfc_k8s.cni.result import parse_cidr

    found = [parse_cidr(str(ip["address"])) for ip in ip_config.ips]
    ipv6 = [addr for family, addr, _ in found if family == nl.AF_INET6]
    if ipv6 and not any(addr[0] == 0xFE and addr[1] & 0xC0 == 0x80 for addr in ipv6):
        found.insert(0, (nl.AF_INET6, link_local(nl.mac_bytes(mac)), 64))
    return found


def _apply_ip_config(pod: Rtnl, link: Link, ip_config: IpConfig) -> None:
    """Put the addresses (``_addresses``) on the pod end, then its routes, in one round trip.

    Every address is added with ``nodad`` (see ``netlink.new_addr``): all replicas carry it, each
    in its own namespace, by design; duplicate address detection could only get in the way.
    """
    from sfc_k8s.cni import netlink as nl
    from sfc_k8s.cni.result import parse_cidr, parse_ip

    requests = [
        nl.new_addr(link.index, link.name, family, addr, prefix)
        for family, addr, prefix in _addresses(ip_config, link.mac)
    ]
    gateways: dict[int, bytes] = {}
    for ip in ip_config.ips:
        if ip.get("gateway"):
            family, gateway = parse_ip(str(ip["gateway"]))
            gateways.setdefault(family, gateway)
    for route in ip_config.routes:
        family, dst, dst_len = parse_cidr(str(route["dst"]))
        gw = parse_ip(str(route["gw"]))[1] if route.get("gw") else gateways.get(family)
        requests.append(
            nl.new_route(link.index, link.name, family, dst=dst, dst_len=dst_len, gw=gw)
        )
    if requests:
        pod.batch(requests)


def _delete_link(rtnl: Rtnl, name: str) -> bool:
    """Delete link ``name``; False when it was already gone."""
    from sfc_k8s.cni import netlink as nl

    try:
        rtnl.request(nl.del_link(name))
    except nl.NetlinkError as err:
        if err.errno == ENODEV:
            return False
        raise
    return True


def _delete_link_index(rtnl: Rtnl, index: int, name: str) -> None:
    """Delete the link with ``index`` (known as ``name``); one already gone is fine."""
    from sfc_k8s.cni import netlink as nl

    try:
        rtnl.request(nl.del_link_index(index, name))
    except nl.NetlinkError as err:
        if err.errno != ENODEV:
            raise


def _exists_error(host: Rtnl, host_name: str, env: Env) -> CniError:
    if host.link(host_name) is not None:
        return CniError(
            Code.INTERFACE_EXISTS,
            f"host interface {host_name!r} for pod {env.pod_uid!r} interface {env.ifname!r}"
            f" already exists: DEL the attachment first (or 'ip link del {host_name}' if it is"
            " a leftover)",
        )
    return CniError(
        Code.INTERFACE_EXISTS,
        f"interface {env.ifname!r} already exists in {env.netns!r}: pick another CNI_IFNAME",
    )


# --- DEL ----------------------------------------------------------------------------------------


def cmd_del(env: Env, conf: NetConf) -> None:
    """Remove the veth and release the lease; anything already gone counts as done.

    Only this attachment's veth is removed: the host end's name comes from the pod UID and the
    interface, which the pod's next sandbox reuses, so a late DEL of the old sandbox (a kubelet
    retry, or one the shim spooled and the agent replays) could otherwise remove the new
    sandbox's. A host end whose ifalias names another container is left alone, and so is a pod
    end whose peer does (``_owner``); the lease is released under this call's container ID,
    which IPAM plugins key their leases by, so the other sandbox's lease stays too.
    """
    from sfc_k8s.cni import netlink as nl

    host_name = host_name_for(env)
    release = None
    if conf.l3:  # the lease is released while the kernel tears the veth down
        from sfc_k8s.cni.ipam import delegate_config, start

        stdin = delegate_config(conf.raw, conf.text, conf.cni_version)
        release = start("DEL", conf.ipam_type or "", env.path, stdin)
    try:
        with nl.Rtnl() as host:
            owner = _owner(host.link(host_name))
            foreign = owner is not None and owner != env.container_id
            removed = False
            if not foreign:
                removed = _delete_link(host, host_name)
                if not removed and env.netns:
                    removed = _delete_pod_end(env, host)
    except Exception as err:
        if release is not None:
            release.abandon()  # no orphan: the runtime will call DEL again
        if isinstance(err, nl.NetlinkError):
            raise netlink_error(err) from err
        raise
    if release is not None:
        release.finish(parse=False)
    if foreign:
        log.write("info", f"left {host_name}: it belongs to container {str(owner)[:12]}")
        return
    state = "deleted" if removed else "already gone:"
    log.write("info", f"{state} {host_name} <-> {env.ifname}")


def _owner(link: Link | None) -> str | None:
    """The container ID a host end's ifalias names (``alias_for``); None when it names none."""
    if link is None or not link.alias or not link.alias.startswith(ALIAS_PREFIX):
        return None
    parts = link.alias[len(ALIAS_PREFIX) :].rsplit("/", 2)
    return parts[1] if len(parts) == 3 else None


def _delete_pod_end(env: Env, host: Rtnl) -> bool:
    """Fallback when the host end is not found under its name: remove the pod's veth end,
    unless its peer is another container's host end (the netns path names another sandbox)."""
    from sfc_k8s.cni import netlink as nl
    from sfc_k8s.cni.netns import open_netns

    try:
        netns_fd = open_netns(env.netns)
    except CniError:
        return False  # the namespace is gone, and the veth with it
    try:
        with nl.Rtnl.in_netns(netns_fd) as pod:
            link = pod.link(env.ifname)
            if link is None or link.kind != "veth":
                return False
            peer_owner = _owner(_link_by_index(host, link.peer_index))
            if peer_owner is not None and peer_owner != env.container_id:
                return False
            return _delete_link(pod, env.ifname)
    finally:
        os.close(netns_fd)


def _link_by_index(rtnl: Rtnl, index: int) -> Link | None:
    from sfc_k8s.cni import netlink as nl

    if not index:
        return None
    try:
        replies = rtnl.request(nl.get_link_by_index(index))
    except nl.NetlinkError as err:
        if err.errno == ENODEV:
            return None
        raise
    return nl.Link(replies[0]) if replies else None


# --- CHECK --------------------------------------------------------------------------------------


def cmd_check(env: Env, conf: NetConf) -> None:
    """Compare ``prevResult`` with the live veth, MAC, addresses and routes; list every gap.

    As the reference ``ptp`` plugin does, in parts: the IPAM plugin's own CHECK, then the link
    (``_link_problems``), its addresses (``_address_problems``) and its routes
    (``_route_problems``). Every difference is reported in one code-103 error.
    """
    from sfc_k8s.cni import netlink as nl
    from sfc_k8s.cni.netns import open_netns
    from sfc_k8s.cni.result import IpConfig

    _require_version(conf, "CHECK", "0.4.0")
    prev = conf.prev_result or {}
    ip_config = IpConfig.from_result(prev, where="prevResult.", code=Code.INVALID_CONFIG)
    if conf.l3:
        from sfc_k8s.cni.ipam import delegate_config, run_ipam

        stdin = delegate_config(conf.raw, conf.text, conf.cni_version)
        run_ipam("CHECK", conf.ipam_type or "", env.path, stdin, parse=False)
    host_name = host_name_for(env)
    prev_pod = _prev_interface(prev, env.ifname)
    problems = [] if prev_pod else [f"prevResult lists no interface {env.ifname!r}"]
    expected_mac = conf.mac or str((prev_pod or {}).get("mac", ""))

    netns_fd = open_netns(env.netns)
    try:
        with nl.Rtnl() as host, nl.Rtnl.in_netns(netns_fd) as pod:
            pod_link = pod.link(env.ifname)
            if pod_link is None:
                raise CniError(
                    Code.CHECK_MISMATCH, f"interface {env.ifname!r} is missing from {env.netns!r}"
                )
            host_link = host.link(host_name)
            problems += _link_problems(pod_link, host_link, host_name, expected_mac, conf.mtu)
            problems += _address_problems(pod, pod_link, ip_config, expected_mac or pod_link.mac)
            problems += _route_problems(pod, pod_link, ip_config)
    except nl.NetlinkError as err:
        raise netlink_error(err) from err
    finally:
        os.close(netns_fd)
    if problems:
        raise CniError(Code.CHECK_MISMATCH, "CHECK found differences: " + "; ".join(problems))
    log.write("info", f"checked {host_name} <-> {env.ifname}")


def _prev_interface(prev: dict[str, object], ifname: str) -> dict[str, object] | None:
    """The entry of ``prevResult.interfaces`` that names the pod interface, if any."""
    interfaces = prev.get("interfaces")
    if not isinstance(interfaces, list):
        return None
    return next((i for i in interfaces if isinstance(i, dict) and i.get("name") == ifname), None)


def _link_problems(
    pod_link: Link, host_link: Link | None, host_name: str, mac: str, mtu: int | None
) -> list[str]:
    """The pod end is a veth whose peer is the host end, with the MAC and MTU, both up."""
    name = pod_link.name
    problems = []
    if host_link is None:
        problems.append(f"host interface {host_name!r} is missing")
    elif pod_link.peer_index != host_link.index:
        problems.append(f"{name!r} is not the peer of host interface {host_name!r}")
    if pod_link.kind != "veth":
        problems.append(f"{name!r} is a {pod_link.kind}, not a veth")
    if mac and pod_link.mac != mac.lower():
        problems.append(f"{name!r} has MAC {pod_link.mac}, expected {mac}")
    if mtu is not None and pod_link.mtu != mtu:
        problems.append(f"{name!r} has MTU {pod_link.mtu}, expected {mtu}")
    for link in (pod_link, host_link):
        if link is not None and not link.up:
            problems.append(f"{link.name!r} is down")
    return problems


def _address_problems(pod: Rtnl, pod_link: Link, ip_config: IpConfig, mac: str) -> list[str]:
    """Every address ADD puts on the pod end (``_addresses``, for the MAC ``mac``) is there."""
    from sfc_k8s.cni.result import format_ip

    live = {(a.family, a.addr, a.prefixlen) for a in pod.addrs(pod_link.index)}
    return [
        f"address {format_ip(family, addr)}/{prefix} is missing from {pod_link.name!r}"
        for family, addr, prefix in _addresses(ip_config, mac)
        if (family, addr, prefix) not in live
    ]


def _route_problems(pod: Rtnl, pod_link: Link, ip_config: IpConfig) -> list[str]:
    """Every route of ``prevResult`` goes out of the pod end (with its gateway, if it names one)."""
    from sfc_k8s.cni.result import format_ip, parse_cidr, parse_ip

    problems = []
    for route in ip_config.routes:
        family, dst, dst_len = parse_cidr(str(route["dst"]))
        gw = parse_ip(str(route["gw"]))[1] if route.get("gw") else None
        found = any(
            r.dst_len == dst_len
            and (r.dst or bytes(len(dst))) == dst
            and (gw is None or r.gateway == gw)
            and r.oif == pod_link.index
            for r in pod.routes(family)
        )
        if not found:
            via = f" via {format_ip(family, gw)}" if gw else ""
            problems.append(f"route {route['dst']}{via} is missing from {pod_link.name!r}")
    return problems


# --- STATUS, GC, VERSION ------------------------------------------------------------------------


def _require_version(conf: NetConf, command: str, least: str) -> None:
    """Code 1 unless the config's ``cniVersion`` has ``command`` (CHECK: 0.4.0, GC: 1.1.0)."""
    if version_tuple(conf.cni_version) < version_tuple(least):
        expected = f"{least} or later for {command}"
        raise invalid("cniVersion", conf.cni_version, expected, code=Code.INCOMPATIBLE_VERSION)


def cmd_status(env: Env, conf: NetConf) -> None:
    """Ready when rtnetlink answers and, in L3 mode, the IPAM plugin is installed."""
    from sfc_k8s.cni import netlink as nl
    from sfc_k8s.cni.ipam import find_plugin

    _require_version(conf, "STATUS", "1.1.0")
    try:
        with nl.Rtnl() as host:
            host.link("lo")
    except (OSError, nl.NetlinkError) as err:
        raise CniError(Code.NOT_AVAILABLE, f"rtnetlink is not usable: {err}") from err
    if conf.ipam_type is not None:
        try:
            find_plugin(conf.ipam_type, env.path)
        except CniError as err:
            raise CniError(Code.NOT_AVAILABLE, err.msg) from err


def cmd_gc(env: Env, conf: NetConf) -> None:
    """Delete this network's veths whose attachment is not in ``cni.dev/valid-attachments``.

    Each host end records its attachment in its ifalias; for every stale one the IPAM lease is
    released with that attachment's identity (Debian's IPAM plugins predate the GC command).
    """
    from sfc_k8s.cni import netlink as nl

    _require_version(conf, "GC", "1.1.0")
    valid = set(conf.valid_attachments or [])
    prefix = f"{ALIAS_PREFIX}{conf.name}/"
    stale: dict[int, tuple[str, str]] = {}  # ifindex -> (container ID, ifname)
    try:
        with nl.Rtnl() as host:
            # A listing torn by pods coming and going meanwhile is fine here: a veth it misses
            # is collected next time, one listed twice counts once, one already gone is skipped
            # by the delete, which names the link by index (never reused soon, unlike a name).
            for link in host.links(torn_ok=True):
                if link.kind != "veth" or not link.alias or not link.alias.startswith(prefix):
                    continue
                container_id, _, ifname = link.alias[len(prefix) :].partition("/")
                if (container_id, ifname) not in valid and link.index not in stale:
                    _delete_link_index(host, link.index, link.name)
                    stale[link.index] = (container_id, ifname)
    except nl.NetlinkError as err:
        raise netlink_error(err) from err
    if conf.ipam_type is not None and stale:
        from sfc_k8s.cni.ipam import delegate_config, run_ipam

        stdin = delegate_config(conf.raw, conf.text, conf.cni_version)
        for container_id, ifname in set(stale.values()):
            # The lease belongs to that attachment: its DEL carries that attachment's identity.
            environ = {"CNI_NETNS": "", **os.environ}
            environ.update(CNI_CONTAINERID=container_id, CNI_IFNAME=ifname)
            run_ipam("DEL", conf.ipam_type, env.path, stdin, parse=False, environ=environ)
    log.write("info", f"garbage-collected {len(stale)} stale attachment(s)")


def cmd_version(text: str) -> dict[str, object]:
    from sfc_k8s.cni.config import SUPPORTED_VERSIONS, check_version, decode_config

    version = LATEST_VERSION
    if text.strip():
        version = check_version(decode_config(text))
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


# --- entry point --------------------------------------------------------------------------------


def _error_version(text: str) -> str:
    """The version to speak in an error object: the config's when we support it."""
    from sfc_k8s.cni.config import SUPPORTED_VERSIONS, decode_config

    try:
        version = decode_config(text).get("cniVersion")
    except CniError:
        return LATEST_VERSION
    return version if isinstance(version, str) and version in SUPPORTED_VERSIONS else LATEST_VERSION


def _emit(body: dict[str, object]) -> None:
    from sfc_k8s.coldstart import json_dumps

    sys.stdout.write(json_dumps(body) + "\n")
    sys.stdout.flush()


def run(env: Env, text: str) -> dict[str, object] | None:
    """Run one command; returns what goes on stdout (None: nothing)."""
    if env.command == "VERSION":
        return cmd_version(text)
    conf = parse_config(text, env.command)
    log.configure(conf, env)
    if env.command == "ADD":
        return cmd_add(env, conf)
    if env.command == "DEL":
        cmd_del(env, conf)
    elif env.command == "CHECK":
        cmd_check(env, conf)
    elif env.command == "STATUS":
        cmd_status(env, conf)
    else:
        cmd_gc(env, conf)
    return None


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point of ``sfc-cni``; the exit code is 0 on success, 1 on error."""
    if argv is None:
        argv = sys.argv
    text = ""
    try:
        if len(argv) > 1 and argv[1] in ("--version", "version", "-h", "--help"):
            from sfc_k8s import __version__

            sys.stderr.write(f"sfc-cni {__version__}: the sfc-k8s CNI plugin (CNI_COMMAND=...)\n")
            return 0
        env = parse_env(os.environ)
        try:
            text = sys.stdin.buffer.read().decode()
        except UnicodeDecodeError as err:
            raise CniError(
                Code.DECODING_FAILURE,
                f"stdin is not UTF-8 text: expected {CONFIG_FORM} in UTF-8",
                str(err),
            ) from err
        except OSError as err:
            raise CniError(Code.IO_FAILURE, f"cannot read the config from stdin: {err}") from err
        body = run(env, text)
        if body is not None:
            _emit(body)
        return 0
    except CniError as err:
        log.write(
            "error", f"{err.msg} (code {err.code})" + (f": {err.details}" if err.details else "")
        )
        _emit(err.to_dict(_error_version(text)))
        return 1
    except Exception as err:  # the runtime must always get an error object
        log.write("error", f"internal error: {err!r}")
        _emit(
            CniError(Code.INTERNAL, f"sfc-cni internal error: {err!r}").to_dict(
                _error_version(text)
            )
        )
        return 1
