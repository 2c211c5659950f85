"""Netlink dumps that the kernel flags as interrupted are run again (in-process, no root).

The kernel's side is played on the other end of a datagram socket pair: the replies of every
attempt are queued up front, exactly as the kernel would frame them (``NLM_F_MULTI`` messages,
then ``NLMSG_DONE``, ``NLM_F_DUMP_INTR`` on every message of a torn dump).

Behaviours covered:
- a clean dump is read once;
- a dump flagged ``NLM_F_DUMP_INTR`` is run again and the clean run's replies are returned;
- a dump the kernel fails with EINTR is run again too;
- after ``DUMP_ATTEMPTS`` torn runs the dump fails with EINTR, named in the error, which the
  plugin reports with the spec's "try again later" code (11); a caller that copes with a torn
  listing (GC) gets the last run's replies instead of a failure.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from sfc_k8s.cni import netlink as nl
from sfc_k8s.cni.errors import Code
from sfc_k8s.cni.plugin import netlink_error

HEADER = struct.Struct("=IHHII")


def message(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    padded = payload + b"\0" * (-len(payload) & 3)
    return HEADER.pack(HEADER.size + len(payload), kind, flags, seq, 0) + padded


def dump_reply(seq: int, payloads: list[bytes], *, interrupted: bool) -> bytes:
    """One datagram holding a whole dump: the entries, then NLMSG_DONE."""
    flags = nl.NLM_F_MULTI | (nl.NLM_F_DUMP_INTR if interrupted else 0)
    body = b"".join(message(nl.RTM_NEWLINK, flags, seq, p) for p in payloads)
    return body + message(nl.NLMSG_DONE, flags, seq, struct.pack("=i", 0))


@pytest.fixture
def pair() -> Iterator[tuple[nl.Rtnl, socket.socket]]:
    """An ``Rtnl`` on one end of a socket pair, and the end that plays the kernel."""
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    rtnl = nl.Rtnl(ours)
    try:
        yield rtnl, kernel
    finally:
        rtnl.close()
        kernel.close()


def requests_sent(kernel: socket.socket) -> list[int]:
    """The sequence numbers of the dump requests the client sent."""
    kernel.setblocking(False)
    seqs = []
    while True:
        try:
            data = kernel.recv(1 << 16)
        except BlockingIOError:
            return seqs
        _, kind, flags, seq, _ = HEADER.unpack_from(data)
        assert kind == nl.RTM_GETLINK and flags & nl.NLM_F_DUMP == nl.NLM_F_DUMP
        seqs.append(seq)


def test_clean_dump_is_read_once(pair: tuple[nl.Rtnl, socket.socket]) -> None:
    rtnl, kernel = pair
    kernel.send(dump_reply(1, [b"link-a", b"link-b"], interrupted=False))
    assert rtnl.dump(nl.RTM_GETLINK, nl.ifinfo(), "list links") == [b"link-a", b"link-b"]
    assert requests_sent(kernel) == [1]


def test_interrupted_dump_is_run_again(pair: tuple[nl.Rtnl, socket.socket]) -> None:
    rtnl, kernel = pair
    kernel.send(dump_reply(1, [b"torn-a"], interrupted=True))
    kernel.send(dump_reply(2, [b"torn-a", b"torn-b"], interrupted=True))
    kernel.send(dump_reply(3, [b"link-a", b"link-b"], interrupted=False))
    assert rtnl.dump(nl.RTM_GETLINK, nl.ifinfo(), "list links") == [b"link-a", b"link-b"]
    assert requests_sent(kernel) == [1, 2, 3]


def test_dump_interrupted_every_time_fails_with_try_again(
    pair: tuple[nl.Rtnl, socket.socket],
) -> None:
    rtnl, kernel = pair
    for seq in range(1, nl.DUMP_ATTEMPTS + 1):
        kernel.send(dump_reply(seq, [b"link-a"], interrupted=True))
    with pytest.raises(nl.NetlinkError) as info:
        rtnl.dump(nl.RTM_GETLINK, nl.ifinfo(), "list links")
    assert info.value.errno == nl.EINTR
    assert str(info.value) == (
        "failed to list links: [Errno 4] Interrupted system call (the kernel interrupted the"
        f" dump {nl.DUMP_ATTEMPTS} times: the table kept changing)"
    )
    assert requests_sent(kernel) == list(range(1, nl.DUMP_ATTEMPTS + 1))
    assert netlink_error(info.value).code == Code.TRY_AGAIN_LATER


def test_dump_failed_with_eintr_is_run_again(pair: tuple[nl.Rtnl, socket.socket]) -> None:
    rtnl, kernel = pair
    kernel.send(message(nl.NLMSG_ERROR, 0, 1, struct.pack("=i", -nl.EINTR) + bytes(16)))
    kernel.send(dump_reply(2, [b"link-a"], interrupted=False))
    assert rtnl.dump(nl.RTM_GETLINK, nl.ifinfo(), "list links") == [b"link-a"]
    assert requests_sent(kernel) == [1, 2]


def test_a_caller_that_copes_gets_the_last_torn_run(pair: tuple[nl.Rtnl, socket.socket]) -> None:
    rtnl, kernel = pair
    for seq in range(1, nl.DUMP_ATTEMPTS + 1):
        kernel.send(dump_reply(seq, [b"link-a", f"torn-{seq}".encode()], interrupted=True))
    last = f"torn-{nl.DUMP_ATTEMPTS}".encode()
    replies = rtnl.dump(nl.RTM_GETLINK, nl.ifinfo(), "list links", torn_ok=True)
    assert replies == [b"link-a", last]
    assert requests_sent(kernel) == list(range(1, nl.DUMP_ATTEMPTS + 1))
