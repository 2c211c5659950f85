"""``sfc-k8s`` as a user runs it: a closed pipe and user errors end without a traceback.

Covers: output into a pipe whose reader is gone (``sfc-k8s ... | head``) ends quietly with
exit 1 and nothing on stderr, for the top-level usage and for ``local status``; each kind of
user error of ``sfc-k8s local`` (no cluster for status, exec, logs and node stop|start, bad
``up`` options, a missing command after ``--``) is one line on stderr (stdout for status)
that says what to do, and a non-zero exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _sfc_k8s(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sfc_k8s.cli", *args],
        stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
    )  # fmt: skip


def _into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """Run with stdout a pipe whose read end is closed before the command starts."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return _sfc_k8s(*args, stdout=write_end)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [("--help",), ("local", "status", "--state-dir", "/nonexistent")])
def test_a_closed_pipe_ends_quietly(args: tuple[str, ...]) -> None:
    proc = _into_closed_pipe(*args)
    assert proc.stderr == "" and proc.returncode == 1


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (("node", "stop", "node-1"), "start one with 'sfc-k8s local up'"),
        (("node", "start", "node-1"), "start one with 'sfc-k8s local up'"),
        (("exec", "client", "--", "true"), "start one with 'sfc-k8s local up'"),
        (("logs", "client"), "start one with 'sfc-k8s local up'"),
        (("up", "--nodes", "0"), "--nodes 0: expected a whole number from 1 to 200"),
        (("up", "--mtu", "10"), "--mtu 10: expected an MTU from 1280 to 9000 bytes"),
        (("up", "--pod-eviction-timeout", "0"), "--pod-eviction-timeout 0: expected seconds"),
        (("exec", "client"), "give the command after '--'"),
    ],
)
def test_user_errors_are_one_line_saying_what_to_do(
    tmp_path: Path, args: tuple[str, ...], hint: str
) -> None:
    state = ["--state-dir", str(tmp_path / "state")]
    if "--" in args:
        split = args.index("--")
        full = [*args[:split], *state, *args[split:]]
    else:
        full = [*args, *state]
    proc = _sfc_k8s("local", *full)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and hint in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_status_without_a_cluster_says_how_to_start_one(tmp_path: Path) -> None:
    proc = _sfc_k8s("local", "status", "--state-dir", str(tmp_path))
    assert proc.returncode == 1 and proc.stderr == ""
    assert proc.stdout == f"no local cluster in {tmp_path}: start one with 'sfc-k8s local up'\n"
