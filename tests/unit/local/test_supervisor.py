"""The local cluster's supervisor, on real child processes in a temporary state directory.

Covers: the back-off sequence (0.2 s doubling to the cap) and how exits are named; a process
asked for with pid 0 is started (no restart counted); a process killed with SIGKILL is found
dead, its exit recorded (``killed by SIGKILL``), and started again only once its back-off has
passed, with ``restarts`` counted; exits after short runs double the back-off, a long run
resets it; a process that is not the supervisor's child gets an exit of unknown status, while a
child that died just after the step's reap still has its exit read; the processes of a node
stopped with ``local node stop`` and the supervisor's own record are left alone; the CLI's
record writes and the supervisor's never overwrite each other; a supervisor that gets the lock
records itself, asks for a standby, and, when it was the standby of one that died, counts a
restart; once ``local down`` marks the record stopping, nothing is started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sfc_k8s.local.layout import Layout, pid_alive, read_json
from sfc_k8s.local.processes import (
    STANDBY,
    SUPERVISOR,
    locked_record,
    process_entry,
    save_fields,
)
from sfc_k8s.local.supervisor import (
    FIRST_BACKOFF,
    MAX_BACKOFF,
    RESET_AFTER,
    UNKNOWN_EXIT,
    Supervisor,
    backoff,
    exit_reason,
)

SLEEP = ["/bin/sleep", "60"]


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "state")
    with locked_record(layout) as record:
        record["processes"] = {}
    return layout


@pytest.fixture
def sup(layout: Layout) -> Iterator[Supervisor]:
    """A supervisor whose children are killed and reaped after the test."""
    supervisor = Supervisor(layout)
    yield supervisor
    for proc in supervisor.children.values():
        proc.kill()
        proc.wait(5)


def _ask(layout: Layout, name: str, argv: list[str] = SLEEP) -> None:
    with locked_record(layout) as record:
        record["processes"][name] = process_entry(layout, name, argv, {})


def _info(layout: Layout, name: str) -> dict[str, Any]:
    info: dict[str, Any] = read_json(layout.cluster_file)["processes"][name]
    return info


def _kill(sup: Supervisor, layout: Layout, name: str) -> None:
    """SIGKILL the process and let it finish dying (the supervisor's next step reaps it)."""
    pid = int(_info(layout, name)["pid"])
    os.kill(pid, signal.SIGKILL)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


def test_backoff_doubles_from_a_fifth_of_a_second_to_the_cap() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4)] == [0.2, 0.4, 0.8, 1.6]
    assert backoff(1) == FIRST_BACKOFF
    assert backoff(20) == MAX_BACKOFF


def test_exit_reasons_name_the_code_or_the_signal() -> None:
    assert exit_reason(0) == "exit code 0"
    assert exit_reason(3) == "exit code 3"
    assert exit_reason(-9) == "killed by SIGKILL"
    assert exit_reason(-15) == "killed by SIGTERM"


def test_a_requested_process_is_started_without_counting_a_restart(
    sup: Supervisor, layout: Layout
) -> None:
    _ask(layout, "controller")
    sup.step()
    info = _info(layout, "controller")
    assert info["pid"] > 0 and pid_alive(info["pid"])
    assert info["restarts"] == 0 and "lastExit" not in info
    assert Path(info["log"]) == layout.log("controller")


def test_a_killed_process_is_restarted_after_its_backoff(sup: Supervisor, layout: Layout) -> None:
    _ask(layout, "controller")
    sup.step()
    first = _info(layout, "controller")["pid"]
    _kill(sup, layout, "controller")
    sup.step()  # found dead: recorded, waiting for its back-off
    info = _info(layout, "controller")
    assert info["lastExit"] == "killed by SIGKILL" and info["restarts"] == 0
    assert info["waitingUntil"] - info["lastExitAt"] == pytest.approx(FIRST_BACKOFF)
    assert not pid_alive(info["pid"])
    time.sleep(FIRST_BACKOFF)
    sup.step()
    info = _info(layout, "controller")
    assert info["restarts"] == 1 and info["pid"] != first and pid_alive(info["pid"])
    assert "waitingUntil" not in info


def test_quick_exits_double_the_backoff_and_a_long_run_resets_it(
    sup: Supervisor, layout: Layout
) -> None:
    _ask(layout, "apiserver", ["/bin/true"])
    now = time.time()
    waits = []
    for _ in range(4):
        sup.step()  # start (or restart once due)
        pid = _info(layout, "apiserver")["pid"]
        sup.children[pid].wait(5)
        sup.step()  # found dead
        info = _info(layout, "apiserver")
        assert info["lastExit"] == "exit code 0"
        waits.append(round(info["waitingUntil"] - info["lastExitAt"], 3))
        with locked_record(layout) as record:  # its back-off is over
            record["processes"]["apiserver"]["waitingUntil"] = now
    assert waits == [0.2, 0.4, 0.8, 1.6]
    sup.step()
    with locked_record(layout) as record:  # it has been running for longer than RESET_AFTER
        record["processes"]["apiserver"]["startedAt"] -= RESET_AFTER
    sup.children[_info(layout, "apiserver")["pid"]].wait(5)
    sup.step()
    info = _info(layout, "apiserver")
    assert info["quickExits"] == 1
    assert info["waitingUntil"] - info["lastExitAt"] == pytest.approx(FIRST_BACKOFF)


def test_a_process_it_did_not_start_has_an_exit_of_unknown_status(
    sup: Supervisor, layout: Layout
) -> None:
    proc = subprocess.Popen(SLEEP)
    _ask(layout, "controller")
    with locked_record(layout) as record:
        record["processes"]["controller"].update(pid=proc.pid, startedAt=time.time())
    proc.kill()
    proc.wait(5)
    sup.step()
    assert _info(layout, "controller")["lastExit"] == UNKNOWN_EXIT


def test_stopped_nodes_and_the_supervisor_itself_are_left_alone(
    sup: Supervisor, layout: Layout
) -> None:
    for name in ("node-runtime-node-2", "agent-node-2", "agent-node-1", SUPERVISOR):
        _ask(layout, name)
    with locked_record(layout) as record:
        record["stoppedNodes"] = ["node-2"]
    sup.step()
    procs = read_json(layout.cluster_file)["processes"]
    assert procs["agent-node-1"]["pid"] > 0
    for name in ("node-runtime-node-2", "agent-node-2", SUPERVISOR):
        assert procs[name]["pid"] == 0


def test_record_writes_keep_each_others_changes(sup: Supervisor, layout: Layout) -> None:
    """The CLI saves a field from a stale copy while the supervisor recorded a pid."""
    stale = read_json(layout.cluster_file)
    _ask(layout, "controller")
    sup.step()
    save_fields(layout, stale, complete=True)
    record = read_json(layout.cluster_file)
    assert record["complete"] is True and record["processes"]["controller"]["pid"] > 0


def test_the_first_supervisor_records_itself_and_asks_for_a_standby(
    sup: Supervisor, layout: Layout
) -> None:
    assert sup.take_over()
    procs = read_json(layout.cluster_file)["processes"]
    assert procs[SUPERVISOR]["pid"] == os.getpid() and procs[SUPERVISOR]["restarts"] == 0
    assert procs[STANDBY]["pid"] == 0 and procs[STANDBY]["argv"] == procs[SUPERVISOR]["argv"]
    sup.step()
    assert pid_alive(_info(layout, STANDBY)["pid"])


def test_the_standby_of_a_dead_supervisor_takes_over(sup: Supervisor, layout: Layout) -> None:
    dead = subprocess.Popen(SLEEP)
    dead.kill()
    dead.wait(5)
    for name, pid in ((SUPERVISOR, dead.pid), (STANDBY, os.getpid())):
        _ask(layout, name)
        with locked_record(layout) as record:
            record["processes"][name]["pid"] = pid
    assert sup.take_over()
    procs = read_json(layout.cluster_file)["processes"]
    assert procs[SUPERVISOR]["pid"] == os.getpid() and procs[SUPERVISOR]["restarts"] == 1
    assert procs[SUPERVISOR]["lastExit"] == UNKNOWN_EXIT
    assert procs[STANDBY]["pid"] == 0  # a new standby, started by the next step


def test_nothing_starts_once_the_cluster_is_stopping(sup: Supervisor, layout: Layout) -> None:
    _ask(layout, "controller")
    with locked_record(layout) as record:
        record["stopping"] = True
    assert not sup.take_over()
    assert not sup.step()
    assert _info(layout, "controller")["pid"] == 0


def test_a_child_that_dies_after_the_reap_still_has_its_exit_read(
    sup: Supervisor, layout: Layout
) -> None:
    """The process dies between the step's reap and its look at the record."""
    _ask(layout, "controller")
    sup.step()
    _kill(sup, layout, "controller")  # dead, not reaped
    with locked_record(layout) as record:
        sup.tend("controller", record["processes"]["controller"], time.time())
    assert _info(layout, "controller")["lastExit"] == "killed by SIGKILL"
