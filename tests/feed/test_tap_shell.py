"""The live tap's shell: it never disturbs the log it follows, and refuses unsafe addresses."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from feed.tap import start_tap
from tests.feed.rows import Log


class FakeSessionLog:
    """What ``start_tap`` needs of ``recorder.session.SessionLog``."""

    def __init__(self) -> None:
        self.observer: Any = None
        self.record_seq = 0
        self.session_id = 7


def test_a_failing_tap_detaches_and_the_log_goes_on() -> None:
    async def go() -> tuple[str | None, Any, int]:
        slog = FakeSessionLog()
        tap = await start_tap("127.0.0.1:0", slog, {"config": {}})
        try:
            log = Log()
            log.joined("A")
            slog.observer(log.rows[-1])
            joined = len(tap.fanout.state.markets)
            slog.observer(("not", "a", "row"))  # the tap breaks on it, and must not raise
            return tap.failed, slog.observer, joined
        finally:
            await tap.close()

    failed, observer, joined = asyncio.run(go())
    assert joined == 1
    assert failed is not None and observer is None


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("0.0.0.0:8765", "not loopback"),
        ("localhost", "HOST:PORT"),
        ("127.0.0.1:99999", "port"),
    ],
)
def test_unsafe_or_bad_addresses_are_refused(address: str, why: str) -> None:
    async def go() -> None:
        await start_tap(address, FakeSessionLog())

    with pytest.raises(ValueError, match=why):
        asyncio.run(go())
