"""A TCP forwarder from the host into a node's network namespace (``python -m
sfc_k8s.local.forward --listen HOST:PORT --netns NS --to HOST:PORT``).

The local API server runs on the host, its nodes in network namespaces that the host has no
route into. A real control plane reaches the servers it aggregates over the cluster network;
here the local cluster runs this forwarder as a supervised process instead (started by
``sfc_k8s.local.custom_metrics`` for the metrics provider): every connection accepted on the
host's ``--listen`` address is matched by one opened inside ``--netns`` (from a short-lived
thread, ``netns.connect_in_netns``, so the process never changes namespace) and the bytes are
copied both ways, TLS untouched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from sfc_k8s.local import netns


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host, int(port)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until EOF or an error, then close ``writer`` (one
    direction of a forwarded connection; the node runtime's port-forward uses it too)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.close()


async def serve(listen: tuple[str, int], namespace: str, to: tuple[str, int]) -> None:
    """Forward until cancelled or SIGTERM."""

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = await asyncio.to_thread(
                netns.connect_in_netns, namespace, to[0], to[1], timeout=5.0
            )
            sock.setblocking(False)
            far_reader, far_writer = await asyncio.open_connection(sock=sock)
        except (OSError, netns.NetnsError):
            writer.close()
            return
        await asyncio.gather(pipe(reader, far_writer), pipe(far_reader, writer))

    server = await asyncio.start_server(forward, listen[0], listen[1], reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        print(f"forwarding {listen[0]}:{listen[1]} to {to[0]}:{to[1]} in {namespace}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sfc_k8s.local.forward")
    parser.add_argument("--listen", type=_address, required=True, help="HOST:PORT on the host")
    parser.add_argument("--netns", required=True, help="the namespace to connect from")
    parser.add_argument("--to", type=_address, required=True, help="HOST:PORT in --netns")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.listen, args.netns, args.to))
    except OSError as err:
        print(f"{parser.prog}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
