"""Maglev lookup tables (Eisenbud et al., NSDI 2016) for choosing the endpoint of a new flow.

Each endpoint gets a permutation of the table's slots from two hashes of its stable name
(``endpoint_name``: the link's cluster-wide id and the endpoint's stable id, the same on every
node; never a slot, interface name or ifindex, which are node-local); endpoints take turns
claiming their next free preferred slot until the table is full. Every endpoint gets
``size / n`` slots (plus or minus one), and adding or removing one endpoint moves only about
``1/n`` of the slots. Endpoints are taken in name order, so the same set gives the same table in
any process and on any node. Called by the
manager whenever the active endpoints of a side change, and by the tests to predict choices.

The population loop runs in a small C library (``native/sfc_maglev.c``, built by ``make bpf``
into ``native/libsfcmaglev.so``): about 1 ms for a 65,537-slot table instead of 100-400 ms in
Python. ``build_table_py`` is the same algorithm in Python, the reference the C version is
tested against; ``build_table`` uses it only when the library has not been built.
"""

from __future__ import annotations

import array
import ctypes
import hashlib
from collections.abc import Mapping
from pathlib import Path

from sfc_k8s.dataplane.structs import MAGLEV_SIZE

NATIVE_PATH = Path(__file__).parent / "native" / "libsfcmaglev.so"


def _load_native() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(str(NATIVE_PATH))
    except OSError:
        return None
    u32p = ctypes.POINTER(ctypes.c_uint32)
    lib.sfc_maglev_fill.restype = ctypes.c_int
    lib.sfc_maglev_fill.argtypes = [
        ctypes.c_uint32,
        ctypes.c_uint32,
        u32p,
        u32p,
        u32p,
        u32p,
        ctypes.c_uint32,
    ]
    return lib


_native = _load_native()


def native_available() -> bool:
    """Whether the C population loop is loaded (``make bpf`` builds it)."""
    return _native is not None


def endpoint_name(link_cid: int, endpoint_id: int) -> str:
    """The stable name of an endpoint in a Maglev table: the same on every node."""
    return f"link{link_cid}/ep{endpoint_id}"


def permutation(name: str, size: int = MAGLEV_SIZE) -> tuple[int, int]:
    """(offset, skip) of the endpoint's preference list: slot j is offset + j * skip mod size."""
    digest = hashlib.blake2b(name.encode(), digest_size=16, person=b"sfc-maglev").digest()
    h1 = int.from_bytes(digest[:8], "little")
    h2 = int.from_bytes(digest[8:], "little")
    return h1 % size, h2 % (size - 1) + 1


def _prepare(endpoints: Mapping[str, int], size: int) -> tuple[list[str], list[tuple[int, int]]]:
    names = sorted(endpoints)
    if len(names) > size:
        raise ValueError(f"{len(names)} endpoints do not fit a table of {size} slots")
    return names, [permutation(name, size) for name in names]


def build_table(endpoints: Mapping[str, int], size: int = MAGLEV_SIZE) -> array.array[int]:
    """The lookup table: ``size`` slots holding the value (ifindex) of an endpoint each.

    ``endpoints`` maps a stable name to the value to store; ``size`` must be a prime larger
    than the number of endpoints. An empty mapping gives an empty table. The same result as
    ``build_table_py``, computed in C when the library is built.
    """
    if _native is None:
        return build_table_py(endpoints, size)
    names, params = _prepare(endpoints, size)
    n = len(names)
    if n == 0:
        return array.array("I")
    u32s = ctypes.c_uint32 * n
    offsets = u32s(*(p[0] for p in params))
    skips = u32s(*(p[1] for p in params))
    values = u32s(*(endpoints[name] for name in names))
    table = array.array("I", [0]) * size
    address, _ = table.buffer_info()
    out = ctypes.cast(address, ctypes.POINTER(ctypes.c_uint32))
    if _native.sfc_maglev_fill(size, n, offsets, skips, values, out, 1) != 0:
        raise MemoryError(f"failed to build a Maglev table of {size} slots for {n} endpoints")
    return table


def build_table_py(endpoints: Mapping[str, int], size: int = MAGLEV_SIZE) -> array.array[int]:
    """``build_table`` in pure Python: the reference algorithm (slow: 0.1-0.4 s per table)."""
    names, params = _prepare(endpoints, size)
    n = len(names)
    if n == 0:
        return array.array("I")
    offsets = [p[0] for p in params]
    skips = [p[1] for p in params]
    nexts = [0] * n
    owner = [-1] * size
    filled = 0
    while True:
        for i in range(n):
            off, skip, j = offsets[i], skips[i], nexts[i]
            slot = (off + j * skip) % size
            while owner[slot] >= 0:
                j += 1
                slot = (off + j * skip) % size
            owner[slot] = i
            nexts[i] = j + 1
            filled += 1
            if filled == size:
                values = [endpoints[name] for name in names]
                return array.array("I", (values[o] for o in owner))
