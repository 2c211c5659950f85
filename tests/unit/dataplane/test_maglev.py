"""The Maglev table builder (pure Python, no root):

- the table size is a prime and holds SFC_MAX_ENDPOINTS_PER_SIDE endpoints;
- the same endpoint set gives the same table whatever the order (any process agrees);
- fair share: every endpoint owns floor(M/N) or ceil(M/N) slots, for N up to 1024;
- minimal disruption: adding or removing one endpoint out of N moves about 1/N of the slots,
  almost all of them to (or from) that endpoint;
- an empty set gives an empty table; more endpoints than slots is refused;
- the C population loop (built by ``make bpf``) is loaded and gives exactly the table of the
  pure-Python reference for many endpoint sets and sizes;
- both give exactly the table of ``tests/maglev_reference.py``, a reference written apart from
  the product's code, on small tables.
"""

from __future__ import annotations

from collections import Counter

import pytest

from sfc_k8s.dataplane import maglev
from sfc_k8s.dataplane.structs import MAGLEV_SIZE, MAX_ENDPOINTS_PER_SIDE
from tests import maglev_reference


def names(n: int, prefix: str = "veth") -> dict[str, int]:
    return {f"{prefix}{i:04x}": i + 1 for i in range(n)}


def is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))


def test_table_size_is_prime_and_roomy() -> None:
    assert is_prime(MAGLEV_SIZE)
    assert MAGLEV_SIZE >= 64 * MAX_ENDPOINTS_PER_SIDE


def test_same_set_same_table_in_any_order() -> None:
    eps = names(7)
    reordered = dict(reversed(list(eps.items())))
    assert maglev.build_table(eps) == maglev.build_table(reordered)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 64, MAX_ENDPOINTS_PER_SIDE])
def test_fair_share(n: int) -> None:
    table = maglev.build_table(names(n))
    assert len(table) == MAGLEV_SIZE
    counts = Counter(table)
    assert len(counts) == n
    assert max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize("n", [3, 10, 100])
def test_removing_one_moves_only_its_slots(n: int) -> None:
    eps = names(n)
    before = maglev.build_table(eps)
    gone = next(iter(eps))
    after = maglev.build_table({k: v for k, v in eps.items() if k != gone})
    gone_value = eps[gone]
    moved_others = sum(1 for b, a in zip(before, after, strict=True) if b not in (a, gone_value))
    # Maglev's bound: a small fraction of one share shuffles among the survivors.
    assert moved_others <= 0.02 * MAGLEV_SIZE
    assert gone_value not in after


@pytest.mark.parametrize("n", [3, 10, 100])
def test_adding_one_takes_a_fair_share_from_the_others(n: int) -> None:
    eps = names(n)
    before = maglev.build_table(eps)
    after = maglev.build_table({**eps, "newcomer": 9999})
    changed = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    to_new = sum(1 for _, a in changed if a == 9999)
    assert abs(to_new - MAGLEV_SIZE / (n + 1)) <= 1
    assert len(changed) - to_new <= 0.02 * MAGLEV_SIZE


def test_empty_and_oversized() -> None:
    for build in (maglev.build_table, maglev.build_table_py):
        assert len(build({})) == 0
        with pytest.raises(ValueError, match="do not fit"):
            build(names(8), size=7)


def test_native_builder_is_built() -> None:
    assert maglev.native_available(), f"{maglev.NATIVE_PATH} missing: run 'make bpf'"


@pytest.mark.parametrize(
    ("endpoints", "size"),
    [
        (names(1), MAGLEV_SIZE),
        (names(2), MAGLEV_SIZE),
        (names(3, "tb-"), MAGLEV_SIZE),
        (names(16, "sfc"), MAGLEV_SIZE),
        (names(100), MAGLEV_SIZE),
        (names(MAX_ENDPOINTS_PER_SIDE, "x"), MAGLEV_SIZE),
        ({"a": 0, "b": 2**32 - 1, "c": 7}, MAGLEV_SIZE),  # any u32 value, 0 included
        (names(5), 13),
        (names(13), 13),  # as many endpoints as slots
        (names(40), 101),
    ],
)
def test_native_table_equals_reference(endpoints: dict[str, int], size: int) -> None:
    assert maglev.build_table(endpoints, size) == maglev.build_table_py(endpoints, size)


@pytest.mark.parametrize(
    ("count", "size"), [(1, 7), (2, 7), (3, 13), (5, 13), (13, 13), (7, 101), (40, 251), (3, 1009)]
)
def test_builder_equals_the_independent_reference(count: int, size: int) -> None:
    """Both builders of the product against ``tests/maglev_reference.py``, written apart from
    them (the one above compares the product's C loop with its own Python loop)."""
    endpoints = names(count, "ref")
    expected = maglev_reference.table(endpoints, size)
    for build in (maglev.build_table, maglev.build_table_py):
        table = build(endpoints, size)
        assert [endpoints[name] for name in expected] == list(table)
