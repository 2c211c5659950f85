"""The node agent's CNI server: runs the calls the compiled ``sfc-cni`` shim forwards.

The agent starts it as a child process (``sfc_k8s.operator.agent_cni``), ``python -m
sfc_k8s.cni.server --socket PATH --spool-dir DIR``; tests and the benchmark start it the same way.
It listens on a unix socket; each connection is taken by a **forked child** (``Workers``) that
reads the request (``sfc_k8s.cni.wire``), runs the plugin's own ``main`` with that request's
``CNI_*`` variables and stdin, sends back its exit code, stdout and stderr, and exits. Why a
child per call from this small, single-threaded process, rather than a thread of the agent:

- the plugin enters the pod's network namespace (``setns`` acts on the calling thread) and keeps
  per-call state in module globals (its log context) and in ``os.environ`` (its IPAM delegate
  inherits the call's ``CNI_*`` variables): a child may do all that and simply exits, so no call
  can disturb another or the server;
- the server imports the plugin once, so a child starts with everything loaded, and children are
  forked ahead of the calls (a fork costs 2-3 ms on a loaded 2-core machine, docs/cni.md), so a
  call pays neither a Python start-up nor a fork;
- the server never forks while other threads run (it has none), which is what makes forking a
  Python process safe; the agent itself (Kopf, asyncio, threads) is never forked.

DELs the shim spooled while no server answered are replayed at start, before the first
connection is served, and again whenever no call came for ``--rescan-seconds`` (a shim may have
spooled one while this server was starting). The server exits when its parent (the agent) goes
away, and its children with it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import io
import os
import select
import signal
import socket
import struct
import sys
import time

from sfc_k8s.cni import plugin, wire
from sfc_k8s.cni.errors import CniError, Code

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes
    from collections.abc import Callable

RESCAN_SECONDS = 10.0
SPARE_WORKERS = 2  # pre-forked workers waiting for a call (see Workers)
REQUEST_READ_TIMEOUT = 10.0  # the shim sends its whole request at once
RETRY_CODES = (Code.TRY_AGAIN_LATER,)  # a replayed DEL failing so stays spooled
# What the plugin imports lazily on its ADD/DEL/CHECK paths: loaded once by the server, so that a
# forked child starts with the whole plugin at hand.
PRELOADED = ("config", "ipam", "netlink", "netns", "result")


class ServerError(Exception):
    """The server cannot start (the message says what to fix)."""


class _StopError(Exception):
    """SIGTERM or SIGINT arrived: leave the loop (raised from the handler, to end a select)."""


def log(msg: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    # fd 2 itself: a call's child points sys.stderr at a buffer for the plugin's own lines.
    os.write(2, f"{stamp}Z sfc-cni-server[{os.getpid()}]: {msg}\n".encode())


# -- one call (in a forked child) ---------------------------------------------------------------


def run_call(request: wire.Request) -> tuple[int, bytes, bytes]:
    """Run the plugin on ``request`` in this (throwaway) process: (exit code, stdout, stderr)."""
    for name in wire.FORWARDED_ENV:
        os.environ.pop(name, None)
    os.environ.update(request.env)
    out, err = io.StringIO(), io.StringIO()
    sys.stdin = io.TextIOWrapper(io.BytesIO(request.stdin))
    sys.stdout, sys.stderr = out, err
    try:
        code = plugin.main(["sfc-cni"])
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    return code, out.getvalue().encode(), err.getvalue().encode()


def _error_reply(error: CniError) -> bytes:
    from sfc_k8s.coldstart import json_dumps

    body = json_dumps(error.to_dict(plugin.LATEST_VERSION)) + "\n"
    return wire.encode_reply(1, body.encode(), f"sfc-cni-server: {error.msg}\n".encode())


def _receive(conn: socket.socket) -> bytes:
    """The whole request (the shim shuts its side down after it); bounded in size and time."""
    conn.settimeout(REQUEST_READ_TIMEOUT)
    chunks: list[bytes] = []
    size = 0
    while size <= wire.MAX_REQUEST:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _describe(request: wire.Request) -> str:
    env = request.env
    container = env.get("CNI_CONTAINERID", "")[:12]
    return f"{env.get('CNI_COMMAND', '?')} container={container} if={env.get('CNI_IFNAME', '')}"


def serve_connection(conn: socket.socket) -> None:
    """Read one request from ``conn``, run it, send the reply (in the forked child)."""
    started = time.monotonic()
    try:
        data = _receive(conn)
        if not data:
            return  # a liveness probe: connected, sent nothing, left
        request = wire.decode_request(data)
    except (wire.WireError, OSError) as err:
        what = f"malformed request from the shim: {err}"
        log(what)
        conn.sendall(_error_reply(CniError(Code.INVALID_ENVIRONMENT, what)))
        return
    code, out, err_text = run_call(request)
    took = (time.monotonic() - started) * 1e3
    log(f"{_describe(request)} -> exit {code} in {took:.1f} ms, cpu {_cpu_ms():.1f} ms")
    conn.sendall(wire.encode_reply(code, out, err_text))


def _cpu_ms() -> float:
    """CPU time of this forked child so far (a child's counters start at zero) and its IPAM
    delegate: what the call cost, fork included, for the log and bench/cni.py."""
    import resource

    used = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        used += usage.ru_utime + usage.ru_stime
    return used * 1e3


def _child(work: Callable[..., int | None], *args: object) -> int:
    """Run ``work(*args)`` in a forked child and leave it with ``os._exit``; returns the pid."""
    pid = os.fork()
    if pid:
        return pid
    status: int | None = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        gc.disable()
        status = work(*args)
    except BaseException as err:  # a child must never return into the server's loop
        log(f"call failed: {err!r}")
    finally:
        os._exit(status or 0)


# -- spooled DELs -------------------------------------------------------------------------------


def spooled(spool_dir: str) -> list[str]:
    """The spooled DELs, oldest first (their names start with the time they were written)."""
    try:
        names = os.listdir(spool_dir)
    except FileNotFoundError:
        return []
    return sorted(
        os.path.join(spool_dir, n)
        for n in names
        if n.startswith(wire.SPOOL_PREFIX) and n.endswith(wire.SPOOL_SUFFIX)
    )


def _replay_one(path: str) -> int:
    """Child: run the DEL spooled at ``path``; exit status 0 when it may be removed, 2 to keep."""
    with open(path, "rb") as spool_file:
        data = spool_file.read(wire.MAX_REQUEST + 1)
    try:
        request = wire.decode_request(data)
    except wire.WireError as err:
        log(f"dropping unreadable spooled DEL {path}: {err}")
        return 0
    code, out, _ = run_call(request)
    if code == 0:
        log(f"replayed spooled {_describe(request)}")
        return 0
    text = out.decode(errors="replace").strip()
    from sfc_k8s.coldstart import json_loads

    try:
        body = json_loads(text)
    except ValueError:
        body = None
    keep = isinstance(body, dict) and body.get("code") in RETRY_CODES
    log(f"spooled {_describe(request)} failed ({'kept' if keep else 'dropped'}): {text}")
    return 2 if keep else 0


def replay_spool(spool_dir: str) -> int:
    """Replay every spooled DEL, one at a time, each in a child; returns how many were done."""
    done = 0
    for path in spooled(spool_dir):
        _, status = os.waitpid(_child(_replay_one, path), 0)
        if os.waitstatus_to_exitcode(status) == 0:
            os.unlink(path)
            done += 1
    return done


# -- the listening loop -------------------------------------------------------------------------


def listen(path: str) -> socket.socket:
    """Bind the socket at ``path`` (root only), replacing a stale one but not a live server's."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody answers: left behind by a server that died
        else:
            raise ServerError(f"another CNI server already listens at {path}")
        finally:
            probe.close()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(path)
        os.chmod(path, 0o600)
        server.listen(128)
    except OSError as err:
        server.close()
        raise ServerError(f"cannot listen at {path}: {err}") from err
    return server


class Workers:
    """Pre-forked children, each waiting in ``accept`` to serve one call, then exiting.

    A worker tells the server when it has accepted (its pid down a pipe) and the server forks a
    replacement at once, so a call never waits for a fork: ``SPARE_WORKERS`` wait at any time.
    Each worker dies with the server (``PR_SET_PDEATHSIG``): none is left accepting on a socket
    that a restarted server must take over.
    """

    def __init__(self, server: socket.socket) -> None:
        self.server = server
        self.idle: set[int] = set()
        self.taken_r, self.taken_w = os.pipe()
        self.pid = os.getpid()

    def fill(self) -> None:
        while len(self.idle) < SPARE_WORKERS:
            self.idle.add(_child(self._work))

    def _work(self) -> int:
        _die_with_parent(self.pid)
        os.close(self.taken_r)
        conn, _ = self.server.accept()
        os.write(self.taken_w, struct.pack("=i", os.getpid()))
        with conn:
            serve_connection(conn)
        return 0

    def taken(self) -> None:
        """Forget the workers that took a call (they exit once done)."""
        for (pid,) in struct.iter_unpack("=i", os.read(self.taken_r, 4096)):
            self.idle.discard(pid)

    def reap(self) -> None:
        """Collect exited workers; one that died waiting is replaced by the next ``fill``."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.idle.discard(pid)

    def stop(self) -> None:
        for pid in self.idle:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self.idle.clear()
        os.close(self.taken_r)
        os.close(self.taken_w)


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when ``parent`` exits (``prctl(PR_SET_PDEATHSIG)``)."""
    import ctypes  # imported by the server already (``serve``): a child pays nothing for it

    pr_set_pdeathsig = 1
    if _libc().prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent was gone before the call took effect
        os._exit(1)


@functools.cache
def _libc() -> ctypes.CDLL:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def serve(
    path: str, spool_dir: str, *, parent: int | None = None, rescan: float = RESCAN_SECONDS
) -> None:
    """Listen at ``path``, replay ``spool_dir``, then serve until SIGTERM or ``parent`` exits."""
    import importlib

    for name in PRELOADED:
        importlib.import_module(f"sfc_k8s.cni.{name}")
    import resource  # noqa: F401  (the children's _cpu_ms)

    import sfc_k8s.naming  # noqa: F401

    _libc()  # ctypes costs ~5 ms of CPU to import: once here, not in every child
    # Children are short-lived: no collection in them, and none of the server's objects in the
    # collector's generations, so that a child touches (copies) fewer of the server's pages.
    gc.collect()
    gc.freeze()
    server = listen(path)

    def on_term(*_: object) -> None:
        raise _StopError

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    workers = Workers(server)
    try:
        log(f"listening at {path}; spool {spool_dir}")
        # Bound first, so shims queue in the backlog instead of spooling while the spool replays.
        replayed = replay_spool(spool_dir)
        if replayed:
            log(f"replayed {replayed} spooled DEL(s)")
        while parent is None or os.getppid() == parent:
            workers.fill()
            ready, _, _ = select.select([workers.taken_r], [], [], rescan)
            if ready:
                workers.taken()
            workers.reap()
            if not ready:
                replay_spool(spool_dir)
    except _StopError:
        pass
    finally:
        workers.stop()
        server.close()
        if os.path.exists(path):
            os.unlink(path)
        log("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sfc_k8s.cni.server",
        description="Serve the calls of the sfc-cni shim (started by the node agent).",
    )
    parser.add_argument("--socket", default=wire.DEFAULT_SOCKET)
    parser.add_argument("--spool-dir", default=wire.DEFAULT_SPOOL_DIR)
    parser.add_argument(
        "--parent", type=int, default=None, help="exit when this process is no longer the parent"
    )
    parser.add_argument(
        "--rescan-seconds",
        type=float,
        default=RESCAN_SECONDS,
        help=f"replay the spool again after this long without a call ({RESCAN_SECONDS:g})",
    )
    args = parser.parse_args(argv)
    try:
        serve(args.socket, args.spool_dir, parent=args.parent, rescan=args.rescan_seconds)
    except ServerError as err:
        log(str(err))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
