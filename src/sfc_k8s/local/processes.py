"""The local cluster's background processes: record, start through the supervisor, stop, kill.

``sfc-k8s local`` runs the API server, the node runtimes, the controller and the agents as
processes of their own, each in its own session with a log in the state directory. Each one is
recorded in ``cluster.json`` (argv, environment, log, then pid, restarts and last exit), and the
cluster's supervisor (``supervisor.py``, itself recorded as ``supervisor``) starts it and keeps
it running, as systemd runs the kubelet and the kubelet its containers: ``up`` writes the wish
with ``pid`` 0 and waits for the supervisor to fill in the pid. A standby supervisor (itself
supervised) takes over when the supervisor dies. Every change of ``cluster.json``
is a read-modify-write under one lock (``locked_record``), so the CLI and the supervisor never
overwrite each other's changes. ``down`` stops the supervisor first, then the rest from the
record. Used by ``cli.py``, ``nodes.py`` and ``supervisor.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sfc_k8s.local.layout import Layout, pid_alive, read_json, write_json

SUPERVISOR = "supervisor"
STANDBY = "supervisor-standby"  # waits on the supervisor's lock, takes over when it dies
STOP_ORDER = (SUPERVISOR, "controller", "agent-", "node-runtime", "apiserver")
START_TIMEOUT = 15.0  # how long a start request waits for the supervisor to run the process

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


@contextlib.contextmanager
def locked_record(layout: Layout) -> Iterator[dict[str, Any]]:
    """``cluster.json`` read under an exclusive lock, written back (if changed) on exit; an
    exception leaves the file as it was."""
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    with open(layout.lock_file, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = read_json(layout.cluster_file)
        before = json.dumps(record, sort_keys=True)
        yield record
        if json.dumps(record, sort_keys=True) != before:
            write_json(layout.cluster_file, record)


def save_fields(layout: Layout, record: dict[str, Any], **fields: Any) -> None:
    """Set top-level ``fields`` in ``record`` and in ``cluster.json``, keeping what others
    (the supervisor) changed in the file meanwhile."""
    record.update(fields)
    with locked_record(layout) as current:
        current.update(fields)


def spawn(
    layout: Layout, name: str, argv: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own, its output appended to ``logs/NAME.log``."""
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    with open(layout.log(name), "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        )


def process_entry(
    layout: Layout, name: str, argv: list[str], env: dict[str, str]
) -> dict[str, Any]:
    """A process's record before it runs: ``pid`` 0 asks the supervisor to start it."""
    return {
        "pid": 0,
        "argv": argv,
        "env": env,
        "log": str(layout.log(name)),
        "hint": argv[-1] if name.startswith("agent-") else "sfc_k8s",
        "restarts": 0,
    }


def start_process(
    layout: Layout, record: dict[str, Any], name: str, argv: list[str], env: dict[str, str]
) -> None:
    """Record ``argv`` as process ``name`` and wait until the supervisor runs it."""
    entry = process_entry(layout, name, argv, env)
    with locked_record(layout) as current:
        current.setdefault("processes", {})[name] = entry
    record.setdefault("processes", {})[name] = wait_started(layout, name)


def wait_started(layout: Layout, name: str, timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """The record of process ``name`` once the supervisor has started it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs = read_json(layout.cluster_file).get("processes") or {}
        info = procs.get(name) or {}
        if int(info.get("pid") or 0) > 0:
            return dict(info)
        supervisor = procs.get(SUPERVISOR)
        if supervisor is None or not alive(supervisor):
            raise LocalClusterError(
                f"cannot start {name}: the supervisor is not running (its log: "
                f"{layout.log(SUPERVISOR)}); 'sfc-k8s local up' starts it again"
            )
        time.sleep(0.02)
    raise LocalClusterError(
        f"the supervisor did not start {name} within {timeout:.0f}s; see {layout.log(SUPERVISOR)}"
    )


def supervisor_argv(layout: Layout) -> list[str]:
    return [python(), "-m", "sfc_k8s.local.supervisor", "--state-dir", str(layout.state_dir)]


def ensure_supervisor(layout: Layout, record: dict[str, Any]) -> bool:
    """Start the cluster's supervisor unless it or its standby runs (the standby takes over on
    its own); True if it had to be started."""
    argv = supervisor_argv(layout)
    with locked_record(layout) as current:
        current.pop("stopping", None)  # a down that did not finish: supervise again
        procs = current.setdefault("processes", {})
        info = procs.get(SUPERVISOR)
        if any(alive(procs[n]) for n in (SUPERVISOR, STANDBY) if n in procs):
            record.setdefault("processes", {}).update(
                {n: dict(procs[n]) for n in (SUPERVISOR, STANDBY) if n in procs}
            )
            return False
        proc = spawn(layout, SUPERVISOR, argv, {})
        _CHILDREN[proc.pid] = proc
        entry = process_entry(layout, SUPERVISOR, argv, {})
        restarts = int((info or {}).get("restarts", -1)) + 1
        entry.update(pid=proc.pid, startedAt=time.time(), restarts=restarts)
        if info is not None:
            entry["lastExit"] = "exited (found dead by 'local up')"
            entry["lastExitAt"] = time.time()
        procs[SUPERVISOR] = entry
    record.setdefault("processes", {})[SUPERVISOR] = entry
    return True


def alive(info: dict[str, Any]) -> bool:
    pid = int(info.get("pid") or 0)
    return pid > 0 and pid_alive(pid, None)


def tail_log(path: str, lines: int = 15) -> str:
    """The last ``lines`` lines of a log, indented for a report."""
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("      " + line for line in text[-lines:])


def stop_order(name: str) -> int:
    return next((i for i, p in enumerate(STOP_ORDER) if name.startswith(p)), len(STOP_ORDER))


def stop_supervisor(layout: Layout) -> None:
    """Stop the supervisor and its standby; nothing is restarted after this returns."""
    if not layout.cluster_file.exists():
        return
    with locked_record(layout) as record:  # waits out a supervisor step that was running
        record["stopping"] = True  # from now on no supervisor starts anything
        procs = record.get("processes") or {}
        supervisors = {n: procs[n] for n in (STANDBY, SUPERVISOR) if n in procs}
    stop_processes({"processes": supervisors})


def stop_processes(record: dict[str, Any], timeout: float = 15.0) -> None:
    """SIGTERM every recorded process (supervisor and controller first, API server last),
    SIGKILL after ``timeout``; whatever their process groups left goes too."""
    procs: dict[str, dict[str, Any]] = record.get("processes") or {}
    for pid in list(_CHILDREN):  # e.g. a supervisor of ours that was killed and replaced
        reap(pid)
    for name in sorted(procs, key=stop_order):
        info = procs[name]
        if not alive(info):
            continue
        pid = int(info["pid"])
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(info) and time.monotonic() < deadline:
            reap(pid)
            time.sleep(0.05)
        kill_process(info)


def kill_process(info: dict[str, Any]) -> None:
    """SIGKILL a recorded process and its process group at once, as a crash would end it."""
    pid = int(info.get("pid") or 0)
    if pid <= 0:  # never started: killpg(0) would hit our own group
        return
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


def check_alive(layout: Layout, name: str, since: float) -> None:
    """Raise with the end of its log if process ``name`` exited after ``since`` (a wall-clock
    time): a start-up that crashes is reported at once, not after the supervisor's retries."""
    info = (read_json(layout.cluster_file).get("processes") or {}).get(name) or {}
    if float(info.get("lastExitAt") or 0) >= since:
        raise LocalClusterError(
            f"{name} exited during start-up ({info.get('lastExit')}); its log {info['log']} "
            "ends with:\n" + tail_log(info["log"])
        )
