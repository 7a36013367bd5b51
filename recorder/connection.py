"""One WebSocket connection to the exchange: read frames, record them, keep books and seqs.

The asyncio shell around the sans-I/O core (``protocol``, ``sequence``, ``book``,
``subscriptions``): it owns the socket, the per-connection epoch and the command pacing, and reports
lifecycle events upward to the ``Recorder``. Every frame is recorded *before* it is interpreted, so
nothing the exchange sends is lost whatever the core thinks of it (invariant 2).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from recorder import protocol
from recorder import subscriptions as sm
from recorder.auth import WS_PATH, Signer
from recorder.book import OrderBook
from recorder.sequence import OK, SeqTracker, SeqVerdict
from recorder.subscriptions import Command, SubscriptionManager
from schemas.log import Decision

if TYPE_CHECKING:
    from recorder.app import Recorder

log = logging.getLogger("recorder.connection")

LIFECYCLE_CHANNEL = "market_lifecycle_v2"
LIFECYCLE_TYPES = frozenset({"market_lifecycle_v2", "multivariate_market_lifecycle"})
TERMINAL_SID_ERRORS = frozenset({10, 17, 25})
COMMAND_BURST = 10
"""Commands that may go out back to back before pacing starts (see ``send_commands``)."""
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


class AuthRejected(Exception):
    """The exchange refused our credentials on the handshake: retrying would not help."""


class BookConnection:
    """One connection: order books of the markets assigned to it, and (on index 0) lifecycle."""

    def __init__(self, rec: Recorder, index: int, url: str, signer: Signer) -> None:
        s = rec.settings
        self.rec = rec
        self.index = index
        self.url = url
        self.signer = signer
        self.carries_lifecycle = index == 0
        self.epoch = 0
        self.ws: ClientConnection | None = None
        self.seq = SeqTracker()
        self.subs = SubscriptionManager(
            max_markets_per_sid=s.max_markets_per_sid,
            max_tickers_per_command=s.max_tickers_per_command,
        )
        self.books: dict[str, OrderBook] = {}
        self.anchored: set[str] = set()
        self.crossed: set[str] = set()
        self.resyncing: set[str] = set()
        self._next_id = 0
        self._dirty = asyncio.Event()
        self._connected = asyncio.Event()
        self.disconnected_since_ns: int | None = None
        self.reconnects = 0
        self.gaps = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._tokens = float(COMMAND_BURST)
        self._refill = time.monotonic()

    # ----------------------------------------------------------------- helpers
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background, keeping a reference so it is not garbage-collected."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def want(self, ticker: str) -> None:
        self.books.setdefault(ticker, OrderBook())
        self.subs.want(ticker)
        self._dirty.set()

    def unwant(self, ticker: str) -> None:
        self.subs.unwant(ticker)
        self.books.pop(ticker, None)
        self.anchored.discard(ticker)
        self.resyncing.discard(ticker)
        self._dirty.set()

    async def send(
        self, cmd: str, cmd_id: int, params: dict[str, Any] | None, sid: int | None
    ) -> None:
        msg: dict[str, Any] = {"id": cmd_id, "cmd": cmd}
        if params is not None:
            msg["params"] = params
        raw = orjson.dumps(msg)
        ws = self.ws
        if ws is None:
            return
        self.rec.log.command_out(self.index, self.epoch, cmd, cmd_id, raw, sid)
        self.rec.metrics.commands.inc()
        try:
            await ws.send(raw.decode())
        except ConnectionClosed:
            pass  # the reader sees the close too and starts the reconnect; the manager replans

    async def send_commands(self, cmds: list[Command]) -> None:
        """Send in priority order (lifecycle, joins, resyncs, then the rest), paced by a token
        bucket: a burst of ``COMMAND_BURST`` goes out at once, then one per
        ``min_command_interval_s`` — peers saw bursts of thousands of commands kill connections,
        while a fixed sleep after every command delayed joins by a whole batch."""
        interval = self.rec.settings.min_command_interval_s
        for c in sorted(cmds, key=lambda c: _PRIORITY.get(c.purpose, 9)):
            if interval:
                now = time.monotonic()
                self._tokens = min(COMMAND_BURST, self._tokens + (now - self._refill) / interval)
                self._refill = now
                if self._tokens < 1:
                    await asyncio.sleep((1 - self._tokens) * interval)
                    self._tokens, self._refill = 1.0, time.monotonic()
                self._tokens -= 1
            await self.send(c.cmd, c.cmd_id, c.message().get("params"), c.sid)

    # ----------------------------------------------------------------- run loop
    async def run(self, stop: asyncio.Event) -> None:
        """Connect, read until closed, reconnect with capped jittered backoff, until ``stop``."""
        s = self.rec.settings
        backoff = s.backoff_initial_s
        attempt = 0
        while not stop.is_set():
            attempt += 1
            started = time.monotonic()
            try:
                await self._session(stop)
            except AuthRejected:
                raise
            except (OSError, ConnectionClosed, InvalidStatus, TimeoutError) as exc:
                reason = _describe(exc)
                if self.ws is None:
                    self.rec.log.decide(
                        Decision.CONNECT_FAILED,
                        {
                            "conn": self.index,
                            "attempt": attempt,
                            "reason": reason,
                            "retry_in_s": backoff,
                        },
                        conn=self.index,
                    )
                    log.warning(
                        "connection %d: connect failed (%s); retry in %.1fs",
                        self.index,
                        reason,
                        backoff,
                    )
            finally:
                if self.ws is not None:
                    self._on_disconnect("closed")
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
        s = self.rec.settings
        headers = self.signer.headers("GET", WS_PATH)
        try:
            ws = await websockets.connect(
                self.url,
                additional_headers=headers,
                ping_interval=s.ping_interval_s,
                ping_timeout=s.ping_timeout_s,
                max_size=None,
                max_queue=RECV_QUEUE_FRAMES,
                compression=None,
                open_timeout=15,
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
        self.ws = ws
        self.epoch += 1
        if self.epoch > 1:
            self.reconnects += 1
            self.rec.metrics.reconnects.inc()
        self.rec.log.decide(
            Decision.CONNECTED,
            {"conn": self.index, "epoch": self.epoch, "url": self.url},
            conn=self.index,
            epoch=self.epoch,
        )
        log.info("connection %d: connected (epoch %d)", self.index, self.epoch)
        self._connected.set()
        planner = asyncio.create_task(self._planner())
        try:
            if self.carries_lifecycle:
                await self.send_commands([self.subs.lifecycle_subscribe(self.next_id)])
                if self.epoch > 1:
                    self._spawn(self.rec.after_reconnect(self))
            self._dirty.set()
            await self._reader(stop)
        finally:
            planner.cancel()

    def _on_disconnect(self, reason: str) -> None:
        self.rec.log.decide(
            Decision.DISCONNECTED,
            {"conn": self.index, "epoch": self.epoch, "reason": reason},
            conn=self.index,
            epoch=self.epoch,
        )
        self.ws = None
        self._connected.clear()
        self.disconnected_since_ns = time.time_ns()
        self.seq.reset()
        self.subs.reset()
        self.anchored.clear()
        self.resyncing.clear()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    # ----------------------------------------------------------------- planner
    async def _planner(self) -> None:
        """Turn wanted/unwanted markets into few, paced commands (debounced)."""
        s = self.rec.settings
        while True:
            # Wake on a change, or every 100 ms while retries may be due (manager backoff).
            try:
                await asyncio.wait_for(self._dirty.wait(), 0.1)
            except TimeoutError:
                if not self.subs.in_flight and self.subs.converged():
                    continue
            await asyncio.sleep(s.debounce_s)
            self._dirty.clear()
            cmds = self.subs.plan(self.next_id, time.monotonic_ns())
            if cmds:
                await self.send_commands(cmds)

    # ----------------------------------------------------------------- reader
    async def _reader(self, stop: asyncio.Event) -> None:
        ws = self.ws
        assert ws is not None
        rec = self.rec
        slog = rec.log
        parse = protocol.parse_frame
        index = self.index
        on_delta = self._on_delta
        n = 0
        while not stop.is_set():
            raw = await ws.recv(decode=False)
            now = time.time_ns()
            if isinstance(raw, str):  # pragma: no cover - decode=False returns bytes
                raw = raw.encode()
            f = parse(raw)
            slog.frame_in(index, self.epoch, raw, f, now)
            if f.msg_type == "orderbook_delta" and not f.malformed:
                on_delta(f)
            else:
                self._dispatch(f, now)
            n += 1
            if n % READER_YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _dispatch(self, f: protocol.Frame, now_ns: int) -> None:
        t = f.msg_type
        if f.malformed:
            return  # kept verbatim and counted by the session log
        if t == "orderbook_snapshot":
            self._on_snapshot(f)
        elif t in LIFECYCLE_TYPES:
            if f.market_ticker and f.event_type:
                self.rec.on_lifecycle(f, now_ns)
        elif t == "subscribed":
            info = protocol.subscribed_sid(f)
            if info is not None:
                self._handle_events(self.subs.on_subscribed(f.cmd_id, info[0], info[1]))
        elif t == "ok":
            if f.sid is not None and f.seq is not None:
                self.seq.on_reply(f.sid, f.seq)
            if protocol.list_subscriptions(f) is None:
                self._handle_events(self.subs.on_ok(f.cmd_id, f.sid, protocol.ok_market_tickers(f)))
        elif t == "unsubscribed":
            sids = protocol.unsubscribed_sids(f)
            if f.sid is not None and f.seq is not None:
                self.seq.on_reply(f.sid, f.seq)
            for sid in sids:
                self.seq.forget(sid)
            self._handle_events(self.subs.on_unsubscribed(f.cmd_id, sids))
        elif t == "error":
            code, message, ticker = protocol.error_info(f)
            self.rec.metrics.errors.inc()
            if f.cmd_id is None and f.sid is not None and code == 25:
                self.rec.log.decide(
                    Decision.LOSS,
                    {"sid": f.sid, "detail": f"error {code}: {message}"},
                    conn=self.index,
                    epoch=self.epoch,
                    sid=f.sid,
                )
            self._handle_events(self.subs.on_error(f.cmd_id, code, message, ticker, f.sid))
        # every other type (event_lifecycle, event_fee_update, ticker, unknown) is recorded only

    def _handle_events(self, events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, sm.SidAssigned):
                self.rec.log.decide(
                    Decision.SUBSCRIPTION,
                    {
                        "conn": self.index,
                        "epoch": self.epoch,
                        "sid": ev.sid,
                        "channel": ev.channel,
                        "market_tickers": sorted(ev.tickers),
                    },
                    conn=self.index,
                    epoch=self.epoch,
                    sid=ev.sid,
                )
            elif isinstance(ev, sm.NeedsResubscribe):
                # The manager already planned unsubscribe + subscribe of that sid.
                self._unanchor(ev.sid, list(ev.tickers), method="resubscribe")
            else:  # Fallback, CapLowered, MarketNotFound, CommandFailed, GaveUp
                self.rec.log.decide(
                    Decision.ANOMALY,
                    {"what": type(ev).__name__, "detail": repr(ev)},
                    conn=self.index,
                    epoch=self.epoch,
                )
                log.warning("connection %d: %r", self.index, ev)
        self._dirty.set()

    # ----------------------------------------------------------------- books
    def _check_seq(self, f: protocol.Frame) -> None:
        sid, seq = f.sid, f.seq
        if sid is None or seq is None:
            return
        v = self.seq.on_data(sid, seq)
        if v is not OK:
            self._seq_verdict(sid, v)

    def _seq_verdict(self, sid: int, v: SeqVerdict) -> None:
        """The rare path of a seq check: first frame, gap, or stale."""
        if v.is_gap:
            self.gaps += 1
            self.rec.metrics.gaps.inc()
            tickers = sorted(self.subs.tickers_of(sid))
            self.rec.log.decide(
                Decision.GAP,
                {
                    "conn": self.index,
                    "epoch": self.epoch,
                    "sid": sid,
                    "expected": v.expected,
                    "got": v.got,
                    "market_tickers": tickers,
                },
                conn=self.index,
                epoch=self.epoch,
                sid=sid,
            )
            # Markets already left (delete in flight) need no fresh book.
            self._resync(sid, [t for t in tickers if t in self.books], reason="get_snapshot")
        elif v.is_stale:
            self.rec.log.decide(
                Decision.STALE_SEQ,
                {"conn": self.index, "epoch": self.epoch, "sid": sid, "last": v.last, "got": v.got},
                conn=self.index,
                epoch=self.epoch,
                sid=sid,
            )

    def _unanchor(self, sid: int, tickers: list[str], method: str) -> None:
        for t in tickers:
            self.anchored.discard(t)
            self.resyncing.add(t)
        self.rec.log.decide(
            Decision.RESYNC,
            {
                "conn": self.index,
                "epoch": self.epoch,
                "sid": sid,
                "market_tickers": tickers,
                "method": method,
            },
            conn=self.index,
            epoch=self.epoch,
            sid=sid,
        )
        self.rec.metrics.resyncs.inc()

    def _resync(self, sid: int, tickers: list[str], reason: str) -> None:
        """Books of ``tickers`` are unreliable: fresh snapshots (get_snapshot, or resubscribe in
        the manager's fallback mode). Frames keep being recorded meanwhile."""
        if not tickers:
            return
        self._unanchor(sid, tickers, "resubscribe" if self.subs.fallback else "get_snapshot")
        cmds = self.subs.request_snapshot(sid, tickers, self.next_id, time.monotonic_ns())
        if cmds:
            self._spawn(self.send_commands(cmds))
        else:
            self._dirty.set()

    def _on_snapshot(self, f: protocol.Frame) -> None:
        self._check_seq(f)
        ticker = f.market_ticker
        if ticker is None:
            return
        book = self.books.get(ticker)
        if book is None:
            return  # a market we no longer want; the frame is recorded anyway
        try:
            yes, no = protocol.snapshot_levels(f.body)
        except ValueError as exc:
            self._anomaly(ticker, f.sid, "bad_snapshot", str(exc))
            return
        book.apply_snapshot(yes, no)
        self.anchored.add(ticker)
        self.resyncing.discard(ticker)
        if book.crossed():
            self._anomaly(ticker, f.sid, "crossed_book", "snapshot crossed")

    def _on_delta(self, f: protocol.Frame) -> None:
        """The hot path (most frames): seq check, then apply to the book if it is anchored."""
        sid, seq = f.sid, f.seq
        if sid is not None and seq is not None:
            v = self.seq.on_data(sid, seq)
            if v is not OK:
                self._seq_verdict(sid, v)
        ticker = f.market_ticker
        if ticker is None or ticker not in self.anchored:
            if ticker is not None and ticker in self.books and ticker not in self.resyncing:
                self._anomaly(ticker, sid, "delta_before_snapshot", f"seq {seq}")
            return
        side, price, delta = f.side, f.price, f.delta
        if side is None or price is None or delta is None:
            return  # inexact or missing typed value: kept raw, noted by the parser
        book = self.books[ticker]
        problem = book.apply_delta(side, price, delta)
        if problem is not None:
            self._anomaly(ticker, sid, problem, f"seq {seq}")
            if sid is not None:
                self._resync(sid, [ticker], reason="get_snapshot")
        elif book.crossed():
            if ticker not in self.crossed:  # once per episode, not once per delta
                self.crossed.add(ticker)
                self._anomaly(ticker, sid, "crossed_book", f"seq {seq}")
        elif ticker in self.crossed:
            self.crossed.discard(ticker)

    def _anomaly(self, ticker: str, sid: int | None, what: str, detail: str) -> None:
        self.rec.metrics.anomalies.inc()
        self.rec.log.decide(
            Decision.ANOMALY,
            {"market_ticker": ticker, "sid": sid, "what": what, "detail": detail},
            conn=self.index,
            epoch=self.epoch,
            sid=sid,
            market_ticker=ticker,
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}"[:200]
