"""A small rtnetlink client over a raw ``AF_NETLINK`` socket, for the CNI plugin only.

``sfc-cni`` runs once per pod interface and its ADD latency is dominated by Python start-up and
imports, so it cannot afford pyroute2 (~300 ms to import): this module speaks the few rtnetlink
messages the plugin needs (veth creation, link settings, addresses, routes, dumps) with the C
modules ``_socket`` and ``_struct`` alone. Requests are batched: several messages go out in one
``send`` and the kernel acknowledges each in order, so ADD costs a handful of round trips.

Errors are raised as ``NetlinkError`` carrying the errno (callers branch on it) and the kernel's
extended-ack text when it gives one. (Nothing in the project uses pyroute2: the data plane
attaches through libbpf and ``tc``.)
"""

from __future__ import annotations

import _socket
import _struct
import os
import time

from sfc_k8s.cni import netns

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    # (message type, flags, payload, what it does: used in error messages)
    Request = tuple[int, int, bytes, str]

# Message types and flags (linux/rtnetlink.h, linux/netlink.h).
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_SETLINK = 19
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_GETROUTE = 26
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300
NLM_F_DUMP_INTR = 0x10  # on a dump's messages: the table changed meanwhile, the dump may be torn
NLM_F_ACK_TLVS = 0x200  # in an NLMSG_ERROR: extended-ack attributes follow
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_ROUTE = 0

# Link attributes (linux/if_link.h, linux/veth.h).
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINK = 5
IFLA_LINKINFO = 18
IFLA_IFALIAS = 20
IFLA_AF_SPEC = 26
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFLA_INET6_ADDR_GEN_MODE = 8
IN6_ADDR_GEN_MODE_NONE = 1
IFF_UP = 0x1

# Address and route attributes (linux/if_addr.h, linux/rtnetlink.h).
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_FLAGS = 8
IFA_F_NODAD = 0x02
IFA_F_PERMANENT = 0x80
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_TABLE = 15
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1

AF_UNSPEC = 0
AF_INET = _socket.AF_INET
AF_INET6 = _socket.AF_INET6

_NLMSGHDR = _struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = _struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = _struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = _struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type
_RTATTR = _struct.Struct("=HH")  # len, type
_U32 = _struct.Struct("=I")
_I32 = _struct.Struct("=i")
EINTR = 4
# A dump the kernel flags as interrupted is run again, up to this many times in all, after a
# pause that doubles from DUMP_BACKOFF (127 ms in all): back-to-back runs on a busy node can all
# fall inside one burst of pods coming and going (a node starting, a scale-out); spread out,
# one lands between bursts.
DUMP_ATTEMPTS = 8
DUMP_BACKOFF = 0.001


class NetlinkError(Exception):
    """A netlink request failed; ``errno`` is the kernel's error number."""

    def __init__(self, errno: int, what: str, kernel_msg: str = "") -> None:
        self.errno = errno
        self.what = what
        self.kernel_msg = kernel_msg
        text = f"failed to {what}: [Errno {errno}] {os.strerror(errno)}"
        if kernel_msg:
            text += f" ({kernel_msg})"
        super().__init__(text)


# --- encoding -------------------------------------------------------------------------------


def attr(kind: int, data: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    length = _RTATTR.size + len(data)
    return _RTATTR.pack(length, kind) + data + b"\0" * (-length & 3)


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def mac_bytes(mac: str) -> bytes:
    """``'02:aa:..'`` -> 6 bytes; raises ``ValueError`` when it is not a MAC address."""
    try:
        raw = bytes.fromhex(mac.replace(":", ""))
    except ValueError:
        raw = b""
    if len(raw) != 6 or mac[2::3] != ":" * 5:
        raise ValueError(f"{mac!r} is not a MAC address (six hex octets like 02:00:5e:10:00:01)")
    return raw


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def ifinfo(*, index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFOMSG.pack(AF_UNSPEC, 0, index, flags, change)


def new_veth(
    host: str, peer: str, *, peer_netns_fd: int, peer_mac: bytes | None, mtu: int | None
) -> Request:
    """Create veth ``host`` here and its peer ``peer`` directly inside ``peer_netns_fd``."""
    peer_attrs = attr_str(IFLA_IFNAME, peer) + attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
    if peer_mac is not None:
        peer_attrs += attr(IFLA_ADDRESS, peer_mac)
    host_attrs = attr_str(IFLA_IFNAME, host)
    if mtu is not None:
        peer_attrs += attr_u32(IFLA_MTU, mtu)
        host_attrs += attr_u32(IFLA_MTU, mtu)
    linkinfo = attr_str(IFLA_INFO_KIND, "veth") + attr(
        IFLA_INFO_DATA, attr(VETH_INFO_PEER, ifinfo() + peer_attrs)
    )
    payload = ifinfo() + host_attrs + attr(IFLA_LINKINFO, linkinfo)
    return (
        RTM_NEWLINK,
        NLM_F_CREATE | NLM_F_EXCL,
        payload,
        f"create veth pair {host!r} <-> {peer!r}",
    )


def set_no_ipv6_autoconf(name: str) -> Request:
    """``addr_gen_mode none``: no IPv6 link-local address, hence no DAD fight between replicas.

    Links are addressed by name (index 0 + ``IFLA_IFNAME`` selects, it does not rename).
    """
    spec = attr(AF_INET6, attr(IFLA_INET6_ADDR_GEN_MODE, bytes([IN6_ADDR_GEN_MODE_NONE])))
    return (
        RTM_SETLINK,
        0,
        ifinfo() + attr_str(IFLA_IFNAME, name) + attr(IFLA_AF_SPEC, spec),
        f"disable IPv6 address generation on {name!r}",
    )


def set_up(name: str, *, alias: str | None = None) -> Request:
    """Bring link ``name`` up, optionally recording ``alias`` (IFLA_IFALIAS) on it."""
    payload = ifinfo(flags=IFF_UP, change=IFF_UP) + attr_str(IFLA_IFNAME, name)
    if alias is not None:
        payload += attr_str(IFLA_IFALIAS, alias)
    return (RTM_SETLINK, 0, payload, f"bring {name!r} up")


def get_link(name: str) -> Request:
    return (RTM_GETLINK, 0, ifinfo() + attr_str(IFLA_IFNAME, name), f"look up link {name!r}")


def get_link_by_index(index: int) -> Request:
    return (RTM_GETLINK, 0, ifinfo(index=index), f"look up link #{index}")


def del_link(name: str) -> Request:
    return (RTM_DELLINK, 0, ifinfo() + attr_str(IFLA_IFNAME, name), f"delete link {name!r}")


def del_link_index(index: int, name: str) -> Request:
    return (RTM_DELLINK, 0, ifinfo(index=index), f"delete link {name!r} (#{index})")


def new_addr(index: int, name: str, family: int, addr: bytes, prefixlen: int) -> Request:
    flags = IFA_F_PERMANENT | (IFA_F_NODAD if family == AF_INET6 else 0)
    payload = (
        _IFADDRMSG.pack(family, prefixlen, flags & 0xFF, RT_SCOPE_UNIVERSE, index)
        + attr(IFA_LOCAL, addr)
        + attr(IFA_ADDRESS, addr)
        + attr_u32(IFA_FLAGS, flags)
    )
    return (RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, payload, f"add address to {name!r}")


def new_route(
    index: int, name: str, family: int, *, dst: bytes | None, dst_len: int, gw: bytes | None
) -> Request:
    scope = RT_SCOPE_UNIVERSE if gw is not None else RT_SCOPE_LINK
    payload = _RTMSG.pack(
        family, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST, 0
    ) + attr_u32(RTA_OIF, index)
    if dst is not None and dst_len:
        payload += attr(RTA_DST, dst)
    if gw is not None:
        payload += attr(RTA_GATEWAY, gw)
    return (RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, payload, f"add route via {name!r}")


# --- decoding -------------------------------------------------------------------------------


def parse_attrs(data: bytes, offset: int) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    end = len(data)
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        attrs[kind & 0x3FFF] = data[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    return attrs


def _cstr(raw: bytes | None) -> str | None:
    return None if raw is None else raw.split(b"\0", 1)[0].decode(errors="replace")


class Link:
    """The parts of an RTM_NEWLINK message the plugin looks at."""

    __slots__ = ("alias", "flags", "index", "kind", "mac", "mtu", "name", "peer_index")

    def __init__(self, payload: bytes) -> None:
        _, _, self.index, self.flags, _ = _IFINFOMSG.unpack_from(payload, 0)
        attrs = parse_attrs(payload, _IFINFOMSG.size)
        self.name = _cstr(attrs.get(IFLA_IFNAME)) or ""
        raw_mac = attrs.get(IFLA_ADDRESS)
        self.mac = mac_str(raw_mac) if raw_mac else ""
        self.mtu = _U32.unpack(attrs[IFLA_MTU])[0] if IFLA_MTU in attrs else 0
        self.peer_index = _U32.unpack(attrs[IFLA_LINK])[0] if IFLA_LINK in attrs else 0
        self.alias = _cstr(attrs.get(IFLA_IFALIAS))
        info = parse_attrs(attrs[IFLA_LINKINFO], 0) if IFLA_LINKINFO in attrs else {}
        self.kind = _cstr(info.get(IFLA_INFO_KIND))

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


class Addr:
    """An interface address: family, address bytes, prefix length."""

    __slots__ = ("addr", "family", "index", "prefixlen")

    def __init__(self, payload: bytes) -> None:
        self.family, self.prefixlen, _, _, self.index = _IFADDRMSG.unpack_from(payload, 0)
        attrs = parse_attrs(payload, _IFADDRMSG.size)
        self.addr = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS) or b""


class Route:
    """A route of the main table: family, destination/length, gateway, output interface."""

    __slots__ = ("dst", "dst_len", "family", "gateway", "oif", "table")

    def __init__(self, payload: bytes) -> None:
        fields = _RTMSG.unpack_from(payload, 0)
        self.family, self.dst_len, self.table = fields[0], fields[1], fields[4]
        attrs = parse_attrs(payload, _RTMSG.size)
        if RTA_TABLE in attrs:
            self.table = _U32.unpack(attrs[RTA_TABLE])[0]
        self.dst = attrs.get(RTA_DST)
        self.gateway = attrs.get(RTA_GATEWAY)
        self.oif = _U32.unpack(attrs[RTA_OIF])[0] if RTA_OIF in attrs else 0


# --- the socket -----------------------------------------------------------------------------


def _open_rtnetlink() -> _socket.socket:
    """A bound rtnetlink socket in the calling thread's namespace, with extended acks."""
    sock = _socket.socket(
        _socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, NETLINK_ROUTE
    )
    try:
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
    except OSError:  # old kernels: plain acks are fine
        pass
    sock.bind((0, 0))
    return sock


class Rtnl:
    """An rtnetlink socket bound to one network namespace (the one it was created in).

    ``sock``: an already-open datagram socket that speaks netlink instead (the unit tests pass
    one end of a socket pair and play the kernel on the other).
    """

    def __init__(self, sock: _socket.socket | None = None) -> None:
        self._sock = sock if sock is not None else _open_rtnetlink()
        self._seq = 0

    @classmethod
    def in_netns(cls, netns_fd: int) -> Rtnl:
        """A socket inside the namespace ``netns_fd``: enter it, create the socket, come back."""
        home = netns.current_netns()
        try:
            netns.setns(netns_fd)
            try:
                return cls()
            finally:
                netns.setns(home)
        finally:
            os.close(home)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _messages(self) -> Iterator[tuple[int, int, int, bytes]]:
        """Yield (type, flags, seq, payload) of every message received, one datagram at a time."""
        while True:
            data = self._sock.recv(1 << 16)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, flags, seq, _ = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    break
                yield kind, flags, seq, data[offset + _NLMSGHDR.size : offset + length]
                offset += (length + 3) & ~3

    def batch(self, requests: list[Request]) -> list[list[bytes]]:
        """Send all requests at once, wait for every acknowledgement, return each one's replies.

        Raises ``NetlinkError`` for the first request the kernel refused (after draining all
        acknowledgements, so the socket stays usable). The kernel runs the requests in order,
        one after the other, and keeps running them after a failure.
        """
        first_seq = self._seq + 1
        out = bytearray()
        for kind, flags, payload, _ in requests:
            self._seq += 1
            out += _NLMSGHDR.pack(
                _NLMSGHDR.size + len(payload),
                kind,
                flags | NLM_F_REQUEST | NLM_F_ACK,
                self._seq,
                0,
            )
            out += payload
        self._sock.send(bytes(out))
        replies: list[list[bytes]] = [[] for _ in requests]
        failure: NetlinkError | None = None
        pending = len(requests)
        for kind, flags, seq, payload in self._messages():
            i = seq - first_seq
            if not 0 <= i < len(requests):
                continue
            if kind == NLMSG_ERROR:
                (error,) = _I32.unpack_from(payload, 0)
                if error and failure is None:
                    failure = NetlinkError(-error, requests[i][3], _ext_ack_msg(flags, payload))
                pending -= 1
                if not pending:
                    break
            else:
                replies[i].append(payload)
        if failure is not None:
            raise failure
        return replies

    def request(self, req: Request) -> list[bytes]:
        return self.batch([req])[0]

    def dump(self, kind: int, payload: bytes, what: str, *, torn_ok: bool = False) -> list[bytes]:
        """Run a dump request (RTM_GET* with NLM_F_DUMP) and return every reply payload.

        A dump spans several reads, and the kernel marks its messages ``NLM_F_DUMP_INTR`` when
        the table changed in between (an entry may then be missing or seen twice): such a dump
        (or one the kernel fails with EINTR) is run again, up to ``DUMP_ATTEMPTS`` times with a
        growing pause, then refused with EINTR (which the plugin reports as "try again later").
        ``torn_ok``: return the last run's replies instead, for a caller that copes with an
        entry missing or already gone (GC: what it misses, the next GC removes).
        """
        delay = DUMP_BACKOFF
        replies: list[bytes] = []
        for attempt in range(DUMP_ATTEMPTS):
            if attempt:
                time.sleep(delay)
                delay *= 2
            replies, interrupted = self._dump_once(kind, payload, what)
            if not interrupted:
                return replies
        if torn_ok:
            return replies
        raise NetlinkError(
            EINTR,
            what,
            f"the kernel interrupted the dump {DUMP_ATTEMPTS} times: the table kept changing",
        )

    def _dump_once(self, kind: int, payload: bytes, what: str) -> tuple[list[bytes], bool]:
        """One dump: (every reply payload, whether any message was flagged NLM_F_DUMP_INTR)."""
        self._seq += 1
        seq = self._seq
        header = _NLMSGHDR.pack(
            _NLMSGHDR.size + len(payload), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
        )
        self._sock.send(header + payload)
        out: list[bytes] = []
        interrupted = False
        for mtype, flags, mseq, body in self._messages():
            if mseq != seq:
                continue
            interrupted = interrupted or bool(flags & NLM_F_DUMP_INTR)
            if mtype == NLMSG_DONE:
                break
            if mtype == NLMSG_ERROR:
                (error,) = _I32.unpack_from(body, 0)
                if error == -EINTR:
                    return out, True
                if error:
                    raise NetlinkError(-error, what)
                break
            out.append(body)
        return out, interrupted

    # Convenience queries used by ADD/CHECK/GC.

    def link(self, name: str) -> Link | None:
        """The link called ``name``, or None when there is none."""
        try:
            replies = self.request(get_link(name))
        except NetlinkError as err:
            if err.errno == 19:  # ENODEV
                return None
            raise
        return Link(replies[0]) if replies else None

    def links(self, *, torn_ok: bool = False) -> list[Link]:
        return [Link(p) for p in self.dump(RTM_GETLINK, ifinfo(), "list links", torn_ok=torn_ok)]

    def addrs(self, index: int) -> list[Addr]:
        found = (
            Addr(p)
            for p in self.dump(RTM_GETADDR, _IFADDRMSG.pack(0, 0, 0, 0, 0), "list addresses")
        )
        return [a for a in found if a.index == index]

    def routes(self, family: int) -> list[Route]:
        payload = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        return [Route(p) for p in self.dump(RTM_GETROUTE, payload, "list routes")]


def _ext_ack_msg(flags: int, payload: bytes) -> str:
    """The kernel's extended-ack text (``NLMSGERR_ATTR_MSG``) from an NLMSG_ERROR, if any."""
    if not flags & NLM_F_ACK_TLVS:
        return ""
    # int error + the original header (capped: NETLINK_CAP_ACK) + TLVs.
    (orig_len,) = _U32.unpack_from(payload, 4)
    offset = 4 + _NLMSGHDR.size
    if len(payload) >= 4 + orig_len and orig_len > _NLMSGHDR.size and not flags & 0x100:
        offset = 4 + ((orig_len + 3) & ~3)
    return _cstr(parse_attrs(payload, offset).get(NLMSGERR_ATTR_MSG)) or ""
