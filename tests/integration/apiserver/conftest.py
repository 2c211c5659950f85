"""The `apiserver_process` fixture: the API server as a real process on an SQLite database,
which a test can kill (SIGKILL) and start again on the same port and database.

Usage:

    def test_x(apiserver_process):
        apiserver_process.kubectl("create", "namespace", "x", check=True)
        apiserver_process.kill()       # SIGKILL, as a crash
        apiserver_process.start()      # same port, same database
        apiserver_process.get("/api/v1/namespaces")   # raw JSON over HTTP
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

KUBECTL = "/usr/bin/kubectl"
START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class APIServerProcess:
    """`python -m sfc_k8s.local.apiserver --database ...`, killed and restarted at will."""

    def __init__(self, state_dir: Path, *, history: int) -> None:
        self.state_dir = state_dir
        self.database = state_dir / "store.db"
        self.kubeconfig = state_dir / "kubeconfig"
        self.history = history
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.process is None, "already running"
        self.starts += 1
        log = (self.state_dir / f"apiserver-{self.starts}.log").open("wb")
        command = [
            sys.executable,
            "-m",
            "sfc_k8s.local.apiserver",
            "--port",
            str(self.port),
            "--state-dir",
            str(self.state_dir),
            "--database",
            str(self.database),
            "--history",
            str(self.history),
        ]
        with log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._serving():
            if self.process.poll() is not None:
                self.process = None
                raise AssertionError(f"the API server exited: {self.log()}")
            if time.monotonic() > deadline:
                self.kill()  # not left running after the test
                raise AssertionError(f"the API server did not start: {self.log()}")
            time.sleep(0.05)

    def _serving(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/version", timeout=1):
                return self.kubeconfig.exists()
        except OSError:
            return False

    def log(self) -> str:
        return (self.state_dir / f"apiserver-{self.starts}.log").read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as response:
            return json.load(response)

    def kubectl(
        self, *args: str, check: bool = False, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = [
            KUBECTL,
            "--kubeconfig",
            str(self.kubeconfig),
            "--cache-dir",
            str(self.state_dir / "cache"),
            *args,
        ]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        result = subprocess.run(
            command, capture_output=True, text=True, input=input, timeout=60, env=env, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result


@pytest.fixture
def apiserver_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[APIServerProcess]:
    """A started API server process on a database in a fresh directory; killed at the end."""
    server = APIServerProcess(tmp_path_factory.mktemp("apiserver-db"), history=50)
    try:
        server.start()
        yield server
    finally:
        server.kill()
