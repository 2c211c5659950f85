"""Kernel feature probe: does this kernel have what the data plane needs?

The node agent calls ``probe()`` at start and refuses to run when a required feature is
missing, with a message naming the feature and the kernel that first has it (instead of a libbpf
error in CrashLoopBackOff). ``assess(results, release)`` is the pure half: from what the probe
found, the verdict and the message; it is unit-tested with made-up results.

Each probe asks the kernel itself, never the version string (distributions backport): a helper
known to the verifier, a map created with a flag, BTF loaded, a TCX link made, a qdisc and a
device created. The probes that need a network device run in a private network namespace made
by a short-lived thread, so nothing appears on the host and no other thread changes namespace.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sfc_k8s.dataplane import _libbpf as bpf
from sfc_k8s.dataplane.errors import BpfError


@dataclass(frozen=True)
class Feature:
    """One kernel feature the data plane uses."""

    name: str
    minimum: str  # the first mainline kernel that has it
    use: str  # what the data plane needs it for
    required: bool = True  # False: the data plane works without it, with less


FEATURES: tuple[Feature, ...] = (
    Feature("bpf_redirect_peer", "5.10", "delivers a packet into the chosen pod's namespace"),
    Feature("mmapable_array", "5.5", "Maglev tables written in place (BPF_F_MMAPABLE)"),
    Feature("btf", "4.18", "the object's BTF-defined maps and checked layouts"),
    Feature("clsact", "4.5", "TC ingress attachment where TCX is missing"),
    Feature(
        "tcx", "6.6", "TC ingress attachment through BPF links (clsact otherwise)", required=False
    ),
    Feature(
        "vxlan_external",
        "4.3",
        "the flow-based tunnel device for links spanning nodes (one node works without it)",
        required=False,
    ),
)
# Everything required at once: the newest of the required features' minimums.
MINIMUM_KERNEL = "5.10"


@dataclass(frozen=True)
class Assessment:
    """The verdict on a probe's results."""

    ok: bool  # every required feature present (the TC hook: TCX or clsact)
    missing: tuple[Feature, ...]
    message: str


def _describe(features: list[Feature]) -> str:
    return "; ".join(f"{f.name} (Linux {f.minimum}, {f.use})" for f in features)


def assess(results: Mapping[str, bool], release: str) -> Assessment:
    """Judge ``results`` (feature name -> present) of a kernel ``release``; pure.

    A feature absent from ``results`` counts as missing. Either TCX or clsact gives the TC hook,
    so clsact alone missing is no failure when TCX is there.
    """
    missing = tuple(f for f in FEATURES if not results.get(f.name, False))
    names = {f.name for f in missing}
    hard = [f for f in missing if f.required and not (f.name == "clsact" and "tcx" not in names)]
    parts = [f"kernel {release}:"]
    if hard:
        parts.append(f"missing {_describe(hard)}; sfc-k8s needs Linux {MINIMUM_KERNEL} or later.")
    else:
        parts.append("every required feature present.")
    soft = [f for f in missing if f not in hard and f.name != "clsact"]
    if soft:
        parts.append(f"Optional, missing: {_describe(soft)}.")
    return Assessment(ok=not hard, missing=tuple(missing), message=" ".join(parts))


# -- the probes (root, CAP_BPF/CAP_SYS_ADMIN and CAP_NET_ADMIN) -------------------------------

BPF_PROG_TYPE_SCHED_CLS = 3
BPF_FUNC_REDIRECT_PEER = 155
# r0 = 0; exit: the smallest program the verifier accepts.
_RETURN_ZERO = bytes.fromhex("b7000000000000009500000000000000")
_CLONE_NEWNET = 0x40000000

_vp, _int, _u32, _cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_char_p
_probe_helper = bpf._sig("libbpf_probe_bpf_helper", _int, _int, _int, _vp)
_prog_load = bpf._sig("bpf_prog_load", _int, _int, _cp, _cp, _vp, ctypes.c_size_t, _vp)
_btf_new_empty = bpf._sig("btf__new_empty", _vp)
_btf_add_int = bpf._sig("btf__add_int", _int, _vp, _cp, ctypes.c_size_t, _int)
_btf_load = bpf._sig("btf__load_into_kernel", _int, _vp)
_btf_free = bpf._sig("btf__free", None, _vp)


def _has_redirect_peer() -> bool:
    ret = int(_probe_helper(BPF_PROG_TYPE_SCHED_CLS, BPF_FUNC_REDIRECT_PEER, None))
    if ret < 0:  # the probe itself failed (no privilege, no bpf()): not an answer
        raise BpfError(
            f"failed to probe bpf_redirect_peer: [Errno {-ret}] {os.strerror(-ret)}", -ret
        )
    return ret == 1


def _has_mmapable_array() -> bool:
    try:
        fd = bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, "sfc_probe", 4, 4, 1, flags=bpf.BPF_F_MMAPABLE)
    except BpfError as err:
        if err.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise
    os.close(fd)
    return True


def _has_btf() -> bool:
    btf = _btf_new_empty()
    if not btf:
        raise BpfError("failed to allocate a BTF object", ctypes.get_errno())
    try:
        if _btf_add_int(btf, b"int", 4, 1) < 0:
            raise BpfError("failed to build a BTF probe", ctypes.get_errno())
        return bool(_btf_load(btf) == 0)
    finally:
        _btf_free(btf)  # closes the loaded BTF's fd too


def _load_return_zero() -> int:
    insns = ctypes.create_string_buffer(_RETURN_ZERO, len(_RETURN_ZERO))
    fd = _prog_load(BPF_PROG_TYPE_SCHED_CLS, b"sfc_probe", b"GPL", insns, 2, None)
    if fd < 0:
        raise BpfError(f"failed to load a probe program: [Errno {-fd}] {os.strerror(-fd)}", -fd)
    return int(fd)


def _has_tcx() -> bool:
    """A TCX link on this namespace's loopback (in the private namespace: gone with it)."""
    prog = _load_return_zero()
    try:
        link = bpf.link_create(prog, 1, bpf.BPF_TCX_INGRESS)  # lo is ifindex 1 in a new netns
    except BpfError as err:
        if err.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise
    finally:
        os.close(prog)
    os.close(link)
    return True


def _succeeds(*argv: str) -> bool:
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def _in_private_netns(probes: Mapping[str, Callable[[], bool]]) -> dict[str, bool]:
    """Run ``probes`` in a thread that first moves to a new, empty network namespace."""
    results: dict[str, bool] = {}
    failure: list[BaseException] = []

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_NEWNET) != 0:  # this thread only; it ends with the probes
            code = ctypes.get_errno()
            failure.append(OSError(code, f"unshare(CLONE_NEWNET): {os.strerror(code)}"))
            return
        try:
            for name, fn in probes.items():
                results[name] = fn()
        except BaseException as err:  # re-raised in the caller's thread
            failure.append(err)

    thread = threading.Thread(target=run, name="sfc-k8s-kernel-probe")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return results


def probe() -> dict[str, bool]:
    """Ask the running kernel for every feature of ``FEATURES``; needs root."""
    results = {
        # first: creating a map fails with EPERM without privilege, so no answer below is a
        # guess made without the right to ask (libbpf's helper probe answers even then)
        "mmapable_array": _has_mmapable_array(),
        "bpf_redirect_peer": _has_redirect_peer(),
        "btf": _has_btf(),
    }
    results |= _in_private_netns(
        {
            "tcx": _has_tcx,
            "clsact": lambda: _succeeds("tc", "qdisc", "add", "dev", "lo", "clsact"),
            "vxlan_external": lambda: _succeeds(
                "ip", "link", "add", "sfcprobe0", "type", "vxlan", "external", "dstport", "4790"
            ),
        }
    )
    return results


def check() -> Assessment:
    """Probe this kernel and judge the result (what the agent calls at start)."""
    return assess(probe(), platform.release())
