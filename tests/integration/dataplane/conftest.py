"""Fixtures of the data-plane traffic tests: a private Dataplane torn down after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sfc_k8s.dataplane import Dataplane
from tests.fixtures.topology import TEST_SESSIONS, bpffs_root
from tests.nettools import Janitor


@pytest.fixture
def bpffs(janitor: Janitor) -> str:
    """A private bpffs root (``/sys/fs/bpf/sfct-<random>``), removed after the test."""
    return bpffs_root(janitor)


@pytest.fixture
def dataplane(janitor: Janitor, bpffs: str) -> Iterator[Dataplane]:
    """The data plane under a private root; destroyed (by a fresh adopter) after the test.

    Set up after ``janitor``, so it is torn down before the test's namespaces are deleted.
    Destroying through a new object works whatever the test did with its own (closed it, for
    a manager restart).
    """
    dp = Dataplane(bpffs, session_table_size=TEST_SESSIONS)
    try:
        yield dp
    finally:
        dp.close()
        with Dataplane(bpffs, upgrade=False) as fresh:  # whatever build the test left
            fresh.destroy()
