"""The data plane's batch reads, against the per-link reads they replace (real links, counters
moved by BPF_PROG_TEST_RUN):

- ``local_counters`` (one walk of the endpoint array and one of the per-CPU counters) gives
  every local endpoint's counters, equal to what ``endpoints(link)`` reads link by link;
- ``statuses`` gives the same endpoints and counters as ``status`` of each link;
- ``endpoints(link, counters=False)`` is ``endpoints(link)`` with zero counters, and reads no
  per-CPU counter at all (what a reconcile asks for);
- a link deleted between the check of its pin and the opening of it (by another thread)
  is ``LinkNotFound``, and ``statuses`` leaves it out instead of failing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sfc_k8s.dataplane import EndpointCounters, LinkNotFound, maps
from tests.bpf.conftest import Topology
from tests.fixtures import frames as f


def traffic(t: Topology) -> None:
    """A few flows each way on both links, so that every endpoint has its own counts."""
    for i in range(24):
        frame = f.eth(f.ETH_IP, f.ipv4("10.9.0.1", "10.9.0.2", f.UDP, f.l4(20000 + i, 53)))
        t.h.run(t["a0" if i % 2 else "a1"], frame)
        t.h.run(t["c0"], frame)


def per_link(t: Topology) -> dict[str, EndpointCounters]:
    return {
        ep.ifname: ep.counters
        for link in t.h.dp.links()
        for ep in t.h.dp.endpoints(link)
        if not ep.node
    }


def test_local_counters_equal_the_per_link_reads(t: Topology) -> None:
    traffic(t)
    expected = per_link(t)
    assert any(c.tx_packets for c in expected.values())  # the reads have something to compare
    assert any(c.rx_packets for c in expected.values())
    assert t.h.dp.local_counters() == expected
    assert set(expected) == {t[r] for r in ("a0", "a1", "b0", "b1", "b2", "c0", "d0")}


def test_statuses_equal_each_links_status(t: Topology) -> None:
    traffic(t)
    statuses = {s.name: s for s in t.h.dp.statuses()}
    assert statuses == {link: t.h.dp.status(link) for link in t.h.dp.links()}


def test_endpoints_without_counters_read_none(t: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    traffic(t)
    full = t.h.dp.endpoints("main")

    def no_counter_reads(*_: Any) -> None:
        raise AssertionError("a per-CPU counter was read")

    monkeypatch.setattr(maps, "percpu", no_counter_reads)
    monkeypatch.setattr(maps, "percpu_array_sums", no_counter_reads)
    bare = t.h.dp.endpoints("main", counters=False)
    assert bare == [dataclasses.replace(ep, counters=EndpointCounters()) for ep in full]
    assert t.h.dp.endpoints_of(["main"], counters=False) == {"main": bare}


class _VanishingPin:
    """``Pins`` whose link-info pin of ``link`` exists when checked and is gone when opened,
    as when another thread deletes the link between the two."""

    def __init__(self, pins: Any, link: str) -> None:
        self._pins, self._link, self._asked = pins, link, 0

    def link_info(self, name: str) -> str:
        if name != self._link:
            return str(self._pins.link_info(name))
        self._asked += 1
        real = self._pins.link_info("main")  # exists: passes the check
        return str(real) if self._asked % 2 else str(real) + "-gone"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pins, name)


def test_a_link_deleted_while_read_is_not_found(
    t: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    dp = t.h.dp
    monkeypatch.setattr(dp, "pins", _VanishingPin(dp.pins, "ghost"))
    with pytest.raises(LinkNotFound):
        dp.status("ghost")
    monkeypatch.setattr(dp, "links", lambda: ["ghost", "main", "other"])
    assert [s.name for s in dp.statuses()] == ["main", "other"]
