"""Fixtures shared by every test tier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.nettools import Janitor

pytest_plugins = ["tests.fixtures.apiserver"]


@pytest.fixture
def janitor() -> Iterator[Janitor]:
    """Creates namespaces/veths/pins for a test and removes them afterwards, pass or fail."""
    j = Janitor()
    try:
        yield j
    finally:
        j.close()
