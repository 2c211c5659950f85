"""Fixtures shared by the agent and controller integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sfc_k8s.dataplane import Dataplane
from tests.fixtures.controller import cluster  # noqa: F401  (the controller tests' fixture)
from tests.integration.operator.test_agent_programming import Api, new_bpffs_root, open_dataplane
from tests.nettools import Janitor


@pytest.fixture
def bpffs_root(janitor: Janitor) -> str:
    return new_bpffs_root(janitor)


@pytest.fixture
def api(apiserver: Any) -> Api:
    apiserver.apply_crds()
    return Api(apiserver.url)


@pytest.fixture
def dataplane(bpffs_root: str) -> Iterator[Dataplane]:
    yield from open_dataplane(bpffs_root)
