"""Network namespace plumbing for the local cluster: create, delete, run in, connect from.

Nodes and pods of the local cluster are named network namespaces (``/run/netns/<name>``, the
``ip netns`` convention, so ``ip netns exec`` and CNI plugins see them). Processes are started
inside a namespace with ``ip netns exec`` (which also mounts that namespace's sysfs, as a
container runtime would) or, where the mount namespace must stay the host's (the node agent
needs the host's bpffs), with ``nsenter --net``. Sockets inside a namespace are opened from a
short-lived thread that enters it, so the long-lived process never changes namespace.
Used by the node runtime, the CLI and the demo.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import TypeVar

from sfc_k8s.local.layout import NETNS_DIR

CLONE_NEWNET = 0x40000000
T = TypeVar("T")

# Found once, also when PATH lacks the sbin folders (a non-login root shell, a test runner).
_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
IP = shutil.which("ip", path=_SEARCH) or "ip"
NSENTER = shutil.which("nsenter", path=_SEARCH) or "nsenter"


class NetnsError(Exception):
    """A namespace could not be created, entered or removed."""


def netns_path(name: str) -> str:
    return str(NETNS_DIR / name)


def exec_argv(name: str, argv: list[str]) -> list[str]:
    """``argv`` run inside namespace ``name`` with its own sysfs (as in a container)."""
    return [IP, "netns", "exec", name, *argv]


def nsenter_argv(name: str, argv: list[str]) -> list[str]:
    """``argv`` run inside namespace ``name``, keeping the host's mounts (bpffs)."""
    return [NSENTER, f"--net={netns_path(name)}", "--", *argv]


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)!r} failed: {err.decode(errors='replace').strip()}")


async def run_ip(*args: str) -> None:
    """Run ``ip ARGS``; NetnsError with its message if it fails."""
    await _run(IP, *args)


async def create(name: str) -> None:
    """Create namespace ``name`` with its loopback up (no-op if it exists)."""
    if not os.path.exists(netns_path(name)):
        await _run(IP, "netns", "add", name)
    await _run(IP, "-n", name, "link", "set", "lo", "up")


async def delete(name: str) -> None:
    """Remove namespace ``name``; a missing one is fine."""
    if os.path.exists(netns_path(name)):
        await _run(IP, "netns", "del", name)


def delete_sync(name: str) -> None:
    if os.path.exists(netns_path(name)):
        subprocess.run([IP, "netns", "del", name], check=False, capture_output=True)


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def run_in_netns(name: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` in a fresh thread that has entered namespace ``name``; return its result.

    Sockets created by ``fn`` stay in that namespace after the thread ends, so the caller can
    use them from anywhere. The calling thread never changes namespace.
    """
    box: dict[str, object] = {}

    def body() -> None:
        try:
            fd = os.open(netns_path(name), os.O_RDONLY)
        except OSError as err:
            box["err"] = NetnsError(f"cannot open namespace {name!r}: {err}")
            return
        try:
            _setns(fd)
            box["ok"] = fn()
        except BaseException as err:
            box["err"] = err
        finally:
            os.close(fd)

    thread = threading.Thread(target=body, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if "err" in box:
        err = box["err"]
        assert isinstance(err, BaseException)
        if isinstance(err, OSError) and err.errno == errno.EPERM:
            raise NetnsError(f"cannot enter namespace {name!r}: run as root") from err
        raise err
    return box["ok"]  # type: ignore[return-value]


def listen_in_netns(name: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket bound to ``host:port`` inside namespace ``name``."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
        return sock

    return run_in_netns(name, make)


def connect_in_netns(name: str, host: str, port: int, *, timeout: float = 5.0) -> socket.socket:
    """A TCP socket connected to ``host:port`` from inside namespace ``name``."""

    def make() -> socket.socket:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    return run_in_netns(name, make)
