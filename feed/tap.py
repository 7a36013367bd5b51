"""The live tap: the running session served to actors in Kalshi's protocol (``--tap ADDRESS``).

``start_tap(address, session_log, hello_info)`` tees the recorder's ``SessionLog`` (its
``observer``) into one ``feed.fanout.Fanout`` and serves it over WebSocket. The observer runs on
the recorder's event loop, in its hot path, and only updates books and appends to bounded
per-consumer queues: it never awaits, so no consumer can slow the recorder or cost it a frame
(consumers never cost the recording: ARCHITECTURE.md, Invariants). If the tap itself ever fails
on a row, it detaches and says so once: the recording goes on untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection

from feed.fanout import DEFAULT_MAX_QUEUE, Fanout
from feed.server import Listening, pump, queue_limit, start_server

log = logging.getLogger("feed.tap")

MARK_INTERVAL_S = 1.0
"""A ``tap_mark`` at least this often while records flow, so an idle consumer still learns it is
caught up (marks also go out every ``Fanout.mark_every`` records)."""


class ObservableLog(Protocol):
    """What the tap needs of ``recorder.session.SessionLog`` (the recorder is never imported)."""

    observer: Any
    record_seq: int
    session_id: int


class TapHandle:
    """A running tap: ``url``, ``fanout`` (for tests and metrics) and ``await close()``."""

    def __init__(self, listening: Listening, fanout: Fanout, session_log: ObservableLog) -> None:
        self.listening = listening
        self.fanout = fanout
        self.session_log = session_log
        self.failed: str | None = None
        self._marker = asyncio.create_task(self._marks())

    @property
    def url(self) -> str:
        return self.listening.url

    @property
    def port(self) -> int:
        return self.listening.port

    def observe(self, row: tuple[Any, ...]) -> None:
        try:
            self.fanout.on_row(row)
        except Exception as exc:  # never let the tap disturb the recording
            self.failed = f"{type(exc).__name__}: {exc}"
            self.session_log.observer = None
            log.error("tap stopped following the session (recording continues): %s", self.failed)

    async def _marks(self) -> None:
        last = -1
        while True:
            await asyncio.sleep(MARK_INTERVAL_S)
            rs = self.fanout.state.record_seq
            if rs != last:
                last = rs
                self.fanout.mark()

    async def _handler(self, ws: ServerConnection) -> None:
        c = self.fanout.add(queue_limit(ws, self.max_queue))
        try:
            await pump(ws, c, None)
        finally:
            self.fanout.remove(c)

    max_queue = DEFAULT_MAX_QUEUE

    async def close(self) -> None:
        """Stop serving: detach from the log, close every consumer's connection."""
        if self.session_log.observer == self.observe:
            self.session_log.observer = None
        self._marker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._marker
        self.listening.server.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.listening.server.wait_closed()


async def start_tap(
    address: str,
    session_log: ObservableLog,
    hello_info: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
) -> TapHandle:
    """Serve ``session_log``'s session on ``address`` (``HOST:PORT``; loopback unless a token is
    given). Call it before the session's first record so the tap sees ``session_start``;
    ``hello_info`` (e.g. the redacted settings) fills the hello until then.
    """
    fanout = Fanout("live")
    if hello_info:
        fanout.state.settings = dict(hello_info)
    fanout.state.session_id = session_log.session_id
    holder: dict[str, TapHandle] = {}

    async def handler(ws: ServerConnection) -> None:
        await holder["tap"]._handler(ws)

    listening = await start_server(address, handler, token)
    tap = TapHandle(listening, fanout, session_log)
    tap.max_queue = max_queue
    holder["tap"] = tap
    session_log.observer = tap.observe
    log.info("tap serving session %s on %s", session_log.session_id, tap.url)
    return tap
