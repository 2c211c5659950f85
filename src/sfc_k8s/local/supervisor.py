"""The local cluster's supervisor: it runs every recorded process and restarts it when it dies.

``local up`` starts it first (``python -m sfc_k8s.local.supervisor --state-dir D``, recorded
as the process ``supervisor``); it plays what systemd and the kubelet do on a real node. Every
``TICK`` it reaps its children and, holding the record's lock, looks at each process of
``cluster.json``:

- ``pid`` 0: a start asked for by ``up`` or ``local node start``: started at once;
- a pid that no longer runs: its exit is recorded (``lastExit``: ``exit code N`` or
  ``killed by SIGKILL`` for its own children; a process it did not start, e.g. one that died
  while the supervisor itself was down, has no status to read), then it is started again with
  its recorded argv and environment after a back-off, and ``restarts`` grows;
- the processes of a node stopped with ``local node stop`` are left alone until
  ``local node start``.

Back-off, as the kubelet's CrashLoopBackOff but shorter: 0.2 s after the first exit, doubling
with each exit that follows a run shorter than ``RESET_AFTER``, up to ``MAX_BACKOFF``; a run of
``RESET_AFTER`` or more starts again at 0.2 s. On SIGTERM it exits and leaves the processes
running (``local down`` marks the record ``stopping`` first, then stops them).

A supervisor is only active while it holds ``supervisor.lock``. The active one keeps a standby
(the process ``supervisor-standby``, the same program, supervised like the others) that blocks
on that lock; the kernel releases the lock the moment the active one dies, however it dies, so
the standby takes over at once: it records itself as ``supervisor`` (with a restart counted)
and asks for a new standby. ``local up`` starts a supervisor again only if both died.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from types import FrameType
from typing import Any

from sfc_k8s.local.layout import Layout
from sfc_k8s.local.processes import (
    STANDBY,
    SUPERVISOR,
    alive,
    locked_record,
    process_entry,
    spawn,
    supervisor_argv,
)

logger = logging.getLogger("sfc_k8s.local.supervisor")

TICK = 0.1
FIRST_BACKOFF = 0.2
MAX_BACKOFF = 10.0
RESET_AFTER = 10.0
UNKNOWN_EXIT = "exited (status unknown: not a child of this supervisor)"


def backoff(exits: int) -> float:
    """Seconds to wait before a restart after ``exits`` quick exits in a row (1 for the first)."""
    return float(min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(exits - 1, 0)))


def exit_reason(returncode: int) -> str:
    """``exit code N`` or ``killed by SIGNAME``, from a ``Popen.returncode``."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def stopped_nodes_processes(record: dict[str, Any]) -> set[str]:
    """Names of the processes of nodes stopped with ``local node stop``."""
    names = set()
    for node in record.get("stoppedNodes") or []:
        names |= {f"node-runtime-{node}", f"agent-{node}"}
    return names


class Supervisor:
    """Starts, watches and restarts the processes recorded in one cluster's ``cluster.json``."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.exits: dict[int, str] = {}  # pid -> how it ended, for children reaped

    def reap(self) -> None:
        for pid, proc in list(self.children.items()):
            code = proc.poll()
            if code is not None:
                self.exits[pid] = exit_reason(code)
                del self.children[pid]

    def take_over(self) -> bool:
        """Become the active supervisor (this process holds the lock): recorded as
        ``supervisor``, a standby asked for. False if the cluster is being stopped."""
        now, me = time.time(), os.getpid()
        with locked_record(self.layout) as record:
            if record.get("stopping"):
                return False
            procs = record.setdefault("processes", {})
            active = procs.get(SUPERVISOR) or process_entry(
                self.layout, SUPERVISOR, supervisor_argv(self.layout), {}
            )
            if int(active.get("pid") or 0) not in (0, me):  # it died: this was its standby
                active["restarts"] = int(active.get("restarts") or 0) + 1
                active["lastExit"], active["lastExitAt"] = UNKNOWN_EXIT, now
                logger.info("supervisor (pid %s) gone: taking over", active["pid"])
            active["pid"], active["startedAt"] = me, now
            procs[SUPERVISOR] = active
            standby = procs.get(STANDBY)
            if standby is None or int(standby.get("pid") or 0) == me:
                procs[STANDBY] = process_entry(self.layout, STANDBY, active["argv"], {})
            return True

    def exit_of(self, pid: int) -> str:
        """How process ``pid`` ended: reaped already, or a child that died since ``reap``."""
        if pid in self.exits:
            return self.exits.pop(pid)
        proc = self.children.pop(pid, None)
        if proc is None:
            return UNKNOWN_EXIT
        try:
            return exit_reason(proc.wait(timeout=1.0))  # a zombie by now, or about to be
        except subprocess.TimeoutExpired:
            self.children[pid] = proc
            return UNKNOWN_EXIT

    def step(self) -> bool:
        """One look at every process; False once the cluster is being stopped."""
        self.reap()
        now = time.time()
        with locked_record(self.layout) as record:
            if record.get("stopping"):
                return False
            skip = stopped_nodes_processes(record) | {SUPERVISOR}
            for name, info in (record.get("processes") or {}).items():
                if name not in skip:
                    self.tend(name, info, now)
        return True

    def tend(self, name: str, info: dict[str, Any], now: float) -> None:
        pid = int(info.get("pid") or 0)
        if pid == 0:  # asked for: start now, not a restart
            info.pop("waitingUntil", None)
            self.start(name, info, now)
            return
        if alive(info):
            return
        if "waitingUntil" not in info:  # just found dead
            ran = now - float(info.get("startedAt") or 0)
            quick = int(info.get("quickExits") or 0) + 1 if ran < RESET_AFTER else 1
            info["quickExits"] = quick
            info["lastExit"] = self.exit_of(pid)
            info["lastExitAt"] = now
            info["waitingUntil"] = now + backoff(quick)
            logger.info(
                "%s (pid %d) %s after %.1fs; restart in %.1fs",
                name, pid, info["lastExit"], ran, backoff(quick),
            )  # fmt: skip
        if now >= float(info["waitingUntil"]):
            del info["waitingUntil"]
            info["restarts"] = int(info.get("restarts") or 0) + 1
            self.start(name, info, now)

    def start(self, name: str, info: dict[str, Any], now: float) -> None:
        try:
            proc = spawn(self.layout, name, list(info["argv"]), dict(info.get("env") or {}))
        except OSError as err:  # e.g. the interpreter vanished: try again after a back-off
            logger.warning("cannot start %s: %s", name, err)
            info["lastExit"], info["lastExitAt"] = f"not started: {err}", now
            info["pid"], info["startedAt"] = -1, now
            info["waitingUntil"] = now + MAX_BACKOFF
            return
        self.children[proc.pid] = proc
        info["pid"], info["startedAt"] = proc.pid, now
        logger.info("%s started (pid %d, restarts %d)", name, proc.pid, info.get("restarts", 0))

    def run(self) -> None:
        stopping = False
        active = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            if not active:  # a standby waiting on the lock: nothing to finish
                raise SystemExit(0)
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.layout.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.layout.supervisor_lock, "a+") as lock:
            logger.info("waiting to be the active supervisor of %s", self.layout.cluster_file)
            fcntl.flock(lock, fcntl.LOCK_EX)  # returns when no other supervisor is active
            active = True
            if not self.take_over():
                return
            logger.info("supervising the processes of %s", self.layout.cluster_file)
            while not stopping and self.step():
                time.sleep(TICK)
        logger.info("stopped; the processes keep running")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sfc_k8s.local.supervisor",
        description="Run and restart the processes recorded in STATE_DIR/cluster.json.",
    )
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    Supervisor(Layout(args.state_dir)).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
