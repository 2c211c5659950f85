"""Start one container process of a local pod: its own mount namespace, its volumes, its netns.

Run by the pod worker (``pod.py``) as the command ``command_line`` builds, in place of ``ip netns
exec``, for every container and exec probe. It imports little (``os``, ``stat``, ``ctypes``: no
site-packages, no ``json`` or ``re``), as every container start pays for its imports, and, in
order:

1. opens the network namespace, ``unshare(CLONE_NEWNS)`` and makes every mount a slave of the
   host's (as ``ip netns exec`` does), so nothing it mounts reaches the host, everything it
   mounted goes when the container's last process exits, and what the host mounts later still
   shows inside (``mountPropagation: HostToContainer``: a pod's namespace bind-mounted under
   ``/run/netns`` after the agent started); then opens every volume's source (``O_PATH``);
3. enters the pod's network namespace and mounts a sysfs of that namespace over ``/sys`` (as
   ``ip netns exec`` does: the process sees its own interfaces there; the host's stays
   covered, so a volume from the host's bpffs can still be mounted);
4. bind-mounts each source at its ``mountPath`` (read-only if asked). A mount path that does
   not exist on the host is made inside a tmpfs laid over its nearest existing parent, which
   keeps the parent's entries visible by bind-mounting each one back: the host's tree is
   never written. For a path right under ``/`` that tmpfs becomes the new ``/`` (built in
   the pod's empty ``rootStaging`` directory, moved onto ``/``, entered by ``chroot``);
5. ``chdir`` and ``execvp`` of the container's command, with the environment it was given.

Its arguments: ``NETNS STAGING STATUS_FD CWD N`` then N triples ``SOURCE TARGET ro|rw`` then the
command (``-`` for no netns, staging directory or status descriptor). ``STATUS_FD``, the write
end of a pipe from the pod worker, is closed by the ``exec`` (close-on-exec): the worker knows
the container runs in its namespaces once it reads end-of-file, as a container runtime returns
from its start call. A failure is one line written there (and on stderr), naming the mount or
command, and exit status 126; the pod worker reports it as the container's error.
"""

import ctypes
import os
import stat
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SLAVE = 0x80000
LAUNCH_FAILED = 126

_libc = ctypes.CDLL(None, use_errno=True)


class LaunchError(Exception):
    """The container could not be set up; the message names what failed."""


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise LaunchError(f"{what}: [Errno {code}] {os.strerror(code)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, what: str) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            None,
        ),
        what,
    )


def _bind(fd_path: str, target: str, *, read_only: bool, what: str) -> None:
    mount(fd_path, target, None, MS_BIND | MS_REC, what)
    if read_only:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY, f"{what} (read-only)")


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return os.path.realpath(path)


# Devices of the tmpfs this launcher laid over directories: writing in them stays private.
_OUR_TMPFS: set[int] = set()


def _mirror_entry(entry: os.DirEntry[str], dir_fd: int, copy_path: str) -> None:
    """Recreate ``entry`` of the shadowed directory (open as ``dir_fd``) at ``copy_path``."""
    if entry.is_symlink():
        os.symlink(os.readlink(entry.name, dir_fd=dir_fd), copy_path)
        return
    if entry.is_dir(follow_symlinks=False):
        os.mkdir(copy_path)
    else:
        with open(copy_path, "w"):
            pass
    original = f"/proc/self/fd/{dir_fd}/{entry.name}"
    mount(original, copy_path, None, MS_BIND | MS_REC, f"keeping {copy_path}")


def _shadow_root(staging: str) -> None:
    """Make ``/`` a tmpfs showing the same entries: built at ``staging`` (an empty directory
    of the pod's), moved onto ``/``, entered with ``chroot``."""
    mount("tmpfs", staging, "tmpfs", 0, "tmpfs for a new /")
    os.chmod(staging, 0o755)
    dir_fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                _mirror_entry(entry, dir_fd, os.path.join(staging, entry.name))
    finally:
        os.close(dir_fd)
    os.chdir(staging)
    mount(staging, "/", None, MS_MOVE, "moving the new / in place")
    os.chroot(".")
    os.chdir("/")
    _OUR_TMPFS.add(os.stat("/").st_dev)


def _shadow(parent: str, root_staging: str | None) -> None:
    """Lay a tmpfs over ``parent`` that shows the same entries (each bind-mounted back from
    the covered directory, reached through a descriptor opened before), so that new mount
    points can be made in it without writing to the host."""
    if parent == "/":
        if root_staging is None:
            raise LaunchError("a new mount point directly under / needs a staging directory")
        _shadow_root(root_staging)
        return
    dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        mode = stat.S_IMODE(os.fstat(dir_fd).st_mode)
        mount("tmpfs", parent, "tmpfs", 0, f"tmpfs over {parent}")
        os.chmod(parent, mode)
        _OUR_TMPFS.add(os.stat(parent).st_dev)
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                _mirror_entry(entry, dir_fd, os.path.join(parent, entry.name))
    finally:
        os.close(dir_fd)


def ensure_mount_point(target: str, *, is_dir: bool, root_staging: str | None = None) -> None:
    """Make ``target`` exist, shadowing its nearest existing parent unless that is already in
    a tmpfs of ours."""
    if os.path.lexists(target):
        return
    parent = _nearest_existing(os.path.dirname(target))
    if os.stat(parent).st_dev not in _OUR_TMPFS:
        _shadow(parent, root_staging)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if is_dir:
        os.mkdir(target)
    else:
        with open(target, "w"):
            pass


class Mount:
    """One bind mount: ``source`` on the host at ``target`` in the container."""

    def __init__(self, source: str, target: str, read_only: bool = False) -> None:
        self.source, self.target, self.read_only = source, target, read_only


class Spec:
    """What to start (see the module docstring for its command-line form). Plain classes,
    not dataclasses: ``dataclasses`` imports ``inspect`` and ``re``, tens of milliseconds."""

    def __init__(
        self,
        argv: list[str],
        *,
        netns: str | None = None,
        mounts: list[Mount] | None = None,
        cwd: str = "/",
        status_fd: int | None = None,
        root_staging: str | None = None,
    ) -> None:
        self.argv, self.netns, self.mounts, self.cwd = argv, netns, mounts or [], cwd
        self.status_fd, self.root_staging = status_fd, root_staging


def command_line(python: str, spec: Spec) -> list[str]:
    """The command that starts ``spec`` through this launcher."""
    mounts = spec.mounts or []
    line = [python, "-I", "-S", os.path.abspath(__file__), spec.netns or "-"]
    line += [spec.root_staging or "-", "-" if spec.status_fd is None else str(spec.status_fd)]
    line += [spec.cwd, str(len(mounts))]
    for m in mounts:
        line += [m.source, m.target, "ro" if m.read_only else "rw"]
    return [*line, *spec.argv]


def parse(args: list[str]) -> Spec:
    netns, staging, status_fd, cwd, count = args[:5]
    rest = args[5:]
    mounts = [Mount(rest[i], rest[i + 1], rest[i + 2] == "ro") for i in range(0, 3 * int(count), 3)]
    return Spec(
        argv=rest[3 * int(count) :],
        netns=None if netns == "-" else netns,
        mounts=mounts,
        cwd=cwd,
        status_fd=None if status_fd == "-" else int(status_fd),
        root_staging=None if staging == "-" else staging,
    )


def run(spec: Spec) -> None:
    mounts = spec.mounts or []
    netns_fd = os.open(spec.netns, os.O_RDONLY | os.O_CLOEXEC) if spec.netns else None
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    mount(None, "/", None, MS_REC | MS_SLAVE, "making / a slave of the host's mounts")
    # Opened in the new namespace (a bind mount's source must be one of its mounts), before
    # the namespace's sysfs covers the host's /sys (and the bpffs below it).
    sources = [os.open(m.source, os.O_PATH | os.O_CLOEXEC) for m in mounts]
    if netns_fd is not None:
        _check(_libc.setns(netns_fd, CLONE_NEWNET), f"entering {spec.netns}")
        mount("sysfs", "/sys", "sysfs", 0, "mounting the namespace's /sys")
    for m, fd in zip(mounts, sources, strict=True):
        what = f"mounting {m.source} at {m.target}"
        try:
            is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
            ensure_mount_point(m.target, is_dir=is_dir, root_staging=spec.root_staging)
        except OSError as err:
            raise LaunchError(f"{what}: {err}") from err
        _bind(f"/proc/self/fd/{fd}", m.target, read_only=m.read_only, what=what)
        os.close(fd)
    try:
        os.chdir(spec.cwd)
    except OSError as err:
        raise LaunchError(f"workingDir {spec.cwd!r}: {err.strerror}") from err
    try:
        os.execvp(spec.argv[0], spec.argv)
    except OSError as err:
        raise LaunchError(f"exec {spec.argv[0]!r}: {err.strerror}") from err


def main() -> None:
    spec = parse(sys.argv[1:])
    if spec.status_fd is not None:
        os.set_inheritable(spec.status_fd, False)  # closed by a successful exec
    try:
        run(spec)
    except (LaunchError, OSError) as err:
        message = f"cannot start the container: {err}"
        print(f"sfc-k8s local: {message}", file=sys.stderr)
        if spec.status_fd is not None:
            os.write(spec.status_fd, message.encode())
        sys.exit(LAUNCH_FAILED)


if __name__ == "__main__":
    main()
