"""A fake clock for the controller's asyncio components (not a test module).

``FakeClock.sleep`` is passed where the component takes a ``sleep`` function: it records the
delay and waits until the test moves virtual time past it with ``advance``. No real time passes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

SETTLE_ROUNDS = 50  # event-loop turns that let woken tasks run to their next await


async def settle() -> None:
    """Let every task that is ready run until it waits again (yields, never sleeps)."""
    for _ in range(SETTLE_ROUNDS):
        await asyncio.sleep(0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []  # every delay asked for, in order
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + delay, next(self._order), future))
        await future

    @property
    def waiting(self) -> int:
        """Sleepers not woken yet (cancelled ones included until their time comes)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper whose deadline is reached, in order."""
        target = self.now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, future = heapq.heappop(self._sleepers)
            self.now = when
            if not future.done():
                future.set_result(None)
            await settle()
        self.now = target
