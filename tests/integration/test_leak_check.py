"""The session-end leak check of ``tests/conftest.py``, run on a small inner test session.

Covers: a local cluster started beside the session (names of a state directory outside the
session's temporary directories, as ``make demo`` or ``local up`` make) and another session's
``sfct-`` names are not blamed; a namespace a test made with the janitor and never removed, and
one of a local cluster under the test's ``tmp_path``, fail the run and are named, also while
another test session runs (this one). (The session's check also names the local clusters' bpffs
folder when a test leaves it behind empty.)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sfc_k8s.local.layout import BPFFS_BASE, Layout
from tests.nettools import Janitor, run, unique

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]

INNER = """
import os, subprocess, time
from pathlib import Path
from sfc_k8s.local.layout import Layout
from tests.nettools import Janitor

FLAGS = Path(os.environ["LEAK_FLAGS"])

def test_inner(tmp_path):
    mode = os.environ["LEAK_MODE"]
    if mode == "janitor":
        (FLAGS / "made").write_text(Janitor().netns("sfct-leak"))  # never closed
    elif mode == "cluster":
        name = Layout(tmp_path / "state").node_netns("node-1")
        subprocess.run(["ip", "netns", "add", name], check=True)
        (FLAGS / "made").write_text(name)
    else:  # something else makes names while this session runs
        (FLAGS / "started").touch()
        deadline = time.monotonic() + 60
        while not (FLAGS / "created").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
"""


def _start_inner(tmp_path: Path, mode: str) -> subprocess.Popen[str]:
    (tmp_path / "test_inner.py").write_text(INNER)
    (tmp_path / "flags").mkdir()
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
            "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "inner"),
            str(tmp_path / "test_inner.py")]  # fmt: skip
    env = {**os.environ, "LEAK_MODE": mode, "LEAK_FLAGS": str(tmp_path / "flags")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the inner session ended"
        time.sleep(0.05)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: a local cluster started meanwhile uses it
        folder.rmdir()


def test_names_made_beside_the_session_are_not_blamed(tmp_path: Path, janitor: Janitor) -> None:
    inner = _start_inner(tmp_path, "external")
    janitor.add(inner.kill)
    _wait_for(tmp_path / "flags" / "started", inner)
    # A local cluster whose state directory is not the session's (as `make demo` starts one).
    demo = Layout(tmp_path / "demo-state").node_netns("node-1")
    run("ip", "netns", "add", demo)
    janitor.add(lambda: run("ip", "netns", "del", demo, check=False))
    base = Path(BPFFS_BASE)
    if not base.exists():  # made here: removed here too, unless a cluster uses it by then
        janitor.add(lambda: _remove_if_empty(base))
    pin = base / demo
    pin.mkdir(parents=True)
    janitor.add(pin.rmdir)
    # And a name like the tests' own that another test session made.
    other = unique("sfct-other", length=24)
    run("ip", "netns", "add", other)
    janitor.add(lambda: run("ip", "netns", "del", other, check=False))
    (tmp_path / "flags" / "created").touch()
    out, _ = inner.communicate(timeout=120)
    assert inner.returncode == 0, out
    assert "left these behind" not in out


@pytest.mark.parametrize("mode", ["janitor", "cluster"])
def test_a_tests_own_leak_fails_the_run(tmp_path: Path, janitor: Janitor, mode: str) -> None:
    inner = _start_inner(tmp_path, mode)
    janitor.add(inner.kill)
    out, _ = inner.communicate(timeout=120)
    made = tmp_path / "flags" / "made"
    if made.exists():
        name = made.read_text()
        janitor.add(lambda: run("ip", "netns", "del", name, check=False))
    assert made.exists(), out
    assert inner.returncode == 1, out
    assert "tests left these behind" in out and f"netns {name}, from " in out, out
