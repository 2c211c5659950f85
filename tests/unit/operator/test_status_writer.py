"""The controller's status writer (sfc_k8s.operator.status_writer), with a recording ``patch``.

Covers: statuses submitted while one is being written coalesce, only the latest is written
next; a status equal to the stored one, or to the last one written, is not written; ``latest``
is what the next status should follow; the writer's own writes (late echoes included) are told
from someone else's, after which the server is trusted again; at most ``slots`` writes are in
flight; a failed write goes to ``on_error`` and the next submit writes again; a write to an
object that is gone is not taken as stored; ``forget`` cancels, ``flush`` waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from sfc_k8s.operator.status_writer import StatusWriter
from tests.fixtures.clock import settle


class FlakyError(Exception):
    pass


def st(n: int) -> dict[str, Any]:
    return {"observedGeneration": n}


class Server:
    """The ``patch`` callback: records writes, can be held open, fail, or find nothing."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str, Mapping[str, Any], Mapping[str, Any]]] = []
        self.gate: asyncio.Event | None = None
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail: list[Exception] = []
        self.gone: set[str] = set()

    async def patch(
        self, key: str, context: str, status: Mapping[str, Any], stored: Mapping[str, Any]
    ) -> bool:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail:
                raise self.fail.pop(0)
            if key in self.gone:
                return False
            self.writes.append((key, context, status, stored))
            return True
        finally:
            self.in_flight -= 1


def make_writer(
    server: Server, errors: list[tuple[str, Exception]] | None = None, slots: int = 4
) -> StatusWriter[str, str]:
    def on_error(key: str, err: Exception) -> None:
        if errors is not None:
            errors.append((key, err))

    return StatusWriter(server.patch, slots=slots, retry_on=(FlakyError,), on_error=on_error)


@pytest.mark.asyncio
async def test_statuses_submitted_during_a_write_coalesce_latest_wins() -> None:
    server = Server()
    writer = make_writer(server)
    server.gate = asyncio.Event()
    writer.submit("a", st(1), context="c1", stored={})
    await settle()  # st(1) is being written
    writer.submit("a", st(2), context="c2", stored={})
    writer.submit("a", st(3), context="c3", stored={})
    assert writer.latest("a", {}) == st(3)
    server.gate.set()
    await settle()
    # st(2) never written; st(3) written over st(1), which the writer knows is stored now
    assert server.writes == [("a", "c1", st(1), {}), ("a", "c3", st(3), st(1))]
    assert writer.latest("a", {}) == st(3)


@pytest.mark.asyncio
async def test_no_write_when_equal_to_what_is_stored() -> None:
    server = Server()
    writer = make_writer(server)
    writer.submit("a", st(1), context="c", stored=st(1))  # the watch shows it already
    await settle()
    assert server.writes == []
    writer.submit("a", st(2), context="c", stored=st(1))
    await settle()
    writer.submit("a", st(2), context="c", stored=st(1))  # the watch event is late: no rewrite
    await settle()
    assert [w[2] for w in server.writes] == [st(2)]


@pytest.mark.asyncio
async def test_own_echoes_are_recognised_and_foreign_writes_trusted() -> None:
    server = Server()
    writer = make_writer(server)
    for n in (1, 2):
        writer.submit("a", st(n), context="c", stored={})
        await settle()
    writer.observe("a", st(1))  # a late echo of this writer's first write
    writer.submit("a", st(2), context="c", stored=st(1))
    await settle()
    assert len(server.writes) == 2  # it still knows st(2) is stored
    writer.observe("a", st(9))  # someone else wrote the status
    assert writer.latest("a", st(9)) == st(9)
    writer.submit("a", st(2), context="c", stored=st(9))
    await settle()
    assert server.writes[-1][2:] == (st(2), st(9))  # written again, over what the server has


@pytest.mark.asyncio
async def test_writes_in_flight_are_bounded() -> None:
    server = Server()
    writer = make_writer(server, slots=2)
    server.gate = asyncio.Event()
    for key in "abcde":
        writer.submit(key, st(1), context="c", stored={})
    await settle()
    assert server.in_flight == 2
    server.gate.set()
    await settle()
    assert server.most_in_flight == 2
    assert sorted(w[0] for w in server.writes) == list("abcde")


@pytest.mark.asyncio
async def test_a_failed_write_is_reported_and_written_on_the_next_submit() -> None:
    server = Server()
    errors: list[tuple[str, Exception]] = []
    writer = make_writer(server, errors)
    server.fail = [FlakyError("503")]
    writer.submit("a", st(1), context="c", stored={})
    await settle()
    assert [(key, str(err)) for key, err in errors] == [("a", "503")]
    assert server.writes == []
    writer.submit("a", st(1), context="c", stored={})  # the retried reconcile
    await settle()
    assert [w[2] for w in server.writes] == [st(1)]


@pytest.mark.asyncio
async def test_a_status_for_a_gone_object_is_not_taken_as_stored() -> None:
    server = Server()
    writer = make_writer(server)
    server.gone.add("a")
    writer.submit("a", st(1), context="c", stored={})
    await settle()
    server.gone.clear()  # a new object of that name
    writer.submit("a", st(1), context="c", stored={})
    await settle()
    assert [w[2] for w in server.writes] == [st(1)]


@pytest.mark.asyncio
async def test_forget_cancels_and_flush_waits() -> None:
    server = Server()
    writer = make_writer(server)
    server.gate = asyncio.Event()
    writer.submit("a", st(1), context="c", stored={})
    writer.submit("b", st(1), context="c", stored={})
    await settle()
    writer.forget("a")
    assert writer.latest("a", st(7)) == st(7)
    server.gate.set()
    await writer.flush(1)
    assert [w[0] for w in server.writes] == ["b"]
