"""Loader of the cross-connection program: the explicit steps open, load, pin, attach, detach,
close, and adoption of what an earlier process pinned.

Pin layout (every path is defined here and nowhere else)::

    <root>/sfc_xc_ingress          the program (its pin marks a fully loaded root)
    <root>/sfc_tun_ingress         the tunnel's receive program
    <root>/sfc_sess4_v1 ...        the node-wide maps (see structs.NODE_MAPS)
    <root>/sfc_build_v1            the build identity of the pinned programs (upgrade.py)
    <root>/links/<link>/info       the link's info map (its id): the link exists iff pinned
    <root>/links/<link>/tcx_<ifindex>   the TCX attachment of an endpoint interface that had none
                                   of its own when the link took it (it leaves with the link)
    <root>/ifaces/tcx_<ifindex>    the TCX attachment of an interface attached when it appeared
                                   (the agent, at pod creation): it stays until the interface goes
    <root>/tunnel/tcx_<ifindex>    the TCX attachment of the tunnel device
    <root>/linkids/<link id>       an empty folder per node-local link id in use: ids are claimed
                                   with mkdir (atomic), not found by reading every link

A program attached through a pinned TCX link stays attached when the process exits, so traffic
keeps flowing with no manager running. Used by ``sfc_k8s.dataplane.manager``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sfc_k8s.dataplane import _libbpf as bpf
from sfc_k8s.dataplane import structs
from sfc_k8s.dataplane.errors import BpfError, DataplaneError

BPFFS_MOUNT = "/sys/fs/bpf"
OBJECT_PATH = Path(__file__).parent / "bpf" / "sfc_xc.bpf.o"
# Priority of the clsact fallback filter (used only on kernels without TCX).
TC_FALLBACK_PREF = 49_152


@dataclass(frozen=True)
class Pins:
    """Every pin path under one root."""

    root: str

    @property
    def program(self) -> str:
        return os.path.join(self.root, structs.PROG_INGRESS)

    @property
    def tunnel_program(self) -> str:
        return os.path.join(self.root, structs.PROG_TUNNEL)

    @property
    def tunnel_dir(self) -> str:
        return os.path.join(self.root, "tunnel")

    def tunnel_attachment(self, ifindex: int) -> str:
        return os.path.join(self.tunnel_dir, f"tcx_{ifindex}")

    def node_map(self, name: str) -> str:
        return os.path.join(self.root, name)

    @property
    def links_dir(self) -> str:
        return os.path.join(self.root, "links")

    def link_dir(self, link: str) -> str:
        return os.path.join(self.links_dir, link)

    def link_info(self, link: str) -> str:
        return os.path.join(self.link_dir(link), "info")

    def attachment(self, link: str, ifindex: int) -> str:
        return os.path.join(self.link_dir(link), f"tcx_{ifindex}")

    @property
    def link_ids_dir(self) -> str:
        return os.path.join(self.root, "linkids")

    def link_id_marker(self, link_id: int) -> str:
        return os.path.join(self.link_ids_dir, str(link_id))

    @property
    def ifaces_dir(self) -> str:
        return os.path.join(self.root, "ifaces")

    def interface_attachment(self, ifindex: int) -> str:
        return os.path.join(self.ifaces_dir, f"tcx_{ifindex}")


def tcx_pins(folder: str) -> dict[int, str]:
    """The TCX link pins (``tcx_<ifindex>``) in ``folder``, by ifindex ({} if no folder)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return {}
    return {int(n[4:]): os.path.join(folder, n) for n in names if n.startswith("tcx_")}


@dataclass
class NodeFds:
    """Open fds of the pinned programs and node-wide maps."""

    program: int
    tunnel_program: int = -1
    maps: dict[str, int] = field(default_factory=dict)

    def close(self) -> None:
        for fd in [self.program, self.tunnel_program, *self.maps.values()]:
            if fd >= 0:
                os.close(fd)
        self.program = self.tunnel_program = -1
        self.maps.clear()


def ensure_bpffs(mount: str = BPFFS_MOUNT) -> None:
    """Mount bpffs at ``mount`` unless it is already a bpffs mount."""
    with open("/proc/self/mounts", encoding="ascii") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and fields[1] == mount and fields[2] == "bpf":
                return
    if _private_mount_namespace():
        # `ip netns exec` (among others) runs us with a fresh /sys in a mount namespace of our
        # own: a bpffs mounted there dies with the process, and every pin with it.
        raise DataplaneError(
            f"bpffs is not mounted at {mount!r} in this private mount namespace (under 'ip netns"
            " exec'?): pins made here would vanish; switch only the network namespace"
            " (nsenter --net=/run/netns/NAME) or mount the host's bpffs there"
        )
    os.makedirs(mount, exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", mount.encode(), b"bpf", 0, b"mode=0700") != 0:
        err = ctypes.get_errno()
        raise BpfError(f"failed to mount bpffs at {mount!r}: [Errno {err}] {os.strerror(err)}", err)


def _private_mount_namespace() -> bool:
    """Best effort: True when this process has a mount namespace of its own, other than the
    one of PID 1 or, where that cannot be read, of the parent process (`ip netns exec` unshares
    the mount namespace and then runs the command in place of itself)."""
    mine = os.readlink("/proc/self/ns/mnt")
    for pid in (1, os.getppid()):
        try:
            return os.readlink(f"/proc/{pid}/ns/mnt") != mine
        except OSError:
            continue
    return False


# --- load: open -> size -> load -> pin ---------------------------------------------------------


def open_object(path: Path = OBJECT_PATH) -> int:
    """Step 1: parse the compiled object (``make bpf`` builds it)."""
    if not path.exists():
        raise DataplaneError(f"eBPF object {str(path)!r} is missing: run 'make bpf'")
    return bpf.object_open(str(path))


def size_maps(obj: int, *, session_table_size: int) -> None:
    """Step 2: set map sizes chosen at load time."""
    for name in structs.SESSION_MAPS:
        bpf.map_set_max_entries(bpf.object_map(obj, name), session_table_size)


def load_object(obj: int, pins: Pins) -> None:
    """Step 3: create (or reuse the pinned, compatible) maps, pin new ones, verify the program."""
    for name in structs.NODE_MAPS:
        bpf.map_set_pin_path(bpf.object_map(obj, name), pins.node_map(name))
    bpf.object_load(obj)


def pin_program(obj: int, pins: Pins) -> None:
    """Step 4: pin the programs, the cross-connection's last: its presence marks a fully
    loaded root."""
    fd = bpf.program_fd(bpf.object_program(obj, structs.PROG_TUNNEL))
    bpf.obj_pin(fd, pins.tunnel_program)
    fd = bpf.program_fd(bpf.object_program(obj, structs.PROG_INGRESS))
    bpf.obj_pin(fd, pins.program)


def close_object(obj: int) -> None:
    """Step 5: drop the loader's references; pins keep the program and maps alive."""
    bpf.object_close(obj)


def adopt(pins: Pins) -> NodeFds:
    """Open the pinned program and node-wide maps of an earlier process."""
    fds = NodeFds(program=bpf.obj_get(pins.program))
    try:
        fds.tunnel_program = bpf.obj_get(pins.tunnel_program)
        for name in structs.NODE_MAPS:
            fds.maps[name] = fd = bpf.obj_get(pins.node_map(name))
            info = bpf.map_info(fd)
            if (info.key_size, info.value_size) != structs.MAP_LAYOUTS[name]:
                raise DataplaneError(
                    f"pinned map {pins.node_map(name)!r} has key/value sizes"
                    f" {info.key_size}/{info.value_size}, this version expects"
                    f" {structs.MAP_LAYOUTS[name][0]}/{structs.MAP_LAYOUTS[name][1]}:"
                    " the layout changed without a new map name"
                )
    except BaseException:
        fds.close()
        raise
    return fds


def load(pins: Pins, *, session_table_size: int, object_path: Path = OBJECT_PATH) -> None:
    """Load the object and pin its programs and maps under ``pins.root``, where no program is
    pinned (``upgrade.load_or_upgrade`` decides; the caller holds the root's lock, so two
    processes never load at once)."""
    with contextlib.suppress(FileNotFoundError):  # a load that failed half-way
        os.unlink(pins.tunnel_program)
    obj = open_object(object_path)
    try:
        size_maps(obj, session_table_size=session_table_size)
        load_object(obj, pins)
        pin_program(obj, pins)
    finally:
        close_object(obj)


def unpin_node(pins: Pins) -> None:
    """Remove the program and node-wide map pins (the kernel frees them with the last user)."""
    paths = [pins.program, pins.tunnel_program, *(pins.node_map(n) for n in structs.NODE_MAPS)]
    paths.append(pins.node_map(structs.BUILD_MAP))
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# --- attach / detach -----------------------------------------------------------------------


def attach(pins: Pins, link: str, ifindex: int, prog_fd: int, *, mode: str = "auto") -> str:
    """Attach the program at TC ingress of ``ifindex``; returns the mode used ("tcx" or "tc").

    TCX: a BPF link pinned at ``pins.attachment(link, ifindex)``, so it outlives this process.
    "auto" falls back to a clsact ``tc`` filter (running the pinned program) on kernels without
    TCX; "tcx" and "tc" force one mode.
    """
    return attach_at(pins.attachment(link, ifindex), ifindex, prog_fd, pins.program, mode=mode)


def attach_at(pin: str, ifindex: int, prog_fd: int, prog_pin: str, *, mode: str = "auto") -> str:
    """``attach`` of any program (pinned at ``prog_pin``), its TCX link pinned at ``pin``."""
    if mode in ("auto", "tcx"):
        try:
            fd = bpf.link_create(prog_fd, ifindex, bpf.BPF_TCX_INGRESS)
        except BpfError as err:
            if mode == "tcx" or err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
        else:
            try:
                bpf.obj_pin(fd, pin)
            except BaseException:
                bpf.link_detach(fd)
                raise
            finally:
                os.close(fd)
            return "tcx"
    tc_attach(ifindex, prog_pin)
    return "tc"


def attach_tcx(pin: str, ifindex: int, prog_fd: int) -> bool:
    """Attach through a TCX link pinned at ``pin`` only: False on a kernel without TCX (the
    caller then leaves the interface to ``attach``, whose clsact fallback runs ``tc``)."""
    try:
        fd = bpf.link_create(prog_fd, ifindex, bpf.BPF_TCX_INGRESS)
    except BpfError as err:
        if err.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise
    try:
        bpf.obj_pin(fd, pin)
    except BaseException:
        bpf.link_detach(fd)
        raise
    finally:
        os.close(fd)
    return True


def tcx_ifindex(pin: str) -> int:
    """The interface the TCX link pinned at ``pin`` runs on: 0 when defunct (its interface was
    deleted, which detached it) or when nothing is pinned there."""
    try:
        fd = bpf.obj_get(pin)
    except BpfError as err:
        if err.errno == errno.ENOENT:
            return 0
        raise
    try:
        return int(bpf.link_info(fd).ifindex)
    finally:
        os.close(fd)


def detach(pins: Pins, link: str, ifindex: int) -> None:
    """Undo ``attach``: detach and unpin the TCX link, or delete the tc filter."""
    detach_at(pins.attachment(link, ifindex), ifindex)


def detach_at(pin: str, ifindex: int) -> None:
    """Undo ``attach_at``."""
    if not os.path.exists(pin):
        _tc_detach(ifindex)
        return
    fd = bpf.obj_get(pin)
    try:
        bpf.link_detach(fd)
    except BpfError as err:
        # Already defunct: its interface was deleted.
        if err.errno not in (errno.ENOLINK, errno.ENODEV, errno.EINVAL):
            raise
    finally:
        os.close(fd)
    os.unlink(pin)


def _ifname(ifindex: int) -> str:
    try:
        return socket.if_indextoname(ifindex)
    except OSError as err:
        raise DataplaneError(f"no interface with index {ifindex}: {err}") from err


TC_TIMEOUT = 10.0  # seconds a `tc` call may take before the caller gets a BpfError


def _tc(*args: str) -> subprocess.CompletedProcess[str]:
    try:  # a hung `tc` must reach callers as a data-plane error (see tunnel._ip)
        return subprocess.run(
            ["tc", *args], capture_output=True, text=True, check=False, timeout=TC_TIMEOUT
        )
    except subprocess.TimeoutExpired as err:
        raise BpfError(f"'tc {' '.join(args)}' did not answer in {TC_TIMEOUT:g} s") from err


def tc_batch(commands: list[str]) -> tuple[int, str]:
    """Run ``tc`` commands (one per item, without the leading ``tc``) in one process, which
    stops at the first that fails: returns how many succeeded and that one's error ("" if
    none failed). One process for all: a ``tc`` process per interface costs milliseconds."""
    done = subprocess.run(
        ["tc", "-batch", "-"], input="".join(c + "\n" for c in commands),
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    if done.returncode == 0:
        return len(commands), ""
    failed = re.search(r"Command failed -:(\d+)", done.stderr)
    if failed is None:
        raise BpfError(f"tc -batch failed: {done.stderr.strip()}")
    return int(failed[1]) - 1, done.stderr.replace(failed[0], "").strip()


def tc_replace_command(ifname: str, prog_pin: str) -> str:
    """The ``tc`` command that sets the program of an interface's clsact filter."""
    return (
        f"filter replace dev {ifname} ingress pref {TC_FALLBACK_PREF} handle 1 bpf da"
        f" pinned {prog_pin}"
    )


def tc_attach(ifindex: int, prog_pin: str) -> None:
    """Attach the clsact filter running the program pinned at ``prog_pin``."""
    _tc("qdisc", "add", "dev", _ifname(ifindex), "clsact")  # EEXIST is fine
    tc_replace(ifindex, prog_pin)


def tc_replace(ifindex: int, prog_pin: str) -> None:
    """Set the program of the clsact filter (the kernel swaps it atomically if one exists)."""
    dev = _ifname(ifindex)
    done = _tc(
        "filter", "replace", "dev", dev, "ingress", "pref", str(TC_FALLBACK_PREF),
        "handle", "1", "bpf", "da", "pinned", prog_pin,
    )  # fmt: skip
    if done.returncode != 0:
        raise BpfError(f"failed to attach tc filter to {dev!r}: {done.stderr.strip()}")


def _tc_detach(ifindex: int) -> None:
    try:
        dev = _ifname(ifindex)
    except DataplaneError:
        return  # the interface is gone, and its filters with it
    _tc("filter", "del", "dev", dev, "ingress", "pref", str(TC_FALLBACK_PREF))
