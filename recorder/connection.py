"""One WebSocket connection to the exchange: the socket, reconnects and command pacing.

The thin asyncio shell around ``recorder.connection_core.ConnectionCore`` (which owns seqs,
subscriptions, books and deadlines): it reads frames, records each one verbatim *before* the core
interprets it (invariant 2), feeds the core frames and clock ticks, and carries out the effects
it returns — commands go out paced by a token bucket, decisions go to the session log, lifecycle
events go to the app through a callback. It does not import the app (no import cycle).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast

import orjson
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Opcode

from recorder import protocol
from recorder import subscriptions as sm
from recorder.auth import WS_PATH, Signer
from recorder.book import OrderBook
from recorder.config import Settings
from recorder.connection_core import (
    ConnectionCore,
    CoreSettings,
    Effect,
    Fatal,
    LifecycleEvent,
    LifecycleLive,
    Reconnect,
    Record,
    Send,
)
from recorder.metrics import Metrics
from recorder.session import SessionLog
from schemas.decisions import ConnectFailed
from schemas.log import Decision

log = logging.getLogger("recorder.connection")

_PRIORITY = {
    sm.PURPOSE_LIFECYCLE: 0,
    sm.PURPOSE_JOIN: 1,
    sm.PURPOSE_RESYNC: 2,
    sm.PURPOSE_RESUBSCRIBE: 3,
}
READER_YIELD_EVERY = 64
"""websockets' ``recv()`` does not yield while frames are queued; without an explicit yield the
reader would work through a whole read chunk (~1,000 frames) before the command planner gets a
turn; every 64 frames (~2 ms of work) keeps lifecycle -> command latency low."""
RECV_QUEUE_FRAMES = 8192
"""Frames websockets may parse ahead of the reader. Bounded, so a recorder slower than the feed
pushes back on TCP (and the exchange reports overflow, error 25) instead of growing memory and
stamping frames late."""
TICK_S = 0.05
"""How often the core gets a clock tick when nothing happens (deadlines, retries, watchdog)."""


class AuthRejected(Exception):
    """The exchange refused our credentials: retrying would not help (exit 2)."""


class _WatchedConnection(ClientConnection):
    """Notes when *anything* arrives (data, ping, pong) for the inbound-silence watchdog, and
    takes a pong whose payload matches none of our pings (the exchange's pong may be empty,
    notes §5) as the answer to all of them, so unanswered pings never pile up."""

    last_inbound_ns = 0

    def process_event(self, event: Any) -> None:
        self.last_inbound_ns = time.monotonic_ns()
        if getattr(event, "opcode", None) is Opcode.PONG and self.pending_pings:
            data = bytes(event.data)
            if data not in self.pending_pings:
                self.acknowledge_pings(next(reversed(self.pending_pings)))
                return
        super().process_event(event)


def core_settings(s: Settings, include_mve: bool) -> CoreSettings:
    """The core's knobs from the recorder's settings (``recorder.config`` explains each)."""
    channels: tuple[str, ...] = (sm.LIFECYCLE_CHANNEL,)
    if include_mve:
        channels += (sm.MVE_LIFECYCLE_CHANNEL,)
    return CoreSettings(
        max_markets_per_sid=s.max_markets_per_sid,
        max_tickers_per_command=s.max_tickers_per_command,
        command_timeout_s=s.command_timeout_s,
        new_market_grace_s=s.new_market_grace_s,
        silence_timeout_s=s.silence_timeout_s,
        resync_backoff_initial_s=s.resync_backoff_initial_s,
        resync_backoff_max_s=s.resync_backoff_max_s,
        crossed_grace_s=s.crossed_grace_s,
        fatal_close_repeats=s.fatal_close_repeats,
        stable_after_s=s.backoff_reset_after_s,
        lifecycle_channels=channels,
    )


class BookConnection:
    """One connection: order books of the markets assigned to it, and (on index 0) lifecycle."""

    def __init__(
        self,
        index: int,
        url: str,
        signer: Signer,
        settings: Settings,
        slog: SessionLog,
        metrics: Metrics,
        on_lifecycle: Callable[[LifecycleEvent, int], None],
        on_live: Callable[[BookConnection, int], None],
    ) -> None:
        self.index = index
        self.url = url
        self.signer = signer
        self.settings = settings
        self.log = slog
        self.metrics = metrics
        self.on_lifecycle = on_lifecycle
        self.on_live = on_live
        self.core = ConnectionCore(
            index,
            core_settings(settings, settings.include_mve),
            carries_lifecycle=index == 0,
            url=url,
        )
        self.ws: _WatchedConnection | None = None
        self.fatal: str | None = None
        self._outbox: deque[sm.Command] = deque()
        self._wake = asyncio.Event()
        self._send_wake = asyncio.Event()
        self._close_reason: str | None = None
        self._tokens = float(settings.command_burst)
        self._refill = time.monotonic()

    # ----------------------------------------------------------------- views
    @property
    def epoch(self) -> int:
        return self.core.epoch

    @property
    def books(self) -> dict[str, OrderBook]:
        return self.core.books

    @property
    def reconnects(self) -> int:
        return self.core.counters.reconnects

    @property
    def gaps(self) -> int:
        return self.core.counters.gaps

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
            if isinstance(e, Send):
                self._outbox.append(e.command)
                self._send_wake.set()
            elif isinstance(e, Record):
                self._record(e)
            elif isinstance(e, LifecycleEvent):
                self.on_lifecycle(e, time.time_ns())
            elif isinstance(e, LifecycleLive):
                self.on_live(self, e.epoch)
            elif isinstance(e, Reconnect):
                self._drop(e.reason)
            elif isinstance(e, Fatal):
                self.fatal = e.message
                self._drop("fatal close")

    def _record(self, e: Record) -> None:
        d = e.decision
        if d is Decision.GAP:
            self.metrics.gaps.inc()
        elif d is Decision.RESYNC:
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
        ``min_command_interval_s`` (notes §5: a few commands per second sustained)."""
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
    async def _ticker(self, ws: _WatchedConnection) -> None:
        """Clock ticks for the core: right after a change (debounced, so markets created
        together share a command), else every ``TICK_S``."""
        debounce = self.settings.debounce_s
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), TICK_S)
                if debounce:
                    await asyncio.sleep(debounce)
            except TimeoutError:
                pass
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
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass

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
                create_connection=_WatchedConnection,
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
        ws = cast(_WatchedConnection, ws)  # built by our own factory
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
    async def _reader(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        slog = self.log
        parse = protocol.parse_frame
        decode_delta = protocol.decode_delta
        delta_in = slog.delta_in
        core = self.core
        core_frame = core.frame
        core_delta = core.delta
        wake = self._wake
        apply = self._apply
        index = self.index
        epoch = self.core.epoch
        wall = time.time_ns
        mono = time.monotonic_ns
        n = 0
        while not stop.is_set():
            raw = await ws.recv(decode=False)
            now = wall()
            if isinstance(raw, str):  # pragma: no cover - decode=False returns bytes
                raw = raw.encode()
            d = decode_delta(raw)  # most frames: a delta, typed without a dict or a Frame
            if d is not None:
                delta_in(index, epoch, raw, d, now)
                effects = core_delta(d, mono())
                if effects is None:  # not the next seq of an anchored book: the careful path
                    effects = core_frame(parse(raw), mono())
            else:
                f = parse(raw)
                slog.frame_in(index, epoch, raw, f, now)
                effects = core_frame(f, mono())
            if effects:
                apply(effects)
            if core.dirty:
                wake.set()  # a reply or snapshot may let the next command go
            n += 1
            if n % READER_YIELD_EVERY == 0:
                await asyncio.sleep(0)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}"[:200]
