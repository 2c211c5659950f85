"""A small, typed ctypes binding to the system libbpf (``libbpf.so.1``, version 1.1 or later).

Only the calls the loader and the manager need: open/load an object, resize a map before load,
pin and get pinned objects, map element and batch operations, map creation (for the per-link
Maglev tables), TCX attachment through ``bpf_link_create``, a link's program swapped with
``bpf_link_update`` and program/map info (for the upgrade) and ``BPF_PROG_TEST_RUN``. Every
failure raises ``BpfError`` carrying the errno. Used by ``sfc_k8s.dataplane.loader`` and the
BPF tests.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections import deque
from dataclasses import dataclass
from typing import Any

from sfc_k8s.dataplane.errors import BpfError

# Values from the kernel's uapi/linux/bpf.h (stable ABI).
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_HASH_OF_MAPS = 13
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2
BPF_TCX_INGRESS = 46  # kernel >= 6.6; libbpf 1.1 headers predate it, the syscall takes it
BPF_OBJ_NAME_LEN = 16
BPF_F_MMAPABLE = 1 << 10  # an array map user space can mmap
BPF_F_REPLACE = 1 << 2  # link update: only if the link still runs old_prog_fd

CBuffer = ctypes.Array[ctypes.c_char] | ctypes.Structure | ctypes.c_uint32


class _TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class _BatchOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


class _MapCreateOpts(ctypes.Structure):
    """``struct bpf_map_create_opts`` of libbpf 1.1."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("btf_fd", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
        ("numa_node", ctypes.c_uint32),
        ("map_ifindex", ctypes.c_uint32),
    ]


class MapInfo(ctypes.Structure):
    """The leading fields of the kernel's ``struct bpf_map_info`` (the kernel fills a prefix)."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
    ]


class ProgInfo(ctypes.Structure):
    """The leading fields of the kernel's ``struct bpf_prog_info``: ``tag`` is a hash of the
    program's instructions (map references left out), so two loads of one build share it."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),  # user pointer: the kernel writes nr_map_ids ids there
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
    ]


class _LinkUpdateOpts(ctypes.Structure):
    """``struct bpf_link_update_opts`` of libbpf 1.1."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("flags", ctypes.c_uint32),
        ("old_prog_fd", ctypes.c_uint32),
        ("old_map_fd", ctypes.c_uint32),
    ]


class LinkInfo(ctypes.Structure):
    """The leading fields of ``struct bpf_link_info`` plus the TCX union member."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),  # tcx.ifindex
        ("attach_type", ctypes.c_uint32),  # tcx.attach_type
        ("spare", ctypes.c_uint64 * 6),
    ]


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


def _load() -> ctypes.CDLL:
    name = "libbpf.so.1"
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError as err:
        found = ctypes.util.find_library("bpf")
        if not found:
            raise BpfError(f"cannot load {name}: {err}; install the libbpf1 package") from err
        return ctypes.CDLL(found, use_errno=True)


_lib = _load()
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
_libc.vsnprintf.restype = ctypes.c_int


def _sig(name: str, restype: Any, *argtypes: Any) -> Any:
    fn = getattr(_lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


_vp, _int, _u32, _cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_char_p
_open_file = _sig("bpf_object__open_file", _vp, _cp, _vp)
_obj_load = _sig("bpf_object__load", _int, _vp)
_obj_close = _sig("bpf_object__close", None, _vp)
_find_map = _sig("bpf_object__find_map_by_name", _vp, _vp, _cp)
_find_prog = _sig("bpf_object__find_program_by_name", _vp, _vp, _cp)
_map_fd = _sig("bpf_map__fd", _int, _vp)
_map_set_max = _sig("bpf_map__set_max_entries", _int, _vp, _u32)
_map_type = _sig("bpf_map__type", _int, _vp)
_map_key_size = _sig("bpf_map__key_size", _u32, _vp)
_map_value_size = _sig("bpf_map__value_size", _u32, _vp)
_map_max_entries = _sig("bpf_map__max_entries", _u32, _vp)
_map_flags = _sig("bpf_map__map_flags", _u32, _vp)
_map_set_pin_path = _sig("bpf_map__set_pin_path", _int, _vp, _cp)
_prog_fd = _sig("bpf_program__fd", _int, _vp)
_obj_pin = _sig("bpf_obj_pin", _int, _int, _cp)
_obj_get = _sig("bpf_obj_get", _int, _cp)
_map_create = _sig("bpf_map_create", _int, _int, _cp, _u32, _u32, _u32, _vp)
_update = _sig("bpf_map_update_elem", _int, _int, _vp, _vp, ctypes.c_uint64)
_lookup = _sig("bpf_map_lookup_elem", _int, _int, _vp, _vp)
_delete = _sig("bpf_map_delete_elem", _int, _int, _vp)
_next_key = _sig("bpf_map_get_next_key", _int, _int, _vp, _vp)
_lookup_batch = _sig(
    "bpf_map_lookup_batch", _int, _int, _vp, _vp, _vp, _vp, ctypes.POINTER(_u32), _vp
)
_update_batch = _sig("bpf_map_update_batch", _int, _int, _vp, _vp, ctypes.POINTER(_u32), _vp)
_delete_batch = _sig("bpf_map_delete_batch", _int, _int, _vp, ctypes.POINTER(_u32), _vp)
_map_fd_by_id = _sig("bpf_map_get_fd_by_id", _int, _u32)
_link_create = _sig("bpf_link_create", _int, _int, _int, _int, _vp)
_link_detach = _sig("bpf_link_detach", _int, _int)
_link_update = _sig("bpf_link_update", _int, _int, _int, _vp)
_link_next_id = _sig("bpf_link_get_next_id", _int, _u32, ctypes.POINTER(_u32))
_link_fd_by_id = _sig("bpf_link_get_fd_by_id", _int, _u32)
_info_by_fd = _sig("bpf_obj_get_info_by_fd", _int, _int, _vp, ctypes.POINTER(_u32))
_test_run = _sig("bpf_prog_test_run_opts", _int, _int, ctypes.POINTER(_TestRunOpts))
_num_cpus = _sig("libbpf_num_possible_cpus", _int)
_set_print = _sig("libbpf_set_print", _vp, _PRINT_FN)

# libbpf's messages (verifier log included) land here instead of stderr; errors quote the tail.
_log: deque[str] = deque(maxlen=200)


def _on_print(level: int, fmt: bytes | None, args: int | None) -> int:
    buf = ctypes.create_string_buffer(1024)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    _log.append(buf.value.decode(errors="replace").rstrip("\n"))
    return 0


_on_print_c = _PRINT_FN(_on_print)  # kept referenced: libbpf holds the pointer
_set_print(_on_print_c)


def log_tail(lines: int = 20) -> str:
    """The last lines libbpf printed (the verifier log after a failed load)."""
    return "\n".join(list(_log)[-lines:])


def _check(ret: int, what: str) -> int:
    if ret < 0:
        errno = -ret  # libbpf >= 1.0 returns -errno from every int-returning call
        raise BpfError(f"{what}: [Errno {errno}] {os.strerror(errno)}", errno)
    return ret


def _ptr(buf: Any) -> int | None:
    return None if buf is None else ctypes.addressof(buf)


def num_possible_cpus() -> int:
    return _check(_num_cpus(), "failed to count possible CPUs")


# --- objects and programs -------------------------------------------------------------------


def object_open(path: str) -> int:
    """``bpf_object__open_file``: parse an ELF object; returns an opaque handle."""
    handle: int | None = _open_file(path.encode(), None)
    if not handle:
        errno = ctypes.get_errno() or 1
        raise BpfError(f"failed to open BPF object {path!r}: {os.strerror(errno)}", errno)
    return handle


def object_map(obj: int, name: str) -> int:
    handle: int | None = _find_map(obj, name.encode())
    if not handle:
        raise BpfError(f"BPF object has no map {name!r}", 2)
    return handle


def object_program(obj: int, name: str) -> int:
    handle: int | None = _find_prog(obj, name.encode())
    if not handle:
        raise BpfError(f"BPF object has no program {name!r}", 2)
    return handle


def map_set_max_entries(map_: int, entries: int) -> None:
    _check(_map_set_max(map_, entries), f"failed to resize map to {entries} entries")


def map_spec(map_: int) -> tuple[int, int, int, int, int]:
    """(type, key size, value size, max entries, flags) of an object's map, before load."""
    return (
        _map_type(map_),
        _map_key_size(map_),
        _map_value_size(map_),
        _map_max_entries(map_),
        _map_flags(map_),
    )


def map_set_pin_path(map_: int, path: str) -> None:
    """Make ``object_load`` reuse the map pinned at ``path`` if compatible, else pin it there."""
    _check(_map_set_pin_path(map_, path.encode()), f"failed to set pin path {path!r}")


def object_load(obj: int) -> None:
    """``bpf_object__load``: create the maps and load the programs (verifier runs here)."""
    _log.clear()
    ret = _obj_load(obj)
    if ret < 0:
        errno = -ret
        raise BpfError(
            f"failed to load BPF object: [Errno {errno}] {os.strerror(errno)}\n{log_tail()}", errno
        )


def object_close(obj: int) -> None:
    """Frees the object and closes its fds; pinned maps and programs stay."""
    _obj_close(obj)


def map_fd(map_: int) -> int:
    return _check(_map_fd(map_), "map has no fd (object not loaded)")


def program_fd(prog: int) -> int:
    return _check(_prog_fd(prog), "program has no fd (object not loaded)")


# --- pinning ---------------------------------------------------------------------------------


def obj_pin(fd: int, path: str) -> None:
    _check(_obj_pin(fd, path.encode()), f"failed to pin at {path!r}")


def obj_get(path: str) -> int:
    """Open a pinned map, program or link; returns a new fd."""
    return _check(_obj_get(path.encode()), f"failed to open pinned object {path!r}")


# --- maps ------------------------------------------------------------------------------------


def map_create(
    map_type: int, name: str, key_size: int, value_size: int, entries: int, *, flags: int = 0
) -> int:
    opts = _MapCreateOpts(sz=ctypes.sizeof(_MapCreateOpts), map_flags=flags)
    return _check(
        _map_create(map_type, name.encode(), key_size, value_size, entries, _ptr(opts)),
        f"failed to create map {name!r}",
    )


def map_fd_by_id(map_id: int) -> int:
    """A new fd for the map with kernel id ``map_id`` (what a map-of-maps lookup returns)."""
    return _check(_map_fd_by_id(map_id), f"failed to open map id {map_id}")


def map_update(fd: int, key: Any, value: Any, flags: int = BPF_ANY) -> None:
    _check(_update(fd, _ptr(key), _ptr(value), flags), "failed to update map element")


def map_lookup(fd: int, key: Any, value: Any) -> bool:
    """Fill ``value``; False when the key is absent."""
    ret = _lookup(fd, _ptr(key), _ptr(value))
    if ret == -2:  # ENOENT
        return False
    _check(ret, "failed to look up map element")
    return True


def map_delete(fd: int, key: Any) -> bool:
    """False when the key was already absent."""
    ret = _delete(fd, _ptr(key))
    if ret == -2:
        return False
    _check(ret, "failed to delete map element")
    return True


def map_next_key(fd: int, key: Any, next_key: Any) -> bool:
    """Fill ``next_key`` with the key after ``key`` (None: the first); False at the end."""
    ret = _next_key(fd, _ptr(key), _ptr(next_key))
    if ret == -2:
        return False
    _check(ret, "failed to iterate map")
    return True


def map_lookup_batch(
    fd: int, token: Any, next_token: Any, *, keys: Any, values: Any, count: int
) -> tuple[int, bool]:
    """One ``bpf_map_lookup_batch`` step; returns (elements read, more to come)."""
    n = _u32(count)
    opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts))
    ret = _lookup_batch(fd, _ptr(token), _ptr(next_token), _ptr(keys), _ptr(values), n, _ptr(opts))
    if ret == -2:  # ENOENT: this batch is the last one
        return n.value, False
    _check(ret, "failed to read map in batches")
    return n.value, True


def map_update_batch(fd: int, keys: Any, values: Any, count: int) -> None:
    n = _u32(count)
    opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts))
    _check(_update_batch(fd, _ptr(keys), _ptr(values), n, _ptr(opts)), "failed to batch-update map")


def map_delete_batch(fd: int, keys: Any, count: int) -> tuple[int, int]:
    """Delete ``count`` keys laid end to end; returns (keys processed, errno or 0).

    The kernel stops at the first key it cannot delete (ENOENT: already gone); the caller
    decides whether to skip it and go on.
    """
    n = _u32(count)
    opts = _BatchOpts(sz=ctypes.sizeof(_BatchOpts))
    ret = _delete_batch(fd, _ptr(keys), n, _ptr(opts))
    if ret < 0 and -ret != 2:
        _check(ret, "failed to batch-delete map")
    return n.value, -ret if ret < 0 else 0


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    size = _u32(ctypes.sizeof(info))
    _check(_info_by_fd(fd, _ptr(info), size), "failed to read map info")
    return info


def prog_info(fd: int) -> tuple[ProgInfo, list[int]]:
    """A program's info and the ids of the maps it uses."""
    info = ProgInfo()
    size = _u32(ctypes.sizeof(info))
    _check(_info_by_fd(fd, _ptr(info), size), "failed to read program info")
    ids = (_u32 * info.nr_map_ids)()
    again = ProgInfo(nr_map_ids=info.nr_map_ids, map_ids=ctypes.addressof(ids))
    _check(_info_by_fd(fd, _ptr(again), size), "failed to read program info")
    return again, list(ids)[: again.nr_map_ids]


def link_info(fd: int) -> LinkInfo:
    info = LinkInfo()
    size = _u32(ctypes.sizeof(info))
    _check(_info_by_fd(fd, _ptr(info), size), "failed to read link info")
    return info


# --- attachment ------------------------------------------------------------------------------


def link_create(prog_fd: int, target: int, attach_type: int) -> int:
    """``bpf_link_create``; for TCX, ``target`` is the ifindex. Returns the link fd."""
    return _check(_link_create(prog_fd, target, attach_type, None), "failed to create BPF link")


def link_update(fd: int, prog_fd: int, *, old_prog_fd: int) -> None:
    """Swap the program a link runs, atomically, if it still runs ``old_prog_fd``."""
    opts = _LinkUpdateOpts(
        sz=ctypes.sizeof(_LinkUpdateOpts), flags=BPF_F_REPLACE, old_prog_fd=old_prog_fd
    )
    _check(_link_update(fd, prog_fd, _ptr(opts)), "failed to update BPF link")


def link_detach(fd: int) -> None:
    _check(_link_detach(fd), "failed to detach BPF link")


BPF_LINK_TYPE_TCX = 11


def tcx_links(ifindex: int) -> dict[int, int]:
    """The kernel's TCX links on ``ifindex`` (every process's): link id -> program id. Walks
    every BPF link of the system, for tests and benchmarks (bpftool here predates TCX)."""
    return all_tcx_links().get(ifindex, {})


def all_tcx_links() -> dict[int, dict[int, int]]:
    """Every TCX link of the system: ifindex -> {link id -> program id} (one walk)."""
    found: dict[int, dict[int, int]] = {}
    current, following = 0, _u32()
    while _link_next_id(current, ctypes.byref(following)) == 0:
        current = following.value
        fd = _link_fd_by_id(current)
        if fd < 0:
            continue  # freed meanwhile
        try:
            info = link_info(fd)
        finally:
            os.close(fd)
        if info.type == BPF_LINK_TYPE_TCX:
            found.setdefault(int(info.ifindex), {})[int(info.id)] = int(info.prog_id)
    return found


# --- BPF_PROG_TEST_RUN -----------------------------------------------------------------------


@dataclass(frozen=True)
class TestRunResult:
    retval: int  # the program's return code (TC_ACT_*)
    data: bytes  # the frame after the program ran
    duration_ns: int  # average per repetition
    ctx: bytes  # __sk_buff after the run (when a context was given)


def prog_test_run(
    prog_fd: int, data: bytes, *, ctx: bytes | None = None, repeat: int = 1
) -> TestRunResult:
    """Run a loaded program on one frame in the kernel, without a device sending it."""
    data_in = ctypes.create_string_buffer(data, len(data))
    data_out = ctypes.create_string_buffer(len(data) + 256)
    opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts))
    opts.data_in = ctypes.addressof(data_in)
    opts.data_size_in = len(data)
    opts.data_out = ctypes.addressof(data_out)
    opts.data_size_out = len(data_out)
    opts.repeat = repeat
    ctx_in = ctx_out = None
    if ctx is not None:
        ctx_in = ctypes.create_string_buffer(ctx, len(ctx))
        ctx_out = ctypes.create_string_buffer(max(len(ctx), 512))  # room for all of __sk_buff
        opts.ctx_in = ctypes.addressof(ctx_in)
        opts.ctx_size_in = len(ctx)
        opts.ctx_out = ctypes.addressof(ctx_out)
        opts.ctx_size_out = len(ctx_out)
    _check(_test_run(prog_fd, ctypes.byref(opts)), "BPF_PROG_TEST_RUN failed")
    return TestRunResult(
        retval=ctypes.c_int32(opts.retval).value,
        data=data_out.raw[: opts.data_size_out],
        duration_ns=opts.duration,
        ctx=b"" if ctx_out is None else ctx_out.raw[: opts.ctx_size_out],
    )
