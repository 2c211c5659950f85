"""Fixtures of the node-runtime tests: one local cluster per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.local.cluster import Cluster, local_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with local_cluster(tmp_path_factory.mktemp("sfcl")) as c:
        yield c
