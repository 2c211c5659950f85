"""Fixtures shared by the agent and controller integration tests, and by the autoscaling ones
(``metrics_cluster``: an API server whose HPA controller syncs every 0.2 s; ``metrics_provider``:
``sfc-k8s metrics-provider`` running against it)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sfc_k8s.dataplane import Dataplane
from sfc_k8s.local.apiserver import APIServer
from tests.fixtures.apiserver import LocalAPIServer
from tests.fixtures.controller import cluster  # noqa: F401  (the controller tests' fixture)
from tests.integration.operator.test_agent_programming import (
    Api,
    new_bpffs_root,
    open_dataplane,
    wait_for,
)
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


@pytest.fixture
def metrics_cluster(tmp_path: Path) -> Iterator[LocalAPIServer]:
    """A server whose HPA controller syncs every 0.2 s through its own custom metrics path."""
    server = APIServer(state_dir=tmp_path, hpa_sync_period=0.2)
    server.start()
    try:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        yield LocalAPIServer(server=server, kubeconfig=kubeconfig, cache_dir=tmp_path / "cache")
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def metrics_provider(metrics_cluster: LocalAPIServer, janitor: Janitor) -> int:
    """``sfc-k8s metrics-provider`` as a process; its port."""
    port = _free_port()
    argv = [
        sys.executable, "-m", "sfc_k8s.cli", "metrics-provider",
        "--kubeconfig", str(metrics_cluster.kubeconfig), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop() -> None:
        proc.terminate()
        proc.communicate(timeout=10)

    janitor.add(stop)

    def listening() -> bool:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
        return True

    wait_for("the provider to listen", listening)
    return port
