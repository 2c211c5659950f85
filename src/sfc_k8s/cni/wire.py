"""What the compiled ``sfc-cni`` shim and the node agent's CNI server say to each other.

The shim (``src/sfc_k8s/cni/shim/sfc_cni_shim.c``) forwards one CNI call over a unix socket to
the agent's CNI server (``sfc_k8s.cni.server``), which runs the plugin and sends back what it
printed and its exit code. This module is the one source of truth for the protocol's constants
and defaults: the shim includes the header that ``python -m sfc_k8s.cni.wire --header`` prints
(``make cni-shim`` and the Dockerfile generate it), the server and the installer import them.

A **request** is ``MAGIC``, then one ``NAME=value\\0`` per ``CNI_*`` variable the runtime set
(only those of ``FORWARDED_ENV``; an unset one is absent, an empty one is ``NAME=\\0``), then an
empty entry (``\\0``), then the network config (stdin) up to the end of the stream. A DEL the
shim could not deliver is spooled as the same bytes, one file per request. A **reply** is the
line ``MAGIC_REPLY <exit code> <stdout length>\\n``, then stdout, then stderr up to the end.
"""

from __future__ import annotations

import sys

DEFAULT_SOCKET = "/run/sfc-k8s/cni.sock"
# Persistent, unlike /run: a DEL spooled before a reboot still releases its host-local lease,
# which lives on disk (/var/lib/cni/networks) and would otherwise leak.
DEFAULT_SPOOL_DIR = "/var/lib/sfc-k8s/cni-spool"
# Network-config keys that override the defaults above, per network.
SOCKET_KEY = "agentSocket"
SPOOL_KEY = "spoolDir"

MAGIC = b"sfc-cni/1\n"
MAGIC_REPLY = b"sfc-cni/1"
FORWARDED_ENV = (
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
)
MAX_REQUEST = 1 << 20  # a network config with a prevResult is a few KiB
MAX_REPLY = 1 << 20
SPOOL_PREFIX = "del-"
SPOOL_SUFFIX = ".req"
# How long the shim waits for the agent's reply before giving up (a DEL is then spooled).
REPLY_TIMEOUT_SECONDS = 60


class WireError(ValueError):
    """A request or reply that does not follow the protocol (the message says how)."""


class Request:
    """One forwarded CNI call: the ``CNI_*`` variables that were set, and stdin."""

    __slots__ = ("env", "stdin")

    def __init__(self, env: dict[str, str], stdin: bytes) -> None:
        self.env = env
        self.stdin = stdin


def encode_request(env: dict[str, str], stdin: bytes) -> bytes:
    """The bytes the shim sends (and spools) for a call with ``env`` and ``stdin``."""
    entries = b"".join(
        f"{name}={env[name]}".encode() + b"\0" for name in FORWARDED_ENV if name in env
    )
    return MAGIC + entries + b"\0" + stdin


def decode_request(data: bytes) -> Request:
    """Parse a request; ``WireError`` names what is wrong with it."""
    if len(data) > MAX_REQUEST:
        raise WireError(f"request of {len(data)} bytes: expected at most {MAX_REQUEST}")
    if not data.startswith(MAGIC):
        raise WireError(f"request starts with {data[:16]!r}: expected {MAGIC!r}")
    pos = len(MAGIC)
    env: dict[str, str] = {}
    while True:
        end = data.find(b"\0", pos)
        if end < 0:
            raise WireError("request ends inside its environment: expected an empty entry")
        entry = data[pos:end]
        pos = end + 1
        if not entry:
            return Request(env, data[pos:])
        name, sep, value = entry.decode(errors="replace").partition("=")
        if not sep or name not in FORWARDED_ENV:
            raise WireError(f"request entry {name!r}: expected one of {', '.join(FORWARDED_ENV)}")
        env[name] = value


def encode_reply(code: int, stdout: bytes, stderr: bytes) -> bytes:
    """The bytes the server sends back: exit code, stdout and stderr (cut to fit)."""
    stderr = stderr[: max(0, MAX_REPLY - 64 - len(stdout))]
    return MAGIC_REPLY + f" {code} {len(stdout)}\n".encode() + stdout + stderr


def decode_reply(data: bytes) -> tuple[int, bytes, bytes]:
    """(exit code, stdout, stderr) of a reply; ``WireError`` when it is malformed."""
    head, sep, rest = data.partition(b"\n")
    fields = head.split(b" ")
    if not sep or len(fields) != 3 or fields[0] != MAGIC_REPLY:
        raise WireError(f"reply starts with {data[:32]!r}: expected {MAGIC_REPLY!r} CODE LENGTH")
    try:
        code, length = int(fields[1]), int(fields[2])
    except ValueError as err:
        raise WireError(f"reply header {head!r}: expected two integers") from err
    if not 0 <= length <= len(rest):
        raise WireError(f"reply announces {length} bytes of stdout, has {len(rest)}")
    return code, rest[:length], rest[length:]


def header() -> str:
    """The shim's compile-time constants, as a C header (``sfc_cni_wire.h``)."""
    from sfc_k8s.cni.config import SUPPORTED_VERSIONS
    from sfc_k8s.cni.plugin import LATEST_VERSION

    def string(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    versions = ",".join(f'"{v}"' for v in SUPPORTED_VERSIONS)
    forwarded = ",".join(f'"{name}"' for name in FORWARDED_ENV)
    defines = {
        "SFC_CNI_DEFAULT_SOCKET": string(DEFAULT_SOCKET),
        "SFC_CNI_DEFAULT_SPOOL_DIR": string(DEFAULT_SPOOL_DIR),
        "SFC_CNI_SOCKET_KEY": string(SOCKET_KEY),
        "SFC_CNI_SPOOL_KEY": string(SPOOL_KEY),
        "SFC_CNI_MAGIC": string(MAGIC.decode()),
        "SFC_CNI_MAGIC_REPLY": string(MAGIC_REPLY.decode()),
        "SFC_CNI_SPOOL_PREFIX": string(SPOOL_PREFIX),
        "SFC_CNI_SPOOL_SUFFIX": string(SPOOL_SUFFIX),
        "SFC_CNI_MAX_REQUEST": str(MAX_REQUEST),
        "SFC_CNI_MAX_REPLY": str(MAX_REPLY),
        "SFC_CNI_REPLY_TIMEOUT": str(REPLY_TIMEOUT_SECONDS),
        "SFC_CNI_LATEST_VERSION": string(LATEST_VERSION),
        "SFC_CNI_SUPPORTED_VERSIONS": versions,
        "SFC_CNI_FORWARDED_ENV": forwarded,
    }
    from sfc_k8s import __version__

    defines["SFC_CNI_VERSION"] = string(__version__)
    lines = [f"#define {name} {value}" for name, value in defines.items()]
    return "/* Generated by 'python -m sfc_k8s.cni.wire --header'; do not edit. */\n" + "\n".join(
        ["#pragma once", *lines, ""]
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m sfc_k8s.cni.wire --header``: print the shim's header."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["--header"]:
        sys.stderr.write("usage: python -m sfc_k8s.cni.wire --header\n")
        return 2
    sys.stdout.write(header())
    return 0


if __name__ == "__main__":
    sys.exit(main())
