"""The agent's watch on the node's sfc-cni host interfaces: each gets the program as it appears.

``NodeAgent`` starts an ``InterfaceWatch`` in its startup handler (benchmarks and tests build one
around a ``Dataplane`` directly). It listens to the node's rtnetlink link events (the agent runs in
the node's network namespace) and, for every interface named as ``sfc-cni`` names host ends
(``naming.is_host_ifname``):

- appeared (``RTM_NEWLINK``): ``Dataplane.attach_interface``: the program runs there from now on,
  passing everything through until a link's maps name the interface, so creating, changing or
  deleting a link only writes maps (the TCX attach, ~8 ms the kernel serialises, is paid once per
  pod, off the chain's path);
- deleted (``RTM_DELLINK``: CNI DEL, or the pod's namespace destroyed): its pin is removed (the
  kernel already detached the program with the interface), so nothing stays pinned.

At start, and whenever the kernel says events were lost (``ENOBUFS``), the interfaces present are
compared with the pins (``Dataplane.sync_interfaces``): pods created or deleted while the agent
was down are caught up. Everything runs on the caller's event loop (``loop.add_reader``), as every
other data-plane call of the agent does. A failed attach is logged only: the link that takes the
interface then attaches it itself (the data plane checks), as it did before this watch existed.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import socket
import struct
import time
from collections.abc import Callable

from sfc_k8s.cni import netlink
from sfc_k8s.dataplane import Dataplane, DataplaneError, InterfaceNotFound
from sfc_k8s.naming import is_host_ifname

logger = logging.getLogger("sfc_k8s.agent.ifaces")
RTMGRP_LINK = 0x1  # rtnetlink multicast group of link events
RECV_BUFFER = 1 << 20  # a burst of pods must not overflow the socket (ENOBUFS: resync)
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid


class InterfaceWatch:
    """Attach the program to each sfc-cni host interface when it appears; unpin when it goes.

    ``observers`` are called with (interface, ifindex, time.monotonic() when attached) after
    each attach (benchmarks time pod creation -> attached with them)."""

    def __init__(self, dp: Dataplane, *, wanted: Callable[[str], bool] = is_host_ifname) -> None:
        self.dp = dp
        self.wanted = wanted
        self.observers: list[Callable[[str, int, float], None]] = []
        self.attached = 0  # attaches made (tests and benchmarks read it)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._known: set[int] = set()  # ifindexes seen attached: repeated NEWLINKs cost nothing
        self._backlog: collections.deque[tuple[str, int]] = collections.deque()  # resync's

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Subscribe first, then catch up with what is there (nothing falls in between)."""
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            sock.bind((0, RTMGRP_LINK))
        except BaseException:
            sock.close()
            raise
        self._sock, self._loop = sock, loop
        loop.add_reader(sock.fileno(), self._readable)
        self.resync()

    def stop(self) -> None:
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
        self._sock = self._loop = None
        self._backlog.clear()

    def resync(self) -> None:
        """Unpin the attachments of deleted interfaces, then attach every wanted interface
        present that runs nothing of ours: one per turn of the event loop, so that a node
        with many new pods (an agent that was down a while) does not hold up the handlers."""
        present = {i: n for i, n in socket.if_nameindex() if self.wanted(n)}
        try:
            missing, removed = self.dp.sync_interfaces(present, attach=False)
        except DataplaneError as err:
            logger.warning("cannot read the node's interface attachments: %s", err)
            return
        waiting = set(missing)
        self._known = {i for i, n in present.items() if n not in waiting}
        if missing or removed:
            logger.info(
                "interfaces: %d to attach, %d gone unpinned", len(missing), len(removed)
            )  # fmt: skip
        by_name = {n: i for i, n in present.items()}
        idle = not self._backlog  # else a chain of _attach_next is running already
        self._backlog.extend((name, by_name[name]) for name in missing)
        if idle and self._backlog and self._loop is not None:
            self._loop.call_soon(self._attach_next)

    def _attach_next(self) -> None:
        """Attach one interface of the backlog, then come back after what else is ready."""
        if not self._backlog or self._sock is None or self._loop is None:
            return
        self._appeared(*self._backlog.popleft())
        if self._backlog:
            self._loop.call_soon(self._attach_next)

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno == errno.ENOBUFS:  # events were dropped: look at what is there
                    logger.warning("link events lost (ENOBUFS): re-reading the interfaces")
                    self.resync()
                    continue
                raise
            self._messages(data)

    def _messages(self, data: bytes) -> None:
        for kind, payload in _link_messages(data):
            link = netlink.Link(payload)
            if not self.wanted(link.name):
                continue
            if kind == netlink.RTM_DELLINK:
                self._known.discard(link.index)
                self._gone(link.index)
            elif link.index not in self._known:
                self._appeared(link.name, link.index)

    def _appeared(self, name: str, ifindex: int) -> None:
        if ifindex in self._known or self._sock is None:
            return  # an event came first, or the watch was stopped
        try:
            done = self.dp.attach_interface(name)
        except InterfaceNotFound:
            return  # deleted (or renamed) again before we got to it
        except DataplaneError as err:
            logger.warning("cannot attach the program to %s: %s", name, err)
            return
        self._known.add(ifindex)
        if done:
            self._attached(name, ifindex, time.monotonic())

    def _attached(self, name: str, ifindex: int, when: float) -> None:
        self.attached += 1
        for observer in self.observers:
            observer(name, ifindex, when)

    def _gone(self, ifindex: int) -> None:
        try:
            self.dp.detach_interface(ifindex)
        except DataplaneError as err:
            logger.warning("cannot unpin the attachment of deleted interface %d: %s", ifindex, err)


def _link_messages(data: bytes) -> list[tuple[int, bytes]]:
    """(type, payload) of each RTM_NEWLINK/RTM_DELLINK message in one datagram."""
    found = []
    offset = 0
    header = _NLMSGHDR
    while offset + header.size <= len(data):
        length, kind, _, _, _ = header.unpack_from(data, offset)
        if length < header.size:
            break
        if kind in (netlink.RTM_NEWLINK, netlink.RTM_DELLINK):
            found.append((kind, data[offset + header.size : offset + length]))
        offset += (length + 3) & ~3
    return found
