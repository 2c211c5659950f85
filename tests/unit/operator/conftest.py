"""Fixtures of the controller tests that need no root: a local API server and a namespace."""

from __future__ import annotations

from tests.fixtures.controller import cluster  # noqa: F401  (the controller tests' fixture)
