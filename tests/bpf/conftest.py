"""Fixtures of the BPF tests: a private data plane with two links over real veths.

Module-scoped (loading the program and creating veths costs more than the tests), torn down
afterwards pass or fail: links, pins, root folder, veths.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sfc_k8s.dataplane import Dataplane
from tests.bpf.harness import Harness
from tests.nettools import janitor, private_bpffs_root, unique

SESSIONS = 4096


def private_root() -> str:
    return private_bpffs_root()


@dataclass
class Topology:
    """Link ``main``: side A a0, a1; side B b0, b1, b2. Link ``other``: c0 | d0. s0: no link."""

    h: Harness
    root: str
    ifs: dict[str, str]  # role -> interface name

    def __getitem__(self, role: str) -> str:
        return self.ifs[role]


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    root = private_root()
    with janitor() as j:
        roles = ["a0", "a1", "b0", "b1", "b2", "c0", "d0", "s0"]
        ifs = {}
        for role in roles:
            # Down: no packet from the kernel (IPv6 autoconf) enters the link during tests.
            host, _ = j.veth(unique(f"t{role}"), unique(f"p{role}"), up=False)
            ifs[role] = host
        dp = Dataplane(root, session_table_size=SESSIONS)

        def teardown() -> None:
            dp.close()
            with Dataplane(root) as fresh:
                fresh.destroy()

        j.add(teardown)
        dp.create_link(
            "main", side_a=[ifs["a0"], ifs["a1"]], side_b=[ifs[r] for r in ("b0", "b1", "b2")]
        )
        dp.create_link("other", side_a=[ifs["c0"]], side_b=[ifs["d0"]])
        yield Topology(Harness(dp), root, ifs)


@pytest.fixture
def t(topo: Topology) -> Iterator[Topology]:
    """The module's topology with an empty session table for each test."""
    topo.h.clear_sessions()
    yield topo
