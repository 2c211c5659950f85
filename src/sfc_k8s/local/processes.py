"""The local cluster's background processes: start, record, watch, stop, kill.

``sfc-k8s local`` runs the API server, the node runtimes, the controller and the agents as
processes of their own, each in its own session with a log in the state directory, and records
each one (pid, argv, environment, log) in ``cluster.json`` as it starts it, so that ``down``
stops them from the record and ``local node start`` starts a node's processes again the same
way. Used by ``cli.py`` and ``nodes.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sfc_k8s.local.layout import Layout, pid_alive, write_json

STOP_ORDER = ("controller", "agent-", "node-runtime", "apiserver")

# Processes started by this Python process (``up`` called in-process, as the demo does): kept
# so that ``down`` can reap them, and so that they are never garbage-collected while running.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class LocalClusterError(Exception):
    """The local cluster could not be started, reached or stopped."""


@dataclass
class Progress:
    """One line per step: what is being done, then ``ok (1.2s)`` or the failure."""

    quiet: bool = False

    def step(self, text: str) -> Callable[..., None]:
        start = time.monotonic()
        if not self.quiet:
            print(f"  {text} ...", end="", flush=True)

        def done(result: str = "ok") -> None:
            if not self.quiet:
                print(f" {result} ({time.monotonic() - start:.1f}s)", flush=True)

        return done

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)


def python() -> str:
    return sys.executable


def start_process(
    layout: Layout, record: dict[str, Any], name: str, argv: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own, its output appended to its log; record it."""
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = layout.log(name)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        )
    _CHILDREN[proc.pid] = proc
    record.setdefault("processes", {})[name] = {
        "pid": proc.pid,
        "argv": argv,
        "env": env,
        "log": str(log_path),
        "hint": argv[-1] if name.startswith("agent-") else "sfc_k8s",
    }
    write_json(layout.cluster_file, record)
    return proc


def alive(info: dict[str, Any]) -> bool:
    return pid_alive(int(info["pid"]), None)


def tail_log(path: str, lines: int = 15) -> str:
    """The last ``lines`` lines of a log, indented for a report."""
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("      " + line for line in text[-lines:])


def stop_processes(record: dict[str, Any], timeout: float = 15.0) -> None:
    """SIGTERM every recorded process (controller first, API server last), SIGKILL after
    ``timeout``; whatever their process groups left goes too."""
    procs: dict[str, dict[str, Any]] = record.get("processes") or {}

    def rank(name: str) -> int:
        return next((i for i, p in enumerate(STOP_ORDER) if name.startswith(p)), len(STOP_ORDER))

    for name in sorted(procs, key=rank):
        info = procs[name]
        pid = int(info["pid"])
        if not alive(info):
            continue
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(info) and time.monotonic() < deadline:
            reap(pid)
            time.sleep(0.05)
        kill_process(info)


def kill_process(info: dict[str, Any]) -> None:
    """SIGKILL a recorded process and its process group at once, as a crash would end it."""
    pid = int(info["pid"])
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while alive(info) and time.monotonic() < deadline:
        reap(pid)
        time.sleep(0.02)
    reap(pid)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(5)


def reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_until(what: str, check: Callable[[], bool], timeout: float, logs: str) -> None:
    """Poll ``check`` until it holds; past ``timeout`` raise, pointing at the logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise LocalClusterError(f"timed out after {timeout:.0f}s waiting for {what}; logs: {logs}")


def check_alive(record: dict[str, Any], name: str) -> None:
    """Raise with the end of its log if the recorded process ``name`` has exited."""
    info = record["processes"][name]
    if not alive(info):
        raise LocalClusterError(
            f"{name} exited during start-up; its log {info['log']} ends with:\n"
            + tail_log(info["log"])
        )
