"""One WebSocket connection to the exchange: the socket, reconnects and command pacing.

The thin asyncio shell around ``recorder.connection_core.ConnectionCore`` (which owns seqs,
subscriptions, books and deadlines): it reads frames, records each one verbatim *before* the core
interprets it (raw first: ARCHITECTURE.md, Invariants), feeds the core frames and clock ticks, and
carries out the effects it returns — commands go out paced by a token bucket, decisions go to the
session log, lifecycle events go to the app through a callback. It does not import the app (no
import cycle).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, assert_never, cast

import orjson
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import DATA_OPCODES, Opcode
from websockets.protocol import State

from recorder import connection_core as cc
from recorder import protocol
from recorder import subscriptions as sm
from recorder.auth import WS_PATH, Signer
from recorder.book import OrderBook
from recorder.config import Settings
from recorder.connection_core import ConnectionCore, CoreSettings, Effect, LifecycleEvent
from recorder.framing import FrameSplitter
from recorder.metrics import Metrics
from recorder.session import SessionLog
from schemas.decisions import ConnectFailed
from schemas.log import Decision

log = logging.getLogger("recorder.connection")

_PRIORITY = {
    sm.Purpose.LIFECYCLE: 0,
    sm.Purpose.JOIN: 1,
    sm.Purpose.RESYNC: 2,
    sm.Purpose.RESUBSCRIBE: 3,
}
RECV_QUEUE_FRAMES = 8192
"""Messages websockets may queue ahead of the reader (those the fast path leaves to it;
``HELD_BYTES_MAX`` bounds the fast path's own read-ahead). Bounded, so a recorder slower than the
feed pushes back on TCP (and the exchange reports overflow, error 25) instead of growing memory
and stamping frames late."""
FRAMES_PER_TURN = 256
"""Frames handled per turn of the event loop (~1-2 ms): a 256 KiB read holds ~2,000 frames, and
the command sender and the clock must get a turn in between (lifecycle -> command latency)."""
HELD_BYTES_MAX = 2**20
"""Read-ahead held for later turns before reading pauses (TCP pushes back, memory stays bounded)."""
TICK_S = 0.05
"""How often the core gets a clock tick when nothing happens (deadlines, retries, watchdog)."""


class AuthRejected(Exception):
    """The exchange refused our credentials: retrying would not help (exit 2)."""


class RecorderConnection(ClientConnection):
    """websockets' client connection with the reader's fast path (``recorder.framing``).

    After the opening handshake every byte goes through a ``FrameSplitter`` before websockets
    sees it: whole simple data frames go straight to ``on_frame`` (no parser generator, queue or
    future per frame: issue 16, that was ~40% of the reader), and every other frame is handed to
    websockets whole, so pings, pongs, the close handshake, fragmented messages and protocol
    errors behave exactly as without the fast path. While websockets holds a message the reader
    has not taken (or part of a fragmented one), data frames queue behind it in websockets too,
    so frames are always handled in arrival order.

    Also notes when *anything* arrives for the inbound-silence watchdog, and takes a pong whose
    payload matches none of our pings (the exchange's pong may be empty, docs/protocol.md §6) as
    the answer to all of them, so unanswered pings never pile up.
    """

    last_inbound_ns = 0
    on_frame: Callable[[bytes], None] | None = None
    """The reader's per-frame handler; None until the reader runs (websockets queues meanwhile)."""
    handler_error: BaseException | None = None
    """What ``on_frame`` raised inside ``data_received`` (the reader re-raises it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._splitter = FrameSplitter()
        self._splitter.fast = False  # until the reader runs
        self._head = b""  # the handshake response read so far (websockets gets none of the frames)
        self._turn_due = False  # a later turn will split what a large read left
        self._paused_here = False  # we paused reading (not websockets' own flow control)
        self._queued = 0  # whole messages websockets queued that the reader has not taken yet

    def engage(self, handle: Callable[[bytes], None] | None) -> None:
        """Start (or, with None, stop) giving frames to ``handle`` straight from the socket."""
        self.on_frame = handle
        self._update_fast()

    def took_message(self) -> None:
        """The reader took one message from websockets' queue (``recv``)."""
        self._queued -= 1
        self._update_fast()

    def _update_fast(self) -> None:
        self._splitter.fast = (
            self.on_frame is not None
            and self._queued == 0
            # not documented API: if a release renamed it, the fast path stays off (slower, never
            # wrong)
            and not getattr(self.protocol, "expect_continuation_frame", True)
        )

    def data_received(self, data: bytes) -> None:
        self.last_inbound_ns = time.monotonic_ns()
        if self.protocol.state is State.CONNECTING:
            # Give websockets the response head only, so it never holds part of a frame.
            head = self._head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                self._head = head
                super().data_received(data)
                return
            cut = end + 4 - len(self._head)
            self._head = b""
            super().data_received(data[:cut])
            data = data[cut:]
            if not data:
                return
        if self.protocol.state is not State.OPEN and not self._splitter.buffered:
            super().data_received(data)  # closing: websockets finishes the handshake
            return
        self._feed(data)

    def _feed(self, data: bytes, limit: int | None = FRAMES_PER_TURN) -> None:
        handler = self.on_frame
        splitter = self._splitter
        try:
            rest = splitter.feed(data, handler or _never, self._to_websockets, limit)
        except Exception as exc:  # the handler failed (say, the writer stopped): stop reading
            self.handler_error = exc
            self.engage(None)
            self.transport.abort()
            return
        if rest:
            super().data_received(rest)
        elif splitter.more:  # a large read: the rest on a later turn of the loop
            if not self._turn_due:
                self._turn_due = True
                self.loop.call_soon(self._next_turn)
            if not self._paused_here and splitter.buffered > HELD_BYTES_MAX:
                self._paused_here = True
                self.transport.pause_reading()  # TCP pushes back instead of memory growing

    def _next_turn(self) -> None:
        self._turn_due = False
        self._feed(b"")
        if self._paused_here and not self._turn_due:
            self._paused_here = False
            self.transport.resume_reading()

    def _finish_turns(self) -> None:
        """Frames already read are handled before websockets hears of the end: none is lost."""
        if self._splitter.more and self.handler_error is None:
            self._feed(b"", limit=None)

    def eof_received(self) -> None:
        self._finish_turns()
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish_turns()
        super().connection_lost(exc)

    def _to_websockets(self, frame: bytes) -> bool:
        """One whole frame for websockets; False once it is no longer open (closing)."""
        super().data_received(frame)
        return self.protocol.state is State.OPEN

    def process_event(self, event: Any) -> None:
        opcode = getattr(event, "opcode", None)
        if opcode is Opcode.PONG and self.pending_pings:
            data = bytes(event.data)
            if data not in self.pending_pings:
                self.acknowledge_pings(next(reversed(self.pending_pings)))
                return
        elif opcode in DATA_OPCODES:
            if event.fin:
                self._queued += 1
            self._splitter.fast = False  # later data frames queue behind this one
        super().process_event(event)


def _never(payload: bytes) -> None:  # pragma: no cover - the splitter is not fast without a handler
    raise RuntimeError("fast path without a handler")


@dataclass(eq=False)
class BookConnection:
    """One connection: order books of the markets assigned to it, and (on index 0) lifecycle."""

    index: int
    url: str
    signer: Signer
    settings: Settings
    log: SessionLog
    metrics: Metrics
    on_lifecycle: Callable[[LifecycleEvent, int], None]
    """Each lifecycle notice, with its receive time (wall-clock ns)."""
    on_live: Callable[[BookConnection, int], None]
    """The lifecycle feed is subscribed on this epoch (reconcile now: nothing is missed)."""

    def __post_init__(self) -> None:
        self.core = ConnectionCore(
            self.index,
            CoreSettings.from_settings(self.settings),
            carries_lifecycle=self.index == 0,
            url=self.url,
        )
        self.ws: RecorderConnection | None = None
        self.fatal: str | None = None
        self._outbox: deque[sm.Command] = deque()
        self._wake = asyncio.Event()
        self._send_wake = asyncio.Event()
        self._close_reason: str | None = None
        self._tokens = float(self.settings.command_burst)
        self._refill = time.monotonic()

    # ----------------------------------------------------------------- views
    @property
    def epoch(self) -> int:
        return self.core.epoch

    @property
    def books(self) -> dict[str, OrderBook]:
        return self.core.books

    # ----------------------------------------------------------------- app inputs
    def want(self, ticker: str) -> None:
        self.core.want(ticker, time.monotonic_ns())
        self._wake.set()

    def unwant(self, ticker: str) -> None:
        self.core.unwant(ticker)
        self._wake.set()

    # ----------------------------------------------------------------- effects
    def _apply(self, effects: Iterable[Effect]) -> None:
        for e in effects:
            match e:
                case cc.Send(command=command):
                    self._outbox.append(command)
                    self._send_wake.set()
                case cc.Record():
                    self._record(e)
                case cc.LifecycleEvent():
                    self.on_lifecycle(e, time.time_ns())
                case cc.LifecycleLive(epoch=epoch):
                    self.on_live(self, epoch)
                case cc.Reconnect(reason=reason):
                    self._drop(reason)
                case cc.Fatal(message=message):
                    self.fatal = message
                    self._drop("fatal close")
                case _:
                    assert_never(e)

    def _record(self, e: cc.Record) -> None:
        d = e.decision
        if d is Decision.RESYNC:
            self.metrics.resyncs.inc()
        elif d is Decision.ANOMALY:
            self.metrics.anomalies.inc()
        elif d is Decision.COMMAND_TIMEOUT:
            log.warning("connection %d: command timed out: %s", self.index, e.payload)
        elif d is Decision.DISCONNECTED:
            log.warning("connection %d: disconnected: %s", self.index, e.payload)
        self.log.decide(
            d,
            e.payload,
            conn=self.index,
            epoch=self.core.epoch,
            sid=e.sid,
            market_ticker=e.market_ticker,
        )

    def _drop(self, reason: str) -> None:
        """Abort the socket now (a dead connection would wait for a close handshake)."""
        ws = self.ws
        if ws is None:
            return
        self._close_reason = reason
        log.warning("connection %d: dropping the connection: %s", self.index, reason)
        transport = getattr(ws, "transport", None)
        if transport is not None:
            transport.abort()

    # ----------------------------------------------------------------- sending
    async def _sender(self, ws: ClientConnection) -> None:
        """Send queued commands in priority order (lifecycle, joins, resyncs, then the rest),
        paced by a token bucket: a burst of ``command_burst`` goes out at once, then one per
        ``min_command_interval_s`` (docs/protocol.md §6: a few commands per second sustained)."""
        s = self.settings
        interval = s.min_command_interval_s
        while True:
            await self._send_wake.wait()
            self._send_wake.clear()
            while self._outbox:
                if interval > 0:
                    now = time.monotonic()
                    self._tokens = min(
                        float(s.command_burst), self._tokens + (now - self._refill) / interval
                    )
                    self._refill = now
                    if self._tokens < 1:
                        await asyncio.sleep((1 - self._tokens) * interval)
                        continue
                    self._tokens -= 1
                if len(self._outbox) > 1:
                    ordered = sorted(self._outbox, key=lambda c: _PRIORITY.get(c.purpose, 9))
                    self._outbox = deque(ordered)
                command = self._outbox.popleft()
                raw = orjson.dumps(command.message())
                self.log.command_out(
                    self.index, self.core.epoch, command.cmd, command.cmd_id, raw, command.sid
                )
                self.metrics.commands.inc()
                try:
                    await ws.send(raw.decode())
                except ConnectionClosed:
                    return  # the reader sees the close too; the core replans after reconnect
                self.core.sent(command.cmd_id, time.monotonic_ns())

    # ----------------------------------------------------------------- clock
    async def _ticker(self, ws: RecorderConnection) -> None:
        """Clock ticks for the core: right after a change (debounced, so markets created
        together share a command), else every ``TICK_S``."""
        debounce = self.settings.debounce_s
        while True:
            if await woken(self._wake, TICK_S) and debounce:
                await asyncio.sleep(debounce)
            self._wake.clear()
            if ws.last_inbound_ns:
                self.core.inbound(ws.last_inbound_ns)
            self._apply(self.core.tick(time.monotonic_ns()))

    # ----------------------------------------------------------------- run loop
    async def run(self, stop: asyncio.Event) -> None:
        """Connect, read until closed, reconnect with capped jittered backoff, until ``stop``."""
        s = self.settings
        backoff = s.backoff_initial_s
        attempt = 0
        while not stop.is_set():
            attempt += 1
            started = time.monotonic()
            code: int | None = None
            close_reason: str | None = None
            detail = "closed"
            try:
                await self._session(stop)
            except AuthRejected:
                raise
            except ConnectionClosed as exc:
                rcvd = exc.rcvd
                if rcvd is not None:
                    code, close_reason = int(rcvd.code), rcvd.reason
                    detail = f"closed by the exchange ({code})"
                else:
                    detail = "connection lost"
            except (OSError, InvalidStatus, TimeoutError) as exc:
                detail = _describe(exc)
                if self.ws is None:
                    failed = ConnectFailed(attempt=attempt, reason=detail, retry_in_s=backoff)
                    self.log.decide(failed.KIND, failed.payload(), conn=self.index)
                    log.warning(
                        "connection %d: connect failed (%s); retry in %.1fs",
                        self.index,
                        detail,
                        backoff,
                    )
            finally:
                if self.ws is not None:
                    reason = self._close_reason or detail
                    self._apply(
                        self.core.closed(time.monotonic_ns(), code, close_reason, reason=reason)
                    )
                    self.ws = None
                    self._outbox.clear()
            if self.fatal is not None:
                raise AuthRejected(self.fatal)
            if stop.is_set():
                break
            if time.monotonic() - started > s.backoff_reset_after_s:
                backoff = s.backoff_initial_s
            delay = backoff * random.uniform(0.5, 1.0)  # jitter: no thundering herd
            backoff = min(backoff * 2, s.backoff_max_s)
            await woken(stop, delay)

    async def _session(self, stop: asyncio.Event) -> None:
        s = self.settings
        headers = self.signer.headers("GET", WS_PATH)
        try:
            ws = await websockets.connect(
                self.url,
                additional_headers=headers,
                # Our pings keep NATs and the exchange aware of us; whether a pong echoes them is
                # not our liveness test (the core's inbound-silence watchdog is).
                ping_interval=s.ping_interval_s,
                ping_timeout=None,
                max_size=None,
                max_queue=RECV_QUEUE_FRAMES,
                compression=None,
                open_timeout=15,
                create_connection=RecorderConnection,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise AuthRejected(
                    f"the exchange rejected the API key (HTTP {status}) at {self.url}: check that "
                    "KALSHI_API_KEY_ID matches the private key and the environment (prod and demo "
                    "keys differ), and that this machine's clock is right"
                ) from None
            raise
        ws = cast(RecorderConnection, ws)  # built by our own factory
        self.ws = ws
        self._close_reason = None
        self._tokens = float(s.command_burst)
        self._apply(self.core.opened(time.monotonic_ns()))
        log.info("connection %d: connected (epoch %d)", self.index, self.core.epoch)
        helpers = [
            asyncio.create_task(self._sender(ws)),
            asyncio.create_task(self._ticker(ws)),
        ]
        try:
            await self._reader(ws, stop)
        finally:
            for t in helpers:
                t.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    # ----------------------------------------------------------------- reader
    async def _reader(self, ws: RecorderConnection, stop: asyncio.Event) -> None:
        handle = frame_handler(self.core, self.log, self.index, self._apply, self._wake.set)
        await pump(ws, handle, stop)


def frame_handler(
    core: ConnectionCore,
    slog: SessionLog,
    index: int,
    apply: Callable[[Sequence[Effect]], None],
    on_dirty: Callable[[], None],
) -> Callable[[bytes], None]:
    """The reader's work on one frame: record it verbatim first, then give it to the core, and
    carry out its effects (``apply``); ``on_dirty`` when a reply or snapshot may let the next
    command go. One function for the connection and ``bench.parse_speed``."""
    parse = protocol.parse_frame
    decode_delta = protocol.decode_delta
    delta_in = slog.delta_in
    frame_in = slog.frame_in
    core_frame = core.frame
    core_delta = core.delta
    epoch = core.epoch
    wall = time.time_ns
    mono = time.monotonic_ns

    def handle(raw: bytes) -> None:
        now = wall()
        d = decode_delta(raw)  # most frames: a delta, typed without a dict or a Frame
        if d is not None:
            delta_in(index, epoch, raw, d, now)
            effects = core_delta(d, mono())
            if effects is None:  # not the next seq of an anchored book: the careful path
                effects = core_frame(parse(raw), mono())
        else:
            f = parse(raw)
            frame_in(index, epoch, raw, f, now)
            effects = core_frame(f, mono())
        if effects:
            apply(effects)
        if core.dirty:
            on_dirty()

    return handle


async def pump(
    ws: RecorderConnection, handle: Callable[[bytes], None], stop: asyncio.Event
) -> None:
    """Give every inbound frame to ``handle``, in arrival order, until the connection closes.

    Frames come two ways: most straight from ``data_received`` (the fast path), the rest
    (fragmented messages, anything websockets queued before the fast path engaged) through
    ``recv``. Raises ``ConnectionClosed`` at the end, or what ``handle`` raised."""
    ws.engage(handle)
    try:
        while not stop.is_set():
            try:
                raw = await ws.recv(decode=False)
            except ConnectionClosed:
                if ws.handler_error is not None:
                    raise ws.handler_error from None
                raise
            ws.took_message()
            if isinstance(raw, str):  # pragma: no cover - decode=False returns bytes
                raw = raw.encode()
            handle(raw)
    finally:
        ws.engage(None)


async def woken(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it is set.

    Not ``asyncio.wait_for``: on Python 3.11 it returns normally when its task is cancelled in
    the same turn of the loop as the event is set, so the cancel is lost (fixed in 3.12). A
    helper loop that loses its cancel never ends, and the session waiting for it hangs: that
    was a dropped connection noticed only at the end of the run. ``asyncio.timeout`` keeps the
    cancel. ruff bans ``asyncio.wait_for`` (pyproject.toml, TID251)."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}"[:200]
