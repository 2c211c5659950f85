"""The node agent's CNI server supervision (sfc_k8s.operator.agent_cni).

Covers: ``--cni-server`` off by default (the local cluster runs several agents on one host), on
with the protocol's default socket and spool directory, or with the paths given; the server
process started by ``serving``, answering on its socket, restarted after it dies, and gone with
its socket once the block ends (a real ``python -m sfc_k8s.cni.server``; no root needed).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sfc_k8s.cni import wire
from sfc_k8s.operator import agent_cni
from sfc_k8s.operator.agent import config_from_args


def test_cni_server_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SFC_K8S_CNI_SERVER", raising=False)
    assert config_from_args(["--node", "n1"]).cni_server is None
    on = config_from_args(["--node", "n1", "--cni-server"]).cni_server
    assert on == agent_cni.CniServerOptions(wire.DEFAULT_SOCKET, wire.DEFAULT_SPOOL_DIR)
    moved = config_from_args(
        ["--node", "n1", "--cni-server", "--cni-socket", "/s.sock", "--cni-spool-dir", "/sp"]
    ).cni_server
    assert moved == agent_cni.CniServerOptions("/s.sock", "/sp")
    monkeypatch.setenv("SFC_K8S_CNI_SERVER", "1")
    assert config_from_args(["--node", "n1"]).cni_server is not None


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _wait(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_server_is_supervised(tmp_path: Path) -> None:
    options = agent_cni.CniServerOptions(str(tmp_path / "cni.sock"), str(tmp_path / "spool"))
    path = Path(options.socket)
    server = agent_cni.CniServerProcess(options)
    server.start()
    try:
        assert _wait(lambda: _answers(path))
        first = server._proc
        assert first is not None
        first.kill()
        assert _wait(lambda: server._proc is not first and _answers(path))
    finally:
        server.stop()
    assert server._proc is not None and server._proc.poll() is not None
    assert not path.exists()
