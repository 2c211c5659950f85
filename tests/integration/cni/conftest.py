"""Fixtures of the CNI plugin tests: a ``CNI_PATH`` directory and a private IPAM data dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.cni.cnitools import make_cni_dir


@pytest.fixture(scope="session")
def cni_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sfc-cni launcher beside the reference plugins, built once per session."""
    return make_cni_dir(tmp_path_factory.mktemp("cni") / "bin")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """host-local's lease directory for this test only."""
    path = tmp_path / "ipam"
    path.mkdir()
    return path
