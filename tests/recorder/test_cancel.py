"""The connection's helper loops end when cancelled, even in the turn their event is set.

On Python 3.11 ``asyncio.wait_for`` returns normally when its task is cancelled in the same turn
of the loop as what it awaits completes, so the cancel is lost. The recorder's clock task waits
on an event that frames set; a close arriving with a frame let it lose its cancel, loop on, and
the session waiting for it hung until the end of the run (CI failed on it: the third 4001 close
of ``test_a_repeating_4xxx_close...`` was never seen). ``recorder.connection.woken`` is the wait
those loops use instead; ruff bans ``asyncio.wait_for`` outside the tests (TID251).
"""

from __future__ import annotations

import asyncio

from recorder.connection import woken


async def _clock(event: asyncio.Event, ticks: list[bool]) -> None:
    """The shape of ``BookConnection._ticker``: wake on the event or a timeout, forever."""
    while True:
        ticks.append(await woken(event, 0.05))
        event.clear()


def test_a_cancel_in_the_turn_the_event_is_set_ends_the_loop() -> None:
    async def main() -> tuple[bool, bool, list[bool]]:
        event = asyncio.Event()
        ticks: list[bool] = []
        task = asyncio.create_task(_clock(event, ticks))
        await asyncio.sleep(0)  # the task now waits on the event
        event.set()
        task.cancel()  # same turn: the wait completes and is cancelled at once
        done, _ = await asyncio.wait({task}, timeout=5)
        if not done:
            task.cancel()  # lost its cancel: stop it so the test ends
            await asyncio.wait({task}, timeout=5)
        return bool(done), task.cancelled(), ticks

    done, cancelled, ticks = asyncio.run(main())
    assert done and cancelled, f"the loop lost its cancel and ticked {len(ticks)} times"


def test_woken_says_whether_the_event_was_set() -> None:
    async def main() -> tuple[bool, bool]:
        event = asyncio.Event()
        timed_out = await woken(event, 0.01)
        asyncio.get_running_loop().call_soon(event.set)
        return timed_out, await woken(event, 5)

    assert asyncio.run(main()) == (False, True)
