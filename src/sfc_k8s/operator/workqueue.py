"""A per-key work queue: coalesced kicks, one run of a key at a time, retries with back-off.

The controller (``sfc_k8s.operator.controller``) reconciles a chain when the chain, one of its
pods or one of its CrossConnections changes. Those events arrive from three Kopf watch streams
at once; this queue turns them into reconciles of one chain key:

- ``kick(key)`` runs the work for ``key`` now, unless it is running already: then the key is
  only marked dirty and the running call runs the work once more when it finishes. A burst of
  events for one key thus costs a few runs, each reading the freshest state, and two runs of
  one key never overlap (runs of different keys do).
- a run failing with one of the ``retry_on`` exceptions is retried later, with exponential
  back-off per key (``Backoff``), the attempt count reset by the next success; other keys are
  not delayed. Other exceptions propagate to the caller of ``kick``.
- ``later(key)`` runs the key in the background (from within the run of another key);
  ``forget(key)`` drops its pending retry (the object is gone).

Pure asyncio, no I/O: ``tests/unit/operator/test_workqueue.py`` drives it with a fake clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
RetryHook = Callable[[K, int, float, BaseException], None]


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off: ``base`` seconds after the first failure, doubling up to ``cap``."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retrying after the ``attempt``-th consecutive failure (1..)."""
        return float(min(self.base * 2 ** max(attempt - 1, 0), self.cap))


class WorkQueue(Generic[K]):
    """Runs ``work(key)`` for kicked keys: coalesced, serialised per key, retried on failure."""

    def __init__(
        self,
        work: Callable[[K], Awaitable[None]],
        *,
        retry_on: tuple[type[BaseException], ...],
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        on_retry: RetryHook[K] | None = None,
    ) -> None:
        """``on_retry(key, attempt, delay, error)`` is told of every retry scheduled (logs)."""
        self._work = work
        self._retry_on = retry_on
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._on_retry = on_retry
        self._running: set[K] = set()
        self._dirty: set[K] = set()
        self._attempts: dict[K, int] = {}
        self._timers: dict[K, asyncio.Task[None]] = {}

    def running(self, key: K) -> bool:
        return key in self._running

    def attempts(self, key: K) -> int:
        """Consecutive failures of ``key`` since its last success."""
        return self._attempts.get(key, 0)

    def scheduled(self, key: K) -> bool:
        """A retry or background run of ``key`` is waiting."""
        return key in self._timers

    async def kick(self, key: K) -> None:
        """Run the work for ``key`` now, or once more after the run already going on for it."""
        if key in self._running:
            self._dirty.add(key)
            return
        self._running.add(key)
        try:
            while True:
                self._dirty.discard(key)
                if not await self._run(key) or key not in self._dirty:
                    break
        finally:
            self._running.discard(key)

    async def _run(self, key: K) -> bool:
        try:
            await self._work(key)
        except self._retry_on as err:
            self.retry(key, err)
            return False
        self._attempts.pop(key, None)
        return True

    def retry(self, key: K, err: BaseException) -> None:
        """Count a failure of ``key`` and run it again after its back-off delay.

        Also for failures outside the work itself (the controller's status writer): they share
        the key's attempt count. A retry already waiting is kept (it comes sooner).
        """
        attempt = self._attempts.get(key, 0) + 1
        self._attempts[key] = attempt
        delay = self._backoff.delay(attempt)
        if self._on_retry is not None:
            self._on_retry(key, attempt, delay, err)
        self._schedule(key, delay)

    def later(self, key: K) -> None:
        """Run ``key`` in the background as soon as possible (no-op if a run is waiting)."""
        self._schedule(key, 0.0)

    def _schedule(self, key: K, delay: float) -> None:
        if key not in self._timers:
            self._timers[key] = asyncio.create_task(self._timer(key, delay))

    async def _timer(self, key: K, delay: float) -> None:
        await self._sleep(delay)
        del self._timers[key]
        await self.kick(key)

    def forget(self, key: K) -> None:
        """Drop ``key``'s waiting retry and its attempt count (its object is gone)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._attempts.pop(key, None)

    def close(self) -> None:
        """Cancel every waiting retry (the operator is stopping)."""
        for key in list(self._timers):
            self.forget(key)


__all__ = ["Backoff", "WorkQueue"]
