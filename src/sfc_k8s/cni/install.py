"""``sfc-k8s install-cni``: put the ``sfc-cni`` shim (and missing IPAM plugins) on a node.

The agent DaemonSet's init container runs it with the node's CNI bin directory mounted
(``deploy/base/agent.yaml``); people may run it by hand on a node. It copies from a source
directory, the image's ``/opt/sfc-k8s/cni`` (``SOURCE_DIR``: the shim built by the Dockerfile, and
the ``host-local`` and ``static`` IPAM plugins of Debian's containernetworking-plugins):

- ``sfc-cni`` always, unless the installed file is already identical;
- each IPAM plugin of ``IPAM_PLUGINS`` only when the node has none of that name (the node's own,
  from its distribution or another installer, is left alone).

Every copy is atomic, so a runtime that executes ``sfc-cni`` while a new version is installed
runs either the old file or the new one, never a half-written one: the bytes go to a temporary
file in the same directory named after the version, which is fsynced, made executable and
renamed over the old name (a rename within one file system replaces the name in one step; a
process already running the old file keeps it), then the directory is fsynced.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

from sfc_k8s import __version__

SOURCE_DIR = "/opt/sfc-k8s/cni"
PLUGIN = "sfc-cni"
IPAM_PLUGINS = ("host-local", "static")


class InstallError(Exception):
    """The installation cannot proceed (the message says what to fix)."""


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as source:
            return source.read()
    except OSError as err:
        raise InstallError(f"cannot read {path}: {err.strerror}") from err


def _same(path: str, data: bytes) -> bool:
    try:
        with open(path, "rb") as installed:
            return installed.read() == data
    except OSError:
        return False


def install_file(data: bytes, dest_dir: str, name: str) -> str:
    """Write ``data`` to ``dest_dir/name`` atomically (temp, fsync, rename); returns the path."""
    dest = os.path.join(dest_dir, name)
    digest = hashlib.sha256(data).hexdigest()[:12]
    tmp = os.path.join(dest_dir, f".{name}.{__version__}-{digest}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o755)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, 0o755)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, dest)
        dir_fd = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise InstallError(f"cannot install {dest}: {err.strerror}") from err
    return dest


def install(source_dir: str, bin_dir: str) -> list[str]:
    """Install from ``source_dir`` into ``bin_dir``; one line per file saying what was done."""
    shim = os.path.join(source_dir, PLUGIN)
    if not os.access(shim, os.X_OK):
        raise InstallError(
            f"{shim} is missing or not executable: expected the sfc-cni shim there"
            " (the image's /opt/sfc-k8s/cni; in a checkout, 'make cni-shim' builds build/shim)"
        )
    try:
        os.makedirs(bin_dir, mode=0o755, exist_ok=True)
    except OSError as err:
        raise InstallError(
            f"cannot create the CNI bin directory {bin_dir}: {err.strerror}"
        ) from err
    done = []
    data = _read(shim)
    if _same(os.path.join(bin_dir, PLUGIN), data):
        done.append(f"{PLUGIN}: up to date")
    else:
        done.append(f"{PLUGIN}: installed {install_file(data, bin_dir, PLUGIN)}")
    for name in IPAM_PLUGINS:
        if os.access(os.path.join(bin_dir, name), os.X_OK):
            done.append(f"{name}: the node has it")
            continue
        source = os.path.join(source_dir, name)
        if not os.access(source, os.X_OK):
            done.append(f"{name}: missing on the node and not in {source_dir}")
            continue
        done.append(f"{name}: installed {install_file(_read(source), bin_dir, name)}")
    return done


def uninstall(bin_dir: str) -> list[str]:
    """Remove ``sfc-cni`` (and temporary files of an interrupted install) from ``bin_dir``.

    The IPAM plugins stay: the node's other networks may use them, and a copy this installer made
    cannot be told from the node's own.
    """
    done = []
    try:
        names = os.listdir(bin_dir)
    except FileNotFoundError:
        return [f"{bin_dir}: no such directory"]
    for name in names:
        if name == PLUGIN or (name.startswith(f".{PLUGIN}.") and name.endswith(".tmp")):
            os.unlink(os.path.join(bin_dir, name))
            done.append(f"{name}: removed")
    return done or [f"{PLUGIN}: not installed"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sfc-k8s install-cni",
        description="Install the sfc-cni shim, and the IPAM plugins the node lacks, into the"
        " node's CNI bin directory (atomically; what the agent's init container runs).",
    )
    parser.add_argument(
        "--bin-dir", required=True, help="the node's CNI bin directory, e.g. /opt/cni/bin"
    )
    parser.add_argument(
        "--from",
        dest="source_dir",
        default=SOURCE_DIR,
        help=f"where the shim and the IPAM plugins to copy are ({SOURCE_DIR}, in the image)",
    )
    parser.add_argument(
        "--uninstall",
        action="store_true",
        help="remove sfc-cni from the directory instead (the IPAM plugins stay)",
    )
    args = parser.parse_args(argv)
    try:
        done = uninstall(args.bin_dir) if args.uninstall else install(args.source_dir, args.bin_dir)
        for line in done:
            print(line)
    except InstallError as err:
        print(f"sfc-k8s install-cni: {err}", file=sys.stderr)
        return 1
    return 0
