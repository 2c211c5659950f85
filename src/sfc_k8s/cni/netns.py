"""Network-namespace handles for the CNI plugin: open and validate ``CNI_NETNS``, and ``setns``.

The plugin needs the pod's namespace only long enough to create a netlink socket inside it (a
socket stays bound to the namespace it was created in), so ``netlink.Rtnl.in_netns`` enters the
namespace on the calling thread, creates the socket and returns to the original namespace before
anything else runs. ``sfc-cni`` is a one-shot, single-threaded process, so nothing else can
observe the switch; long-lived processes must not use this module (they do namespace-bound
work in a child process or a short-lived thread).

``setns(2)`` itself comes from ``sfc_k8s.coldstart`` (``os.setns`` on Python 3.12+, libc's
bound without importing ``ctypes`` on 3.11).
"""

from __future__ import annotations

import os

from sfc_k8s import coldstart
from sfc_k8s.cni.errors import CniError, Code, invalid, show

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3): which kind of namespace an nsfs file descriptor is
NETNS_FORM = "a network namespace: /proc/<pid>/ns/net or a bind mount like /run/netns/<name>"


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace ``fd`` refers to; raises ``OSError``."""
    coldstart.setns(fd, nstype)


def open_netns(path: str) -> int:
    """Open ``path`` as a network namespace and return its file descriptor.

    A missing path means the container is gone (code 3, so the runtime needs no cleanup); a path
    that exists but is not a network namespace is a bad ``CNI_NETNS`` (code 4).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as err:
        raise CniError(
            Code.UNKNOWN_CONTAINER,
            f"CNI_NETNS={show(path)} does not exist: the pod is gone",
            str(err),
        ) from err
    except OSError as err:
        raise _not_netns(path, err) from err
    import fcntl

    try:
        nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as err:
        os.close(fd)
        raise _not_netns(path, err) from err
    if nstype != CLONE_NEWNET:
        os.close(fd)
        raise _not_netns(path, None)
    return fd


def _not_netns(path: str, err: OSError | None) -> CniError:
    details = str(err) if err is not None else "another kind of namespace"
    return invalid("CNI_NETNS", path, NETNS_FORM, code=Code.INVALID_ENVIRONMENT, details=details)


def netns_exists(path: str) -> bool:
    """True when ``path`` still opens (DEL uses it to tell a gone pod from a live one)."""
    return os.path.exists(path)


def current_netns() -> int:
    """A file descriptor on the calling thread's current network namespace."""
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
