"""Maglev lookup tables (Eisenbud et al., NSDI 2016) for choosing the endpoint of a new flow.

Each endpoint gets a permutation of the table's slots from two hashes of its stable name (the
host interface name, derived from the pod); endpoints take turns claiming their next free
preferred slot until the table is full. Every endpoint gets ``size / n`` slots (plus or minus
one), and adding or removing one endpoint moves only about ``1/n`` of the slots. Endpoints are
taken in name order, so the same set gives the same table in any process. Called by the
manager whenever the active endpoints of a side change.
"""

from __future__ import annotations

import array
import hashlib
from collections.abc import Mapping

from sfc_k8s.dataplane.structs import MAGLEV_SIZE


def permutation(name: str, size: int = MAGLEV_SIZE) -> tuple[int, int]:
    """(offset, skip) of the endpoint's preference list: slot j is offset + j * skip mod size."""
    digest = hashlib.blake2b(name.encode(), digest_size=16, person=b"sfc-maglev").digest()
    h1 = int.from_bytes(digest[:8], "little")
    h2 = int.from_bytes(digest[8:], "little")
    return h1 % size, h2 % (size - 1) + 1


def build_table(endpoints: Mapping[str, int], size: int = MAGLEV_SIZE) -> array.array[int]:
    """The lookup table: ``size`` slots holding the value (ifindex) of an endpoint each.

    ``endpoints`` maps a stable name to the value to store; ``size`` must be a prime larger
    than the number of endpoints. An empty mapping gives an empty table.
    """
    names = sorted(endpoints)
    n = len(names)
    if n == 0:
        return array.array("I")
    if n > size:
        raise ValueError(f"{n} endpoints do not fit a table of {size} slots")
    params = [permutation(name, size) for name in names]
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
