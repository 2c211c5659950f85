"""Typed access to the pinned maps: single elements, batched walks, per-CPU sums, and the
memory-mapped Maglev tables.

Keys and values are the ctypes mirrors of ``structs``. Used by the manager and the tests.
"""

from __future__ import annotations

import array
import ctypes
import mmap
from collections.abc import Container, Iterable, Iterator
from typing import TypeVar, cast

from sfc_k8s.dataplane import _libbpf as bpf
from sfc_k8s.dataplane.errors import BpfError

K = TypeVar("K", bound=ctypes.Structure | ctypes.c_uint32)
V = TypeVar("V", bound=ctypes.Structure | ctypes.c_uint32)

WALK_BATCH = 4096


def lookup(fd: int, key: ctypes.Structure | ctypes.c_uint32, value_type: type[V]) -> V | None:
    value = value_type()
    return value if bpf.map_lookup(fd, key, value) else None


def walk(fd: int, key_type: type[K], value_type: type[V]) -> Iterator[tuple[K, V]]:
    """Every (key, value) of a hash map, read in batches (a snapshot per batch).

    Not for per-CPU maps: their values are one per CPU (use ``keys`` and ``percpu``).
    """
    ksize, vsize = ctypes.sizeof(key_type), ctypes.sizeof(value_type)
    for keys, values in walk_raw(fd, ksize, vsize):
        for i in range(len(keys) // ksize):
            key = key_type.from_buffer_copy(keys, i * ksize)
            value = value_type.from_buffer_copy(values, i * vsize)
            yield cast(K, key), cast(V, value)


def walk_raw(fd: int, key_size: int, value_size: int) -> Iterator[tuple[memoryview, memoryview]]:
    """A hash map's content in batches: (keys, values) laid end to end, for bulk filtering
    (``memoryview.cast`` and strided slices) where a ctypes object per entry costs too much."""
    keys = ctypes.create_string_buffer(key_size * WALK_BATCH)
    values = ctypes.create_string_buffer(value_size * WALK_BATCH)
    tokens = [ctypes.create_string_buffer(16), ctypes.create_string_buffer(16)]
    first = True
    while True:
        token_in = None if first else tokens[0]
        count, more = bpf.map_lookup_batch(
            fd, token_in, tokens[1], keys=keys, values=values, count=WALK_BATCH
        )
        first = False
        if count:
            yield (
                memoryview(keys.raw[: count * key_size]),
                memoryview(values.raw[: count * value_size]),
            )
        if not more:
            return
        tokens.reverse()


def delete_raw(fd: int, keys: bytes, key_size: int) -> int:
    """Delete keys laid end to end in batches, skipping the ones already gone; returns how
    many were deleted."""
    total = len(keys) // key_size
    deleted = done = 0
    while done < total:
        chunk = min(total - done, WALK_BATCH)
        buf = ctypes.create_string_buffer(
            keys[done * key_size : (done + chunk) * key_size], chunk * key_size
        )
        processed, err = bpf.map_delete_batch(fd, buf, chunk)
        deleted += processed
        done += processed + (1 if err else 0)  # skip the key that was already gone
    return deleted


def keys(fd: int, key_type: type[K]) -> list[K]:
    """Every key of a hash map (also per-CPU ones, which ``walk`` cannot read)."""
    result: list[K] = []
    current: K | None = None
    while True:
        nxt = key_type()
        if not bpf.map_next_key(fd, current, nxt):
            return result
        result.append(nxt)
        current = nxt


def delete_all(fd: int, keys: Iterable[ctypes.Structure | ctypes.c_uint32]) -> int:
    """Delete the keys that are still present; returns how many were."""
    deleted = 0
    for key in keys:
        deleted += bpf.map_delete(fd, key)
    return deleted


def _percpu_stride(value_size: int) -> int:
    """Bytes between two CPUs' values in a per-CPU map's buffer (each rounded up to 8)."""
    return (value_size + 7) // 8 * 8


def percpu(fd: int, key: ctypes.Structure | ctypes.c_uint32, value_type: type[V]) -> list[V] | None:
    """The per-CPU values of ``key`` in a per-CPU map, one per possible CPU."""
    ncpus = bpf.num_possible_cpus()
    stride = _percpu_stride(ctypes.sizeof(value_type))
    buf = ctypes.create_string_buffer(stride * ncpus)
    if not bpf.map_lookup(fd, key, buf):
        return None
    return [cast(V, value_type.from_buffer_copy(buf.raw, i * stride)) for i in range(ncpus)]


def percpu_array_sums(
    fd: int, value_type: type[ctypes.Structure], wanted: Container[int]
) -> dict[int, list[int]]:
    """For each index of a per-CPU array in ``wanted``, its value's fields summed over CPUs,
    read in batches (a few calls for the whole array, not one per index). ``value_type``
    must be made of 64-bit unsigned fields only (counters)."""
    ncpus = bpf.num_possible_cpus()
    words = _percpu_stride(ctypes.sizeof(value_type)) // 8  # u64 words per CPU's value
    fields = ctypes.sizeof(value_type) // 8
    result: dict[int, list[int]] = {}
    for keys, values in walk_raw(fd, 4, words * 8 * ncpus):
        indexes = keys.cast("I")
        counts = values.cast("Q")
        for i in (i for i, index in enumerate(indexes) if index in wanted):
            base = i * ncpus * words
            result[indexes[i]] = [
                sum(counts[base + cpu * words + f] for cpu in range(ncpus)) for f in range(fields)
            ]
    return result


def percpu_set_zero(fd: int, key: ctypes.Structure | ctypes.c_uint32, value_type: type[V]) -> None:
    """Set every CPU's value of ``key`` to zero (creating the element in a hash map)."""
    size = _percpu_stride(ctypes.sizeof(value_type)) * bpf.num_possible_cpus()
    bpf.map_update(fd, key, ctypes.create_string_buffer(size))


def percpu_zero_all(fd: int, entries: int, value_type: type[ctypes.Structure]) -> None:
    """Zero every CPU's value of every element of a per-CPU array, in one batch call."""
    keys = (ctypes.c_uint32 * entries)(*range(entries))
    values = ctypes.create_string_buffer(
        _percpu_stride(ctypes.sizeof(value_type)) * bpf.num_possible_cpus() * entries
    )
    bpf.map_update_batch(fd, keys, values, entries)


class MaglevTableView:
    """A Maglev table map (``struct sfc_maglev_entry`` values, ``BPF_F_MMAPABLE``) mapped into
    memory: two copies of the table, interleaved, and a control entry after them naming the
    copy the program uses. Write the idle copy with ``write_idle``, then ``flip``."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        length = -(-(size + 1) * 8 // mmap.PAGESIZE) * mmap.PAGESIZE
        try:
            flags = mmap.MAP_SHARED | mmap.MAP_POPULATE  # one call maps every page: no faults
            self._area = mmap.mmap(fd, length, flags, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as err:
            raise BpfError(f"failed to map a Maglev table: {err}", err.errno or 0) from err
        self._words = memoryview(self._area).cast("I")

    def close(self) -> None:
        self._words.release()
        self._area.close()

    def __enter__(self) -> MaglevTableView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def active(self) -> int:
        """The copy in use (0 or 1), or ``structs.MAGLEV_EMPTY``-like values for none."""
        return int(self._words[2 * self.size])

    def write_idle(self, values: array.array[int], idle: int) -> None:
        """Write ``values`` (``size`` endpoint slots) into copy ``idle`` (0 or 1)."""
        if len(values) != self.size:
            raise ValueError(f"{len(values)} values for a table of {self.size} slots")
        self._words[idle : 2 * self.size : 2] = memoryview(values)

    def flip(self, control: int) -> None:
        """Point the program at copy ``control`` (or mark the table empty) with one element
        update through the kernel, after the copy's writes."""
        value = ctypes.c_uint32 * 2
        bpf.map_update(self.fd, ctypes.c_uint32(self.size), value(control, 0))
