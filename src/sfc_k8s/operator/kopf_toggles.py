"""Kopf's wait for its indexes to be filled, without waking every object's worker on each change.

Until every index is filled, Kopf (1.45) holds each object's first event in a worker that waits
on one ``ToggleSet`` ("all indexed"): a condition every per-object toggle shares, notified each
time a toggle is made or dropped, i.e. twice per object listed. Each notification wakes every
waiting worker, so a controller starting on P pods spends O(P²) wake-ups before its first
handler runs: with 3,600 pods (300 chains of 12 replicas) the controller's first reconcile came
297 s after its start, under load (docs/benchmarks.md, "Control plane at scale").

``install()`` replaces ``ToggleSet.wait_for`` with one that lets a single relay task wait on the
condition for each awaited state, the other waiters awaiting that relay: O(1) wake-ups per
notification, O(P) in all. Same result for every caller: a waiter returns once the set is in
the wanted state, checked at the moment it returns. Called at import by
``sfc_k8s.operator.controller``; unit-tested on Kopf's own ``ToggleSet`` in
``tests/unit/operator/test_kopf_toggles.py``; every controller test runs with it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kopf._cogs.aiokits import aiotoggles  # Kopf's private module: checked by install()

_ORIGINAL = aiotoggles.ToggleSet.wait_for
_RELAYS = "_sfc_relays"  # attribute of each ToggleSet: state -> [relay task, waiters]


async def relayed_wait_for(self: aiotoggles.ToggleSet, state: bool) -> None:
    """``ToggleSet.wait_for``, with one condition waiter per awaited state (see the module)."""
    state = bool(state)
    relays: dict[bool, list[Any]] = self.__dict__.setdefault(_RELAYS, {})
    while self.is_on() != state:
        entry = relays.get(state)
        if entry is None or entry[0].done():
            entry = relays[state] = [asyncio.ensure_future(_ORIGINAL(self, state)), 0]
        relay: asyncio.Future[None] = entry[0]
        entry[1] += 1
        try:
            await asyncio.shield(relay)
        except asyncio.CancelledError:
            if relay.cancelled() and not _current_cancelling():
                continue  # the relay was cancelled by its last waiter leaving: start another
            raise
        finally:
            entry[1] -= 1
            if entry[1] == 0 and not relay.done():
                relay.cancel()  # nobody waits any more


def _current_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def install() -> None:
    """Use ``relayed_wait_for`` for every ``ToggleSet`` (idempotent)."""
    if not callable(getattr(aiotoggles.ToggleSet, "is_on", None)):
        raise RuntimeError("kopf's ToggleSet changed: review sfc_k8s.operator.kopf_toggles")
    aiotoggles.ToggleSet.wait_for = relayed_wait_for  # type: ignore[method-assign]


__all__ = ["install", "relayed_wait_for"]
