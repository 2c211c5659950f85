"""The node agent's side of CNI delivery: it runs the server the ``sfc-cni`` shim talks to.

``sfc-k8s agent --cni-server`` (the DaemonSet sets it) starts ``sfc_k8s.cni.server`` as a child
process before Kopf starts, and keeps it running: a watcher thread restarts it if it exits (after
a short pause), and stops it when the agent stops. The server is a separate, single-threaded
process because it forks one child per CNI call (see its docstring): the agent itself, with
Kopf's event loop and threads, is never forked. Off by default: the local cluster runs several
agents on one host and invokes the Python ``sfc-cni`` directly.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sfc_k8s.cni import wire

if TYPE_CHECKING:
    from collections.abc import Iterator

logger = logging.getLogger("sfc_k8s.agent.cni")
RESTART_DELAY = 1.0


@dataclass(frozen=True)
class CniServerOptions:
    socket: str = wire.DEFAULT_SOCKET
    spool_dir: str = wire.DEFAULT_SPOOL_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The agent's ``--cni-server``, ``--cni-socket`` and ``--cni-spool-dir`` options."""
    env = os.environ.get
    parser.add_argument(
        "--cni-server",
        action="store_true",
        default=env("SFC_K8S_CNI_SERVER", "") in ("1", "true"),
        help="serve the sfc-cni shim installed on the node (env SFC_K8S_CNI_SERVER=1)",
    )
    parser.add_argument(
        "--cni-socket",
        default=wire.DEFAULT_SOCKET,
        help=f"where the shim reaches the agent ({wire.DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "--cni-spool-dir",
        default=wire.DEFAULT_SPOOL_DIR,
        help=f"where the shim spools DELs while the agent is down ({wire.DEFAULT_SPOOL_DIR})",
    )


def options_from_args(args: argparse.Namespace) -> CniServerOptions | None:
    if not args.cni_server:
        return None
    return CniServerOptions(socket=args.cni_socket, spool_dir=args.cni_spool_dir)


class CniServerProcess:
    """``python -m sfc_k8s.cni.server`` as a supervised child of the agent."""

    def __init__(self, options: CniServerOptions) -> None:
        self.options = options
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # the watcher restarting vs stop() terminating
        self._watcher: threading.Thread | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "sfc_k8s.cni.server"]
        argv += ["--socket", self.options.socket, "--spool-dir", self.options.spool_dir]
        argv += ["--parent", str(os.getpid())]
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        self._proc = self._spawn()
        logger.info(f"CNI server started (pid {self._proc.pid}) at {self.options.socket}")
        self._watcher = threading.Thread(target=self._watch, name="sfc-cni-server", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while self._proc is not None:
            code = self._proc.wait()
            if self._stopping.wait(RESTART_DELAY):
                return
            logger.error(f"CNI server exited with status {code}; restarting it")
            with self._lock:
                if self._stopping.is_set():
                    return
                self._proc = self._spawn()

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._watcher is not None:
            self._watcher.join()


@contextlib.contextmanager
def serving(options: CniServerOptions | None) -> Iterator[None]:
    """Run the CNI server (when ``options`` ask for one) for the duration of the block."""
    if options is None:
        yield
        return
    server = CniServerProcess(options)
    server.start()
    try:
        yield
    finally:
        server.stop()
