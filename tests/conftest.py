"""Fixtures shared by every test tier."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest

from sfc_k8s.local.layout import BPFFS_BASE, NETNS_PREFIX, Layout
from tests.nettools import CREATED, Janitor

pytest_plugins = ["tests.fixtures.apiserver", "tests.fixtures.cni"]

# Property tests check results, not speed: hypothesis' default 200 ms deadline per example turns a
# busy machine into a failure. Timings belong to bench/.
hypothesis.settings.register_profile("sfc-k8s", deadline=None)
hypothesis.settings.load_profile("sfc-k8s")


@pytest.fixture
def janitor() -> Iterator[Janitor]:
    """Creates namespaces/veths/pins for a test and removes them afterwards, pass or fail."""
    j = Janitor()
    try:
        yield j
    finally:
        j.close()


# ----- leak check ------------------------------------------------------------------------------
# A test (or fixture) that leaves a child process running, or a network namespace or bpffs pin
# this session made, fails the run at its end, naming the test during which each leak appeared.
# Pytest's own threads are not processes; processes and names that existed before the session
# are not counted. A name is this session's (``ours``) when
# - a helper of the tests made it and put it on record (``nettools.CREATED``: every janitor
#   namespace and private bpffs root);
# - it belongs to a local cluster whose state directory is under this session's temporary
#   directories (its names carry the hash of that directory: ``Layout.cluster_id``);
# - it is named like the tests' own (sfct-) and no other test session ran at the same time.
# So a concurrent ``make demo`` or ``local up`` (state elsewhere), or another checkout's test
# session, is never blamed, while a test's own leak fails the run even beside them.

LEAK_PREFIXES = ("sfct", "sfcl-")  # sfct: every janitor name (sfct-, sfcta-, ...)
_SESSIONS_DIR = Path("/tmp/sfc-k8s-test-sessions")
_seen: dict[str, str] = {}  # pid or name -> node id of the test during which it appeared


def _children(pid: int) -> set[int]:
    """Live (not zombie) descendants of `pid`."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        try:  # a process that exits while it is looked at has no /proc entry left
            tasks = list(Path(f"/proc/{todo.pop()}/task").glob("*/children"))
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError):
                for child in map(int, task.read_text().split()):
                    if child not in found:
                        found.add(child)
                        todo.append(child)
    return {p for p in found if _state(p) not in ("Z", "")}


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    return "?"


def _names() -> set[str]:
    names: set[str] = set()
    for folder, prefix in (
        (Path("/run/netns"), "netns "),
        (Path("/sys/fs/bpf"), "pin /sys/fs/bpf/"),
        (Path("/sys/fs/bpf/sfc-k8s-local"), "pin /sys/fs/bpf/sfc-k8s-local/"),
    ):
        with contextlib.suppress(OSError):
            names.update(
                f"{prefix}{p.name}" for p in folder.iterdir() if p.name.startswith(LEAK_PREFIXES)
            )
    with contextlib.suppress(OSError):  # the local clusters' bpffs folder, left empty
        if not any(Path(BPFFS_BASE).iterdir()):
            names.add(f"empty folder {BPFFS_BASE}")
    return names


def _other_sessions() -> set[int]:
    alive = set()
    for entry in _SESSIONS_DIR.glob("*"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            if Path(f"/proc/{entry.name}").exists():
                alive.add(int(entry.name))
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
    return alive


def _cluster_ids(base: Path) -> set[str]:
    """Cluster ids of every local cluster whose state directory is (or was) under ``base``:
    each directory there and its ``state`` child (``local down`` removes the latter)."""
    ids: set[str] = set()
    for folder, _, _ in os.walk(base):
        for candidate in (Path(folder), Path(folder) / "state"):
            ids.add(Layout(candidate).cluster_id)
    return ids


def ours(name: str, *, created: set[str], cluster_ids: set[str], overlapped: bool) -> bool:
    """Whether a namespace or pin that appeared during the session is the session's own."""
    if name in created:
        return True
    leaf = name.rsplit("/", 1)[-1].removeprefix("netns ")
    if leaf.startswith(NETNS_PREFIX):
        return leaf.removeprefix(NETNS_PREFIX).split("-", 1)[0] in cluster_ids
    return not overlapped


def _note(nodeid: str) -> None:
    for pid in _children(os.getpid()):
        _seen.setdefault(str(pid), nodeid)
    for name in _names():
        _seen.setdefault(name, nodeid)


@pytest.hookimpl(trylast=True)
def pytest_runtest_logfinish(nodeid: str) -> None:
    _note(nodeid)


@pytest.fixture(scope="session", autouse=True)
def _no_leaks(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Fail the run if a test left a child process, or a netns or bpffs pin of this session."""
    _SESSIONS_DIR.mkdir(exist_ok=True)
    marker = _SESSIONS_DIR / str(os.getpid())
    marker.touch()
    before_pids, before_names = _children(os.getpid()), _names()
    overlapped = bool(_other_sessions())
    try:
        yield
    finally:
        overlapped = overlapped or bool(_other_sessions())
        marker.unlink(missing_ok=True)
    last = request.node.items[-1].nodeid if request.node.items else "?"
    deadline = time.monotonic() + 3.0  # a process being stopped may take a moment to exit
    cluster_ids = _cluster_ids(tmp_path_factory.getbasetemp())
    while True:
        pids = _children(os.getpid()) - before_pids
        names = {
            n
            for n in _names() - before_names
            if ours(n, created=CREATED, cluster_ids=cluster_ids, overlapped=overlapped)
        }
        if not (pids or names) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    leaks = [f"process {p} ({_cmdline(p)}), from {_seen.get(str(p), last)}" for p in sorted(pids)]
    leaks += [f"{n}, from {_seen.get(n, last)}" for n in sorted(names)]
    if leaks:
        pytest.fail("tests left these behind:\n  " + "\n  ".join(leaks), pytrace=False)
