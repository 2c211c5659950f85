"""Kopf's "all indexed" wait with one relay per awaited state (``operator.kopf_toggles``).

Covers, on Kopf's own ``ToggleSet``: waiters return once every toggle is on or dropped, and
not before; the set's state is checked about once per change however many wait (Kopf's own
wait checked it once per waiter per change: O(objects²) at a start on many objects); a waiter
cancelled leaves the others waiting and the relay goes when nobody waits.
"""

from __future__ import annotations

import asyncio

from kopf._cogs.aiokits import aiotoggles

from sfc_k8s.operator import kopf_toggles

kopf_toggles.install()
OBJECTS = 200


class Counted(aiotoggles.ToggleSet):
    """A ToggleSet that counts the evaluations of its state."""

    evaluations = 0

    def is_on(self) -> bool:
        self.evaluations += 1
        return super().is_on()


def test_waiters_return_once_every_toggle_is_dropped_checking_once_per_change() -> None:
    async def scenario() -> int:
        toggles = Counted(all)
        made = [await toggles.make_toggle(name=f"object-{i}") for i in range(OBJECTS)]
        waiters = [asyncio.create_task(toggles.wait_for(True)) for _ in range(OBJECTS)]
        await asyncio.sleep(0.01)
        for toggle in made[:-1]:  # each object's worker drops its toggle in its own turn
            await toggles.drop_toggle(toggle)
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        assert not any(w.done() for w in waiters)  # one object still not indexed
        await toggles.drop_toggle(made[-1])
        await asyncio.wait_for(asyncio.gather(*waiters), 5)
        return toggles.evaluations

    evaluations = asyncio.run(scenario())
    # one relay re-checks on each change, each waiter once at the start and once at the end
    assert evaluations <= 5 * OBJECTS, evaluations


def test_a_cancelled_waiter_leaves_the_others_waiting() -> None:
    async def scenario() -> None:
        toggles = aiotoggles.ToggleSet(all)
        toggle = await toggles.make_toggle(name="object")
        first = asyncio.create_task(toggles.wait_for(True))
        second = asyncio.create_task(toggles.wait_for(True))
        await asyncio.sleep(0.01)
        first.cancel()
        await asyncio.sleep(0.01)
        assert first.cancelled() and not second.done()
        await toggle.turn_to(True)
        await asyncio.wait_for(second, 5)
        second_alone = asyncio.create_task(toggles.wait_for(False))
        await asyncio.sleep(0.01)
        second_alone.cancel()
        await asyncio.sleep(0.01)
        relays = toggles.__dict__[kopf_toggles._RELAYS]
        assert all(relay.done() for relay, _ in relays.values())  # nobody waits: relay gone

    asyncio.run(scenario())


def test_a_set_already_in_the_state_returns_at_once() -> None:
    async def scenario() -> None:
        toggles = aiotoggles.ToggleSet(all)
        await asyncio.wait_for(toggles.wait_for(True), 1)

    asyncio.run(scenario())
