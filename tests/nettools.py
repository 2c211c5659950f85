"""Helpers shared by the root tests: network namespaces and veths that always get cleaned up.

Names carry a random suffix so that tests running side by side (or a previous crashed run)
never collide, and every object is registered with a ``Janitor`` before it is used, so a failing
test still leaves nothing behind.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def run(*cmd: str, netns: str | None = None, check: bool = True, timeout: float = 30):
    """Run a command (optionally inside a named netns) and return the CompletedProcess."""
    argv = ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout)


def unique(prefix: str, length: int = 15) -> str:
    """A name like ``prefix-1a2b3c`` that fits an interface name (15 characters)."""
    suffix = secrets.token_hex(3)
    return f"{prefix[: length - len(suffix) - 1]}-{suffix}"


# Names of network namespaces and bpffs roots this test session created ("netns NAME",
# "pin /sys/fs/bpf/NAME"): the session-end leak check blames these, whatever else runs on the
# machine at the same time.
CREATED: set[str] = set()


def private_bpffs_root() -> str:
    """A fresh bpffs root name for one test (``/sys/fs/bpf/sfct-<random>``), on record as this
    session's; the caller removes it."""
    name = f"sfct-{secrets.token_hex(4)}"
    CREATED.add(f"pin /sys/fs/bpf/{name}")
    return f"/sys/fs/bpf/{name}"


class Janitor:
    """Undo steps run in reverse order, each one even if an earlier one failed."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], object]] = []

    def add(self, undo: Callable[[], object]) -> None:
        self._undo.append(undo)

    def netns(self, prefix: str = "sfct") -> str:
        name = unique(prefix, length=24)
        CREATED.add(f"netns {name}")
        run("ip", "netns", "add", name)
        self.add(lambda: run("ip", "netns", "del", name, check=False))
        run("ip", "link", "set", "lo", "up", netns=name)
        return name

    def veth(
        self,
        a: str,
        b: str,
        *,
        a_netns: str | None = None,
        b_netns: str | None = None,
        up: bool = True,
    ) -> tuple[str, str]:
        """Create veth a<->b, moving each end into its namespace (None = the root one)."""
        run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        # Deleting either end removes both; try from wherever the ends ended up.
        self.add(lambda: run("ip", "link", "del", a, check=False, netns=a_netns))
        for name, ns in ((a, a_netns), (b, b_netns)):
            if ns:
                run("ip", "link", "set", name, "netns", ns)
            if up:
                run("ip", "link", "set", name, "up", netns=ns)
        return a, b

    def close(self) -> None:
        errors: list[BaseException] = []
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception as err:  # keep cleaning; report at the end
                errors.append(err)
        if errors:
            raise errors[0]


@contextmanager
def janitor() -> Iterator[Janitor]:
    j = Janitor()
    try:
        yield j
    finally:
        j.close()


def is_root() -> bool:
    return os.geteuid() == 0
