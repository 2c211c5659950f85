"""Traffic helper run inside the test namespaces: echo servers and flow generators.

The data-plane traffic tests (and ``bench/dataplane.py``) run it with
``ip netns exec NS .venv/bin/python traffic.py MODE ...``; it imports nothing but the standard
library so that it starts fast in any namespace. Clients print one JSON object on stdout when
done; long-running clients first print ``READY`` once every flow has completed one exchange and
then keep going until a line ``stop`` arrives on stdin or ``--duration`` passes (an empty stdin
means "run for --duration"), so the test can scale the chain while the flows are live.

Modes:
  tcp-echo PORT       echo every byte back, on any number of connections
  udp-echo PORT       send every datagram back (prefixed with ``--tag``)
  tcp-flows ...       N connections from fixed source ports, each a paced request/echo loop that
                      checks every byte; reports errors, max gap between echoes, TCP retransmits
  udp-flows ...       N flows from fixed source ports, flow i sends ``base + i`` datagrams in
                      lock-step rounds; reports per-flow sent/echoed
  udp-stream ...      N flows paced at a fixed total rate with sequence numbers; reports every
                      missing or reordered echo
Servers print a JSON summary when they get SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import selectors
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

SEQ = struct.Struct("!IQ")  # flow index, sequence number


def family_of(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def tcp_retrans() -> int:
    """RetransSegs of this namespace (/proc/net/snmp is per network namespace)."""
    with open("/proc/net/snmp", encoding="ascii") as snmp:
        lines = [line.split() for line in snmp if line.startswith("Tcp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("RetransSegs")])


TCPI_TOTAL_RETRANS = 100  # offset of tcpi_total_retrans (u32) in struct tcp_info


def socket_retrans(sock: socket.socket) -> int:
    """Segments this connection retransmitted so far (TCP_INFO)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("I", info, TCPI_TOTAL_RETRANS)[0])


def _watch_stdin(sel: selectors.BaseSelector, data: object) -> None:
    """Watch stdin for ``stop`` when it is a pipe (epoll refuses /dev/null and files)."""
    with contextlib.suppress(PermissionError, ValueError):
        sel.register(sys.stdin, selectors.EVENT_READ, data)


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


class StopServing(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by the SIGTERM handler to end a server loop."""


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise StopServing


# --- servers ---------------------------------------------------------------------------------
def tcp_echo(port: int, family: socket.AddressFamily) -> None:
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    listener.listen(512)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    connections = echoed = 0
    retrans0 = tcp_retrans()
    retrans_by_port: dict[int, int] = {}
    peer_port: dict[socket.socket, int] = {}
    emit({"listening": port})
    try:
        while True:
            for key, _ in sel.select():
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is listener:
                    conn, peer = listener.accept()
                    peer_port[conn] = peer[1]
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ)
                    connections += 1
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    retrans_by_port[peer_port.pop(sock)] = socket_retrans(sock)
                    sel.unregister(sock)
                    sock.close()
                    continue
                sock.setblocking(True)  # echoes are small; block rather than buffer
                sock.sendall(data)
                sock.setblocking(False)
                echoed += len(data)
    except StopServing:
        pass
    for sock, peer in peer_port.items():
        retrans_by_port[peer] = socket_retrans(sock)
    emit(
        {
            "connections": connections,
            "bytes": echoed,
            "retrans": tcp_retrans() - retrans0,
            "retrans_by_port": retrans_by_port,
        }
    )


def udp_echo(port: int, family: socket.AddressFamily, tag: bytes) -> None:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    datagrams = 0
    peers: set[tuple[Any, ...]] = set()
    emit({"listening": port})
    try:
        while True:
            data, peer = sock.recvfrom(65536)
            datagrams += 1
            peers.add(peer)
            sock.sendto(tag + data, peer)
    except StopServing:
        pass
    emit({"datagrams": datagrams, "peers": len(peers)})


# --- TCP flows -------------------------------------------------------------------------------
@dataclass
class TcpFlow:
    index: int
    sock: socket.socket
    sport: int
    expected: bytes = b""
    received: bytearray = field(default_factory=bytearray)
    sent_at: float = 0.0
    next_at: float = 0.0
    last_echo: float = 0.0
    max_gap: float = 0.0
    exchanges: int = 0
    error: str | None = None


def _message(index: int, seq: int, size: int) -> bytes:
    head = SEQ.pack(index, seq)
    body = bytes((index * 131 + seq * 7 + i) & 0xFF for i in range(size - len(head)))
    return head + body


def _connect_tcp_flows(args: argparse.Namespace) -> list[TcpFlow]:
    family = family_of(args.server)
    flows: list[TcpFlow] = []
    for index in range(args.flows):
        sport = args.sport_base + index
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", sport))
        sock.settimeout(5)
        sock.connect((args.server, args.port))
        sock.setblocking(False)
        flows.append(TcpFlow(index, sock, sport))
    return flows


def _send_due(flows: list[TcpFlow], now: float, size: int) -> None:
    """Send the next message of every idle flow whose time has come."""
    for flow in flows:
        if flow.error or flow.expected or now < flow.next_at:
            continue
        flow.expected = _message(flow.index, flow.exchanges, size)
        flow.received.clear()
        flow.sent_at = now
        try:
            flow.sock.send(flow.expected)  # small: always fits the send buffer
        except OSError as err:
            flow.error = errno.errorcode.get(err.errno or 0, str(err))


def _receive(flow: TcpFlow, sel: selectors.BaseSelector, interval: float) -> None:
    """Read what ``flow``'s socket holds; a complete, correct echo ends its exchange."""
    try:
        chunk = flow.sock.recv(65536)
    except OSError as err:
        flow.error = errno.errorcode.get(err.errno or 0, str(err))
        sel.unregister(flow.sock)
        return
    if not chunk:
        flow.error = "EOF"
        sel.unregister(flow.sock)
        return
    flow.received += chunk
    if len(flow.received) < len(flow.expected):
        return
    now = time.monotonic()
    if bytes(flow.received) != flow.expected:
        flow.error = f"corrupt echo at exchange {flow.exchanges}"
        return
    flow.max_gap = max(flow.max_gap, now - flow.last_echo)
    flow.last_echo = now
    flow.exchanges += 1
    flow.expected = b""
    flow.next_at = flow.sent_at + interval


def _stop_requested(sel: selectors.BaseSelector) -> bool:
    """Whether the controller wrote ``stop`` on stdin (its end: run for --duration)."""
    line = sys.stdin.readline()
    if not line:
        sel.unregister(sys.stdin)
    return line.strip() == "stop"


def _tcp_report(flows: list[TcpFlow], retrans0: int) -> None:
    retrans = {}
    for flow in flows:
        if not flow.error and flow.expected:
            flow.error = "no echo before the end"
        retrans[flow.index] = socket_retrans(flow.sock)
        flow.sock.close()
    emit(
        {
            "retrans": tcp_retrans() - retrans0,
            "flows": [
                {
                    "index": f.index,
                    "sport": f.sport,
                    "exchanges": f.exchanges,
                    "max_gap": round(f.max_gap, 4),
                    "retrans": retrans[f.index],
                    "error": f.error,
                }
                for f in flows
            ],
        }
    )


def tcp_flows(args: argparse.Namespace) -> None:
    retrans0 = tcp_retrans()
    flows = _connect_tcp_flows(args)
    sel = selectors.DefaultSelector()
    for flow in flows:
        sel.register(flow.sock, selectors.EVENT_READ, flow)
    _watch_stdin(sel, None)
    interval = args.interval / 1000
    start = time.monotonic()
    deadline = start + args.duration
    for flow in flows:  # spread the flows over one interval
        flow.next_at = start + interval * flow.index / len(flows)
        flow.last_echo = start
    ready = stopping = False
    stop_at = deadline
    while True:
        now = time.monotonic()
        if not stopping and now >= deadline:
            stopping, stop_at = True, now
        if stopping and (all(f.error or not f.expected for f in flows) or now > stop_at + 3):
            break
        if not stopping:
            _send_due(flows, now, args.size)
        waits = [f.next_at - now for f in flows if not f.expected and not f.error]
        for key, _ in sel.select(max(0.0, min([*waits, 0.05]))):
            if key.data is not None:
                _receive(key.data, sel, interval)
            elif _stop_requested(sel):
                stopping, stop_at = True, time.monotonic()
        if not ready and all(f.exchanges > 0 or f.error for f in flows):
            ready = True
            sys.stdout.write("READY\n")
            sys.stdout.flush()
    _tcp_report(flows, retrans0)


# --- UDP flows -------------------------------------------------------------------------------
def _udp_sockets(args: argparse.Namespace) -> list[socket.socket]:
    family = family_of(args.server)
    socks = []
    for index in range(args.flows):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", args.sport_base + index))
        sock.connect((args.server, args.port))
        sock.setblocking(False)
        socks.append(sock)
    return socks


def _drain(
    sock: socket.socket,
    tag: bytes,
    got: list[set[int]],
    bad: list[int],
    *,
    last: list[int] | None = None,
    reordered: list[int] | None = None,
) -> None:
    """Read every queued echo; note its sequence number (and whether it came out of order)."""
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        if not data.startswith(tag) or len(data) < len(tag) + SEQ.size:
            bad.append(len(data))
            continue
        index, seq = SEQ.unpack_from(data, len(tag))
        got[index].add(seq)
        if last is not None and reordered is not None:
            if seq < last[index]:
                reordered[index] += 1
            last[index] = max(last[index], seq)


def udp_flows(args: argparse.Namespace) -> None:
    """Flow i sends ``base + i`` datagrams; rounds of one datagram per flow, echoes awaited."""
    tag = args.tag.encode()
    socks = _udp_sockets(args)
    counts = [args.base + i for i in range(args.flows)]
    got: list[set[int]] = [set() for _ in socks]
    bad: list[int] = []
    sel = selectors.DefaultSelector()
    for sock in socks:
        sel.register(sock, selectors.EVENT_READ)
    pad = b"\0" * max(0, args.size - SEQ.size)
    for seq in range(max(counts)):
        expect = 0
        for index, sock in enumerate(socks):
            if seq < counts[index]:
                sock.send(SEQ.pack(index, seq) + pad)
                expect += 1
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if sum(1 for i in range(len(socks)) if seq in got[i]) >= expect:
                break
            for key, _ in sel.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                _drain(sock, tag, got, bad)
    emit(
        {
            "bad": len(bad),
            "flows": [
                {
                    "index": i,
                    "sport": args.sport_base + i,
                    "sent": counts[i],
                    "echoed": len(got[i]),
                    "missing": sorted(set(range(counts[i])) - got[i])[:10],
                }
                for i in range(len(socks))
            ],
        }
    )


def udp_stream(args: argparse.Namespace) -> None:
    """Paced sequenced datagrams over N flows until ``stop``; every echo must come back."""
    tag = args.tag.encode()
    socks = _udp_sockets(args)
    got: list[set[int]] = [set() for _ in socks]
    order_errors = [0] * len(socks)
    last = [-1] * len(socks)
    bad: list[int] = []
    sent = [0] * len(socks)
    sel = selectors.DefaultSelector()
    for sock in socks:
        sel.register(sock, selectors.EVENT_READ, None)
    _watch_stdin(sel, "stdin")
    period = 1.0 / args.rate
    start = time.monotonic()
    deadline = start + args.duration
    ready = False
    tick = 0
    while time.monotonic() < deadline:
        index = tick % len(socks)
        socks[index].send(SEQ.pack(index, sent[index]))
        sent[index] += 1
        tick += 1
        wake = start + tick * period
        while True:
            timeout = wake - time.monotonic()
            events = sel.select(max(0.0, timeout))
            for key, _ in events:
                if key.data == "stdin":
                    line = sys.stdin.readline()
                    if not line:  # no controller: run for --duration
                        sel.unregister(sys.stdin)
                    elif line.strip() == "stop":
                        deadline = 0.0
                    continue
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                _drain(sock, tag, got, bad, last=last, reordered=order_errors)
            if timeout <= 0 or not events:
                break
        if not ready and all(got):
            ready = True
            sys.stdout.write("READY\n")
            sys.stdout.flush()
    grace = time.monotonic() + 1.0
    while time.monotonic() < grace and any(len(g) < s for g, s in zip(got, sent, strict=True)):
        for key, _ in sel.select(0.05):
            sock = key.fileobj
            if isinstance(sock, socket.socket):
                _drain(sock, tag, got, bad)
    emit(
        {
            "bad": len(bad),
            "flows": [
                {
                    "index": i,
                    "sport": args.sport_base + i,
                    "sent": sent[i],
                    "echoed": len(got[i]),
                    "missing": sorted(set(range(sent[i])) - got[i])[:20],
                    "reordered": order_errors[i],
                }
                for i in range(len(socks))
            ],
        }
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="traffic.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    for mode in ("tcp-echo", "udp-echo"):
        server = sub.add_parser(mode)
        server.add_argument("port", type=int)
        server.add_argument("--ipv6", action="store_true")
        server.add_argument("--tag", default="")
    for mode in ("tcp-flows", "udp-flows", "udp-stream"):
        client = sub.add_parser(mode)
        client.add_argument("--server", required=True)
        client.add_argument("--port", type=int, required=True)
        client.add_argument("--flows", type=int, default=1)
        client.add_argument("--sport-base", type=int, default=20000)
        client.add_argument("--size", type=int, default=64)
        client.add_argument("--tag", default="")
        client.add_argument("--duration", type=float, default=2.0)
        client.add_argument("--interval", type=float, default=20.0, help="ms between requests")
        client.add_argument("--base", type=int, default=1, help="udp-flows: datagrams of flow 0")
        client.add_argument("--rate", type=float, default=1000.0, help="udp-stream: datagrams/s")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    family = socket.AF_INET6 if getattr(args, "ipv6", False) else socket.AF_INET
    if args.mode == "tcp-echo":
        tcp_echo(args.port, family)
    elif args.mode == "udp-echo":
        udp_echo(args.port, family, args.tag.encode())
    elif args.mode == "tcp-flows":
        tcp_flows(args)
    elif args.mode == "udp-flows":
        udp_flows(args)
    else:
        udp_stream(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
