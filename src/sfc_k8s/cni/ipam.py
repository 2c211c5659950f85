"""Run the IPAM plugin named in the config's ``ipam`` section, as libcni runs delegates.

``plugin`` calls ``run_ipam`` for CHECK and GC, and ``start`` for ADD and DEL, so that the
delegate runs while the plugin creates or deletes the veth (``Delegate.finish`` then collects its
result; ``abandon`` waits for it during a rollback). The delegate is found in ``CNI_PATH``,
gets this process's environment (or the mapping the caller passes, as GC does for each stale
attachment) with ``CNI_COMMAND`` set, and the network config on stdin; its stdout is its result
or its error object. ``os.posix_spawn`` instead of ``subprocess``: the latter costs ~20 ms to
import on a slow node.
"""

from __future__ import annotations

import os

from sfc_k8s.cni.errors import CniError, Code, invalid
from sfc_k8s.coldstart import json_dumps, json_loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# The delegate speaks at most 1.0.0 in Debian 12's containernetworking-plugins; the 1.1.0 result
# is a superset of 1.0.0 for IPs, routes and DNS, so a 1.1.0 config is handed over as 1.0.0.
IPAM_MAX_VERSION = "1.0.0"


def find_plugin(kind: str, path: Sequence[str]) -> str:
    """The executable called ``kind`` in the first ``CNI_PATH`` directory that has one."""
    for directory in path:
        candidate = os.path.join(directory, kind)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    raise invalid("ipam.type", kind, f"an IPAM plugin installed in CNI_PATH ({':'.join(path)})")


def delegate_config(raw: dict[str, object], text: str, version: str) -> str:
    """The config to hand to the delegate: unchanged, unless it is newer than the delegate."""
    if version != "1.1.0":
        return text
    return json_dumps({**raw, "cniVersion": IPAM_MAX_VERSION})


class Delegate:
    """An IPAM plugin started with ``start``: it runs while the caller does other work.

    ``finish`` waits for it and returns its result (or raises its error); ``abandon`` waits for it
    and ignores the outcome (rollback, before releasing what it may have leased).
    """

    def __init__(self, command: str, kind: str, pid: int, out_fd: int) -> None:
        self.command = command
        self.kind = kind
        self._pid = pid
        self._out_fd = out_fd
        self._done = False

    def _wait(self) -> tuple[int, str]:
        self._done = True
        with open(self._out_fd, "rb", closefd=True) as out:
            output = out.read().decode(errors="replace")
        _, status = os.waitpid(self._pid, 0)
        return os.waitstatus_to_exitcode(status), output

    def finish(self, *, parse: bool = True) -> dict[str, object] | None:
        """Wait for the delegate; its parsed result (None if ``parse`` is false)."""
        code, output = self._wait()
        if code != 0:
            raise _delegate_error(self.kind, self.command, code, output)
        if not parse:
            return None
        try:
            result = json_loads(output) if output.strip() else {}
        except ValueError as err:
            raise CniError(
                Code.IPAM_FAILURE,
                f"IPAM plugin {self.kind!r} printed an invalid {self.command} result: {err}",
                output[:500],
            ) from err
        if not isinstance(result, dict):
            raise CniError(
                Code.IPAM_FAILURE, f"IPAM plugin {self.kind!r} printed a non-object result"
            )
        return result

    def abandon(self) -> None:
        if not self._done:
            self._wait()


def start(
    command: str,
    kind: str,
    path: Sequence[str],
    stdin: str,
    *,
    environ: Mapping[str, str] | None = None,
) -> Delegate:
    """Start IPAM plugin ``kind`` with ``CNI_COMMAND=command`` and ``stdin``; do not wait.

    The delegate gets ``environ`` (this process's environment by default) with ``CNI_COMMAND``
    set, as libcni hands a delegate the runtime's ``CNI_*`` variables.
    """
    binary = find_plugin(kind, path)
    env = dict(os.environ if environ is None else environ)
    env["CNI_COMMAND"] = command
    in_r, in_w = os.pipe()  # both ends close-on-exec: the delegate only gets them as 0 and 1
    out_r, out_w = os.pipe()
    try:
        pid = os.posix_spawn(
            binary,
            [binary],
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, in_r, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
            ],
        )
    except OSError as err:
        for fd in (in_r, in_w, out_r, out_w):
            os.close(fd)
        raise CniError(
            Code.IO_FAILURE, f"failed to run IPAM plugin {binary!r}: {err}", str(err)
        ) from err
    os.close(in_r)
    os.close(out_w)
    try:
        # A config is far smaller than a pipe's buffer, and delegates read all of stdin before
        # writing anything, so this neither blocks for long nor deadlocks.
        data = stdin.encode()
        while data:
            data = data[os.write(in_w, data) :]
    except BrokenPipeError:
        pass  # the delegate exited early; its output says why
    finally:
        os.close(in_w)
    return Delegate(command, kind, pid, out_r)


def run_ipam(
    command: str,
    kind: str,
    path: Sequence[str],
    stdin: str,
    *,
    parse: bool = True,
    environ: Mapping[str, str] | None = None,
) -> dict[str, object] | None:
    """Run IPAM plugin ``kind`` with ``CNI_COMMAND=command``; return its result (ADD) or None.

    A failing delegate's error object is passed on with its own code (as libcni does), the
    message prefixed with the delegate's name.
    """
    return start(command, kind, path, stdin, environ=environ).finish(parse=parse)


def _delegate_error(kind: str, command: str, exit_code: int, output: str) -> CniError:
    try:
        body = json_loads(output)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), int):
        msg = str(body.get("msg", ""))
        details = str(body.get("details", ""))
        return CniError(int(body["code"]), f"IPAM plugin {kind!r} {command} failed: {msg}", details)
    return CniError(
        Code.IPAM_FAILURE,
        f"IPAM plugin {kind!r} {command} failed with exit code {exit_code}",
        output[:500],
    )
