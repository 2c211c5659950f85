"""Writes objects' statuses off the caller's path: coalesced per key, latest wins, no-op skipped.

The controller (``sfc_k8s.operator.controller``) computes a chain's status at the end of every
reconcile and hands it to ``submit``. A status write can be slow (a server that evaluates the
chain's CEL rules on every write), and the next CrossConnection update of the chain must not
wait behind it, so writes happen in one background task per key:

- successive statuses of one key coalesce: while one is being written, only the latest of the
  ones submitted meanwhile is written next;
- a status equal to what the server holds (the last one this writer wrote, or the one the
  caller read from its watch) is not written;
- at most ``slots`` writes are in flight over all keys, leaving connections to other writes;
- ``observe(key, stored)``, called with what a watch event shows, tells this writer's own
  writes (and late echoes of them) from someone else's: only for the latter does the writer
  forget what it wrote and trust the server again;
- a write failing with one of ``retry_on`` is handed to ``on_error`` (the controller retries
  the whole reconcile, which submits a fresh status); the key's later statuses wait for it.

Pure asyncio, no I/O: ``patch(key, context, status, stored)`` does the write and returns False
when there was nothing to write to (the object is gone). Unit-tested in
``tests/unit/operator/test_status_writer.py``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
C = TypeVar("C")

Status = Mapping[str, Any]
ECHOES = 8  # own writes remembered to recognise their (possibly late) watch events


@dataclass
class _Slot(Generic[C]):
    """One key's state: what waits to be written, what the server holds, the writer task."""

    pending: tuple[C, Status, Status] | None = None  # (context, status, stored as read)
    known: Status | None = None  # what the server holds, as far as this writer knows
    written: deque[Status] = field(default_factory=lambda: deque(maxlen=ECHOES))
    task: asyncio.Task[None] | None = None


class StatusWriter(Generic[K, C]):
    """Background, coalescing status writes; see the module docstring."""

    def __init__(
        self,
        patch: Callable[[K, C, Status, Status], Awaitable[bool]],
        *,
        slots: int,
        retry_on: tuple[type[Exception], ...],
        on_error: Callable[[K, Exception], None],
    ) -> None:
        self._patch = patch
        self._slots = asyncio.Semaphore(slots)
        self._retry_on = retry_on
        self._on_error = on_error
        self._keys: dict[K, _Slot[C]] = {}

    def latest(self, key: K, stored: Status) -> Status:
        """The status the next one should follow: the one waiting to be written, else what the
        server holds as far as this writer knows, else ``stored`` (what the caller read)."""
        slot = self._keys.get(key)
        if slot is None:
            return stored
        if slot.pending is not None:
            return slot.pending[1]
        return slot.known if slot.known is not None else stored

    def submit(self, key: K, status: Status, *, context: C, stored: Status) -> None:
        """Write ``status`` soon, unless a later one comes first; ``stored``: what the caller
        last read from the server, ``context``: passed back to ``patch``."""
        slot = self._keys.setdefault(key, _Slot())
        slot.pending = (context, status, stored)
        if slot.task is None or slot.task.done():
            slot.task = asyncio.create_task(self._drain(key, slot))

    def observe(self, key: K, stored: Status) -> None:
        """A watch event showed ``stored``: unless this writer wrote it, trust the server."""
        slot = self._keys.get(key)
        if slot is not None and not any(stored == s for s in slot.written):
            slot.known = None

    def forget(self, key: K) -> None:
        """The object is gone: cancel its write."""
        slot = self._keys.pop(key, None)
        if slot is not None and slot.task is not None:
            slot.task.cancel()

    async def flush(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the writes under way (the operator is stopping)."""
        tasks = [s.task for s in self._keys.values() if s.task is not None and not s.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def _drain(self, key: K, slot: _Slot[C]) -> None:
        while slot.pending is not None:
            async with self._slots:
                if slot.pending is None:
                    return
                context, status, stored = slot.pending
                slot.pending = None
                try:
                    await self._write(key, slot, context, status, stored)
                except self._retry_on as err:
                    self._on_error(key, err)
                    return

    async def _write(
        self, key: K, slot: _Slot[C], context: C, status: Status, stored: Status
    ) -> None:
        held = slot.known if slot.known is not None else stored
        if dict(held) != dict(status):
            if not await self._patch(key, context, status, held):
                return  # nothing to write to: the object is gone
        elif slot.written and slot.written[-1] == status:
            slot.known = status
            return
        slot.known = status
        slot.written.append(status)


__all__ = ["StatusWriter"]
