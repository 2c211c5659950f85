"""The session-end leak check of ``tests/conftest.py``, run on a small inner test session.

Covers, in one inner session: a local cluster started beside the session (names of a state
directory outside the session's temporary directories, as ``make demo`` or ``local up`` make)
and another session's ``sfct-`` names are not blamed; a namespace a test made with the janitor
and never removed, and one of a local cluster under the test's ``tmp_path``, fail the run and
are named with the test each came from, also while another test session runs (this one).
(The session's check also names the local clusters' bpffs folder when a test leaves it empty.)
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

def test_janitor_leak():
    (FLAGS / "made-janitor").write_text(Janitor().netns("sfct-leak"))  # never closed

def test_cluster_leak(tmp_path):
    name = Layout(tmp_path / "state").node_netns("node-1")
    subprocess.run(["ip", "netns", "add", name], check=True)
    (FLAGS / "made-cluster").write_text(name)

def test_names_made_beside():  # something else makes names while this session runs
    (FLAGS / "started").touch()
    deadline = time.monotonic() + 60
    while not (FLAGS / "created").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
"""


def _start_inner(tmp_path: Path) -> subprocess.Popen[str]:
    (tmp_path / "test_inner.py").write_text(INNER)
    (tmp_path / "flags").mkdir()
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
            "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "inner"),
            str(tmp_path / "test_inner.py")]  # fmt: skip
    env = {**os.environ, "LEAK_FLAGS": str(tmp_path / "flags"), "PYTHONPATH": str(REPO)}
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


def test_own_leaks_fail_the_run_and_names_made_beside_it_are_not_blamed(
    tmp_path: Path, janitor: Janitor
) -> None:
    """One inner session (a session costs seconds to start and to check) whose tests leak a
    janitor namespace and a namespace of a local cluster under their ``tmp_path``, while this
    test makes names beside it: each leak is named, with the test it came from, and fails the
    run; none of the names made beside it is."""
    inner = _start_inner(tmp_path)
    janitor.add(inner.kill)
    flags = tmp_path / "flags"
    for mode in ("janitor", "cluster"):  # removed whatever happens
        made = flags / f"made-{mode}"
        janitor.add(
            lambda made=made: (
                made.exists() and run("ip", "netns", "del", made.read_text(), check=False)
            )
        )
    _wait_for(flags / "started", inner)
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
    (flags / "created").touch()
    out, _ = inner.communicate(timeout=120)
    assert (flags / "made-janitor").exists() and (flags / "made-cluster").exists(), out
    assert inner.returncode == 1, out
    assert "tests left these behind" in out, out
    for mode in ("janitor", "cluster"):
        name = (flags / f"made-{mode}").read_text()
        assert f"netns {name}, from test_inner.py::test_{mode}_leak" in out, out
    assert demo not in out and other not in out, out
