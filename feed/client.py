"""``feed.Client``: connect to a live tap or a replay, keep the books, prove nothing was lost, and
yield typed events (``feed.events``).

Continuity checks (why a consumer can trust what it holds): seq must advance by exactly one per
sid (Kalshi's rule); after ``tap_lagged`` the client re-anchors on the seqs the tap says it
dropped; every ``tap_mark`` names the last seq the tap assigned per sid, which must equal the last
one received; ``record_seq`` never goes back. Any break raises ``FeedError``.

Usage::

    async with Client(url) as feed:          # every market the session books
        async for ev in feed:
            if isinstance(ev, BookUpdate) and ev.valid: ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, assert_never

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from feed.book import Book
from feed.events import (
    BookUpdate,
    FeedEvent,
    Hello,
    Lagged,
    LifecycleEvent,
    MarketJoined,
    MarketLeft,
    MarketSkipped,
    RecordMark,
    SessionEnded,
    StatusMessage,
    Validity,
    ValidityChange,
)
from feed.fanout import LIFECYCLE, ORDERBOOK, STATUS
from schemas.units import parse_price, parse_size
from schemas.wire import (
    DELTA_MSG,
    LIFECYCLE_CHANNEL_MSG_TYPES,
    SNAPSHOT_MSG,
    delta_ts_ms,
    snapshot_levels,
)

__all__ = ["Book", "Client", "FeedError"]


class FeedError(Exception):
    """The tap refused something, or the stream broke a continuity guarantee."""


def _opt_int(msg: dict[str, Any], key: str) -> int | None:
    v = msg.get(key)
    return v if type(v) is int else None


class Client:
    """A tap/replay consumer. ``markets=None`` follows every market the session books."""

    def __init__(
        self,
        url: str,
        *,
        markets: list[str] | None = None,
        depth: int = 10,
        token: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self.markets = markets
        self.depth = depth
        self.token = token
        self.timeout_s = timeout_s
        self.ws: ClientConnection | None = None
        self.books: dict[str, Book] = {}
        self.channels: dict[int, str] = {}
        self.last_seq: dict[int, int] = {}
        self.record_seq = 0
        self.hello: Hello | None = None
        self.ended: SessionEnded | None = None
        self._next_id = 1

    async def __aenter__(self) -> Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        async with asyncio.timeout(self.timeout_s):
            self.ws = await connect(self.url, additional_headers=headers, max_size=1 << 26)
        params: dict[str, Any] = {"channels": [STATUS, LIFECYCLE]}
        if self.markets is None:
            params["channels"].append(ORDERBOOK)
            params["all_markets"] = True
        await self.send("subscribe", params)
        if self.markets:
            await self.send("subscribe", {"channels": [ORDERBOOK], "market_tickers": self.markets})
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def send(self, cmd: str, params: dict[str, Any] | None = None) -> int:
        """Send a Kalshi command; returns its id."""
        if self.ws is None:
            raise FeedError("not connected: use 'async with Client(url)'")
        cmd_id = self._next_id
        self._next_id += 1
        body: dict[str, Any] = {"id": cmd_id, "cmd": cmd}
        if params is not None:
            body["params"] = params
        await self.ws.send(orjson.dumps(body).decode())
        return cmd_id

    def __aiter__(self) -> AsyncIterator[FeedEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[FeedEvent]:
        while True:
            ev = await self.next_event()
            if ev is None:
                return
            yield ev

    async def next_event(self, timeout_s: float | None = None) -> FeedEvent | None:
        """The next event; None when the connection closed; ``TimeoutError`` after the
        deadline (default ``timeout_s``)."""
        if self.ws is None:
            raise FeedError("not connected: use 'async with Client(url)'")
        while True:
            try:
                async with asyncio.timeout(timeout_s or self.timeout_s):
                    raw = await self.ws.recv()
            except TimeoutError:
                raise TimeoutError(f"no message from {self.url} within the deadline") from None
            except ConnectionClosed:
                return None
            ev = self.on_frame(raw)
            if ev is not None:
                return ev

    # ------------------------------------------------------------------ sans-I/O part
    def on_frame(self, raw: str | bytes) -> FeedEvent | None:
        """Process one frame from the tap; the event it makes, if any."""
        body = orjson.loads(raw)
        if not isinstance(body, dict):
            raise FeedError(f"tap sent a non-object frame: {raw!r:.200}")
        t = body.get("type")
        rs = body.get("record_seq")
        if type(rs) is int:
            if rs < self.record_seq:
                raise FeedError(f"record_seq went back: {rs} after {self.record_seq}")
            self.record_seq = rs
        else:
            rs = None
        msg = body.get("msg")
        sid, seq = body.get("sid"), body.get("seq")
        if type(sid) is int and type(seq) is int:
            last = self.last_seq.get(sid)
            if last is not None and seq != last + 1 and t != StatusMessage.LAGGED:
                raise FeedError(f"seq gap on sid {sid}: {seq} after {last} (a frame was lost)")
            self.last_seq[sid] = seq
        if t == "subscribed" and isinstance(msg, dict):
            self.channels[msg["sid"]] = msg["channel"]
            return None
        if t == "error":
            raise FeedError(f"tap error: {msg}")
        if not isinstance(msg, dict):
            return None
        if t == DELTA_MSG:
            return self._delta(msg, rs)
        if t == SNAPSHOT_MSG:
            ticker = msg["market_ticker"]
            yes, no = snapshot_levels(msg)
            b = self.books.setdefault(ticker, Book())
            b.yes, b.no, b.valid = yes, no, True
            return self._update(ticker, b, rs, True)
        if t in LIFECYCLE_CHANNEL_MSG_TYPES:
            return LifecycleEvent(
                market_ticker=str(msg.get("market_ticker", msg.get("event_ticker", ""))),
                event_type=str(msg.get("event_type", t)),
                record_seq=rs,
                open_ts=_opt_int(msg, "open_ts"),
                close_ts=_opt_int(msg, "close_ts"),
                determination_ts=_opt_int(msg, "determination_ts"),
                settled_ts=_opt_int(msg, "settled_ts"),
                result=msg.get("result") if isinstance(msg.get("result"), str) else None,
                settlement_value=_settlement(msg.get("settlement_value")),
                msg=msg,
            )
        return self._status(t, msg)

    def _delta(self, msg: dict[str, Any], rs: int | None) -> BookUpdate | None:
        ticker = msg["market_ticker"]
        side = msg["side"]
        price = parse_price(msg["price_dollars"] if "price_dollars" in msg else msg["price"])
        delta = parse_size(msg["delta_fp"] if "delta_fp" in msg else msg["delta"])
        b = self.books.setdefault(ticker, Book())
        b.apply(side, price, delta)
        return self._update(ticker, b, rs, False, delta_ts_ms(msg), side, price, delta)

    def _update(
        self,
        ticker: str,
        b: Book,
        rs: int | None,
        snap: bool,
        ts_ms: int | None = None,
        side: str | None = None,
        price: int | None = None,
        delta: int | None = None,
    ) -> BookUpdate:
        return BookUpdate(
            ticker,
            rs,
            snap,
            b.valid,
            b.top("yes", self.depth),
            b.top("no", self.depth),
            ts_ms,
            side,
            price,
            delta,
        )

    def _status(self, t: Any, msg: dict[str, Any]) -> FeedEvent | None:
        try:
            kind = StatusMessage(t)
        except ValueError:
            return None  # a message type newer than this client: ignored (docs/tap-protocol.md)
        rs = int(msg.get("record_seq", 0))
        match kind:
            case StatusMessage.HELLO:
                self.hello = Hello(
                    protocol=str(msg["protocol"]),
                    session_id=int(msg.get("session_id") or 0),
                    mode=str(msg["mode"]),
                    settings=dict(msg.get("settings") or {}),
                    wire_format=str(msg.get("wire_format", "current")),
                    record_seq=rs,
                )
                for ticker, info in (msg.get("markets") or {}).items():
                    b = self.books.setdefault(ticker, Book())
                    b.valid = b.valid and info.get("state") == "valid"
                return self.hello
            case StatusMessage.BOOK_STATE:
                ticker = msg["market_ticker"]
                state = Validity(msg["state"])
                b = self.books.setdefault(ticker, Book())
                if state is not Validity.VALID:
                    b.valid = False
                return ValidityChange(ticker, state, str(msg.get("reason", "")), rs)
            case StatusMessage.MARKET:
                return self._membership(msg, rs)
            case StatusMessage.MARK:
                for sid_text, seq in (msg.get("seqs") or {}).items():
                    sid = int(sid_text)
                    if self.channels.get(sid) == STATUS:
                        continue  # the mark itself took the next seq on that sid
                    if seq and self.last_seq.get(sid, 0) != seq:
                        raise FeedError(
                            f"tap_mark says sid {sid} is at seq {seq}, "
                            f"but the last received is {self.last_seq.get(sid)}"
                        )
                return RecordMark(rs)
            case StatusMessage.LAGGED:
                for sid_text, seq in (msg.get("last_seqs") or {}).items():
                    sid = int(sid_text)
                    if self.channels.get(sid) != STATUS:
                        self.last_seq[sid] = int(seq)
                for b in self.books.values():
                    b.valid = False
                return Lagged(int(msg.get("dropped", 0)), rs)
            case StatusMessage.SESSION_END:
                self.ended = SessionEnded(str(msg.get("reason", "")), rs)
                return self.ended
            case other:
                assert_never(other)

    def _membership(self, msg: dict[str, Any], rs: int) -> FeedEvent:
        ticker, action = msg["market_ticker"], msg["action"]
        reason = str(msg.get("reason"))
        detail = msg.get("detail") or {}
        if action == "joined":
            self.books.setdefault(ticker, Book())
            mid = bool(detail.get("mid_lifecycle"))
            return MarketJoined(ticker, reason, rs, detail, mid_lifecycle=mid)
        if action == "left":
            return MarketLeft(ticker, reason, rs, detail)
        return MarketSkipped(ticker, reason, rs, detail)


def _settlement(value: Any) -> int | None:
    if isinstance(value, str | int) and not isinstance(value, bool):
        try:
            return parse_price(value)
        except ValueError:
            return None
    return None
