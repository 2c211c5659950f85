"""An independent Maglev reference for the tests: the paper's population algorithm, written
here from its description (Eisenbud et al., NSDI 2016, section 3.4) and ``docs/dataplane.md``,
sharing no code with ``sfc_k8s.dataplane.maglev``, the builder that fills the data plane's
tables. Pure Python, for small tables (a 65,537-slot one takes a fraction of a second).

Used by ``tests/unit/dataplane/test_maglev.py`` (the builder against it on small tables) and
``tests/bpf/test_forwarding_oracle.py`` (where real packets go, against it).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Iterable, Iterator


def name(link_cid: int, endpoint_id: int) -> str:
    """An endpoint's name in its side's table: its link's cluster-wide id and its own stable id
    (``link<cid>/ep<id>``), the same on every node."""
    return f"link{link_cid}/ep{endpoint_id}"


def preferences(name: str, size: int) -> Iterator[int]:
    """The slots an endpoint asks for, in order: ``offset + j * skip (mod size)``, j = 0, 1, ...

    Both numbers come from a 16-byte BLAKE2b digest of the name (personalised "sfc-maglev"):
    the offset from its first eight bytes (little-endian) mod size, the skip from the last eight
    mod (size - 1), plus one. With ``size`` prime, the list visits every slot once.
    """
    digest = hashlib.blake2b(name.encode(), digest_size=16, person=b"sfc-maglev").digest()
    offset = int.from_bytes(digest[:8], "little") % size
    skip = int.from_bytes(digest[8:], "little") % (size - 1) + 1
    return ((offset + j * skip) % size for j in itertools.count())


@functools.lru_cache(maxsize=64)
def _table(names: tuple[str, ...], size: int) -> tuple[str, ...]:
    lists = {name: preferences(name, size) for name in names}
    owner: list[str | None] = [None] * size
    left = size
    # Endpoints in name order take turns; each claims the first slot of its list still free.
    for name in itertools.cycle(names):
        slot = next(s for s in lists[name] if owner[s] is None)
        owner[slot] = name
        left -= 1
        if left == 0:
            return tuple(n for n in owner if n is not None)
    raise AssertionError("unreachable")


def table(names: Iterable[str], size: int) -> tuple[str, ...]:
    """Slot -> endpoint name of the Maglev table of ``names`` (any order) with ``size`` slots."""
    ordered = tuple(sorted(set(names)))
    if not ordered:
        return ()
    return _table(ordered, size)
