"""Sans-I/O fan-out: Kalshi's market-data protocol served per consumer, with bounded queues.

One ``Consumer`` per WebSocket connection. It answers Kalshi's commands (``subscribe``,
``update_subscription``, ``unsubscribe``, ``list_subscriptions``) with the exchange's replies and
error codes (``docs/protocol.md`` §3), and gets what ``feed.state.TapState`` publishes as
ready-to-send frames, re-sequenced per its own sids. The shell only moves bytes:
``Consumer.take()`` and ``Consumer.handle()``.

Why a bounded queue with a drop-and-resnapshot overflow (consumers never cost the recording,
ARCHITECTURE.md, Invariants): the recorder must
never wait for a consumer and memory must stay bounded, so a consumer that falls ``max_queue``
frames behind loses its queue, gets ``tap_lagged`` on the extra channel, then a fresh snapshot of
every market it follows. Dropped frames still consumed their seq numbers, so a plain Kalshi client
sees a seq gap (and resyncs, as it would after the exchange's error 25).

The extra channel ``recorder_status`` is specified in ``docs/tap-protocol.md``. A connection that
subscribes to it also gets ``record_seq`` in the envelope of every frame.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from feed.events import STATUS_CHANNEL, StatusMessage, Validity
from feed.state import RAW, RECORD_SEQ, Market, TapState
from schemas.wire import (
    DELTA_MSG,
    ERROR_MESSAGES,
    KALSHI_CHANNELS,
    LIFECYCLE_CHANNEL,
    ORDERBOOK_CHANNEL,
    SNAPSHOT_MSG,
    snapshot_msg,
)

PROTOCOL_VERSION = "1"

LIFECYCLE = LIFECYCLE_CHANNEL
ORDERBOOK = ORDERBOOK_CHANNEL
STATUS = STATUS_CHANNEL
SERVED_CHANNELS = frozenset({LIFECYCLE, ORDERBOOK, STATUS})

DEFAULT_MAX_QUEUE = 10_000
"""Frames per consumer. ~10k frames is seconds of a busy feed for a reader that stalls briefly
(GC, a slow disk), and a few MB at most; beyond it the consumer is lagged, never the recorder."""

MAX_COMMAND_BYTES = 1 << 20


ERRORS = {code: ERROR_MESSAGES[code] for code in (1, 2, 3, 4, 5, 7, 8, 11, 12, 13, 14, 15, 16)}
"""The exchange's error codes the tap answers with, and their texts (``docs/protocol.md`` §3)."""


class CommandError(Exception):
    """A command the exchange would refuse: ``code`` is Kalshi's error code; ``detail`` follows
    the code's text after a colon."""

    def __init__(self, code: int, detail: str | None = None, ticker: str | None = None) -> None:
        self.code = code
        self.text = ERRORS[code] if detail is None else f"{ERRORS[code]}: {detail}"
        self.ticker = ticker
        super().__init__(self.text)

    def frame(self, cmd_id: int | None) -> bytes:
        """The ``error`` frame, with the command's ``id`` when it had one."""
        msg: dict[str, Any] = {"code": self.code, "msg": self.text}
        if self.ticker is not None:
            msg["market_ticker"] = self.ticker
        body: dict[str, Any] = {"type": "error", "msg": msg}
        if cmd_id is not None:
            body = {"id": cmd_id, **body}
        return orjson.dumps(body)


def _params(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise CommandError(2)
    return params


def _required_list(params: dict[str, Any], key: str, code: int) -> list[Any]:
    """``params[key]`` when it is a non-empty list; else error ``code`` (3 channels, 4 sids)."""
    value = params.get(key)
    if not isinstance(value, list) or not value:
        raise CommandError(code)
    return value


def _command(raw: bytes | str) -> dict[str, Any]:
    if len(raw) > MAX_COMMAND_BYTES:
        raise CommandError(1, "command too large")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CommandError(1, "not JSON") from None
    if not isinstance(body, dict):
        raise CommandError(1, "expected a JSON object")
    return body


@dataclass(slots=True)
class Sub:
    sid: int
    channel: str
    tickers: set[str] = field(default_factory=set)
    all_markets: bool = False
    seq: int = 0
    heads: dict[str, bytes] = field(default_factory=dict)
    """Envelope prefix per message type (``{"type":"...","sid":N``): built once, not per frame."""

    def wants(self, ticker: str) -> bool:
        return self.all_markets or ticker in self.tickers


class Consumer:
    """One connection's subscriptions, seq counters and outbound queue."""

    def __init__(self, fanout: Fanout, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.fanout = fanout
        self.max_queue = max(16, max_queue)
        self.queue: deque[bytes] = deque()
        self.subs: dict[int, Sub] = {}
        self.next_sid = 1
        self.extended = False
        """Subscribed to ``recorder_status``: envelopes carry ``record_seq``."""
        self.dropped = 0
        self.lagged_times = 0
        self.sent = 0
        self.wakeup: Any = None
        """Set by the shell: called (no arguments) when the queue goes from empty to non-empty."""
        self.started = False
        """Set on the first successful subscribe (a replay starts then)."""

    # ------------------------------------------------------------------ queue
    def take(self) -> list[bytes]:
        """Everything queued, oldest first (the shell sends them in order)."""
        out = list(self.queue)
        self.queue.clear()
        self.sent += len(out)
        return out

    def _push(self, frame: bytes, refill: bool = False) -> None:
        q = self.queue
        if not refill and len(q) >= self.max_queue:
            self._lagged()
            return  # the frame is dropped with the rest; fresh snapshots replace it
        was_empty = not q
        q.append(frame)
        if was_empty and self.wakeup is not None:
            self.wakeup()

    def _lagged(self) -> None:
        dropped = len(self.queue) + 1
        self.queue.clear()
        self.dropped += dropped
        self.lagged_times += 1
        state = self.fanout.state
        rs = state.record_seq
        last = {str(s.sid): s.seq for s in self.subs.values()}
        msg = {"dropped": dropped, "last_seqs": last, "record_seq": rs}
        self._status_frame(StatusMessage.LAGGED, msg, rs, True)
        for sub in self.subs.values():
            if sub.channel != ORDERBOOK:
                continue
            for m in state.markets.values():
                if sub.wants(m.ticker) and self.fanout.visible(m.ticker):
                    self._send_book(sub, m, rs, refill=True)

    def _envelope(self, msg_type: str, sub: Sub, msg: bytes, rs: int | None, seq: bool) -> bytes:
        head = sub.heads.get(msg_type)
        if head is None:
            head = sub.heads[msg_type] = b'{"type":"%s","sid":%d' % (msg_type.encode(), sub.sid)
        if seq:
            sub.seq += 1
            if self.extended and rs is not None:
                return b'%s,"seq":%d,"record_seq":%d,"msg":%s}' % (head, sub.seq, rs, msg)
            return b'%s,"seq":%d,"msg":%s}' % (head, sub.seq, msg)
        if self.extended and rs is not None:
            return b'%s,"record_seq":%d,"msg":%s}' % (head, rs, msg)
        return b'%s,"msg":%s}' % (head, msg)

    def _send_book(self, sub: Sub, m: Market, rs: int, refill: bool = False) -> None:
        """A fresh snapshot if the book is valid; else its state (extended consumers only): the
        snapshot follows when the recorder re-anchors it."""
        if m.state is Validity.VALID:
            msg = orjson.dumps(self.fanout.snapshot_msg(m))
            self._push(self._envelope(SNAPSHOT_MSG, sub, msg, rs, True), refill)
        elif self.extended and refill:
            self._status_frame(
                StatusMessage.BOOK_STATE,
                {"market_ticker": m.ticker, "state": m.state.value, "reason": m.reason},
                rs,
                refill,
            )

    def _status_frame(self, msg_type: str, msg: dict[str, Any], rs: int, refill: bool) -> None:
        for sub in self.subs.values():
            if sub.channel == STATUS:
                body = orjson.dumps({**msg, "record_seq": rs})
                self._push(self._envelope(msg_type, sub, body, rs, True), refill)

    # ------------------------------------------------------------------ commands
    def handle(self, raw: bytes | str) -> None:
        """One command from the client; replies (and snapshots) go to the queue. Never raises."""
        cmd_id: int | None = None
        try:
            body = _command(raw)
            cmd_id = body.get("id")
            if type(cmd_id) is not int:
                cmd_id = None
            cmd = body.get("cmd")
            params = body.get("params")
            if cmd == "subscribe":
                self._subscribe(cmd_id, params)
            elif cmd == "unsubscribe":
                self._unsubscribe(cmd_id, params)
            elif cmd == "update_subscription":
                self._update(cmd_id, params)
            elif cmd == "list_subscriptions":
                listing = [{"channel": s.channel, "sid": s.sid} for s in self.subs.values()]
                self._reply({"id": cmd_id, "type": "ok", "msg": listing})
            else:
                raise CommandError(5, repr(cmd))
        except CommandError as exc:
            self._push(exc.frame(cmd_id), True)

    def _reply(self, obj: dict[str, Any]) -> None:
        if obj.get("id") is None:
            obj.pop("id", None)
        self._push(orjson.dumps(obj), True)

    def _tickers(self, params: dict[str, Any], required: bool) -> list[str]:
        one = params.get("market_ticker")
        many = params.get("market_tickers")
        if one is None and many is None:
            if required:
                raise CommandError(14)
            return []
        tickers: list[str] = []
        if one is not None:
            if not isinstance(one, str):
                raise CommandError(11, "market_ticker must be a string")
            tickers.append(one)
        if many is not None:
            if not isinstance(many, list) or not all(isinstance(t, str) for t in many):
                raise CommandError(11, "market_tickers must be a string list")
            tickers.extend(many)
        if required and not tickers:
            raise CommandError(14)
        for t in tickers:
            if not self.fanout.visible(t) or t not in self.fanout.state.markets:
                raise CommandError(16, ticker=t)
        return list(dict.fromkeys(tickers))

    def _subscribe(self, cmd_id: int | None, raw_params: Any) -> None:
        params = _params(raw_params)
        channels = _required_list(params, "channels", 3)
        for ch in channels:
            if not isinstance(ch, str) or ch not in KALSHI_CHANNELS | SERVED_CHANNELS:
                raise CommandError(8, repr(ch))
            if ch not in SERVED_CHANNELS:
                raise CommandError(8, f"{ch!r} is not served by this tap (docs/tap-protocol.md)")
        all_markets = params.get("all_markets") is True
        tickers: list[str] = []
        if ORDERBOOK in channels and not all_markets:
            tickers = self._tickers(params, required=True)
        state = self.fanout.state
        rs = state.record_seq
        for ch in dict.fromkeys(channels):
            sub = Sub(self.next_sid, ch)
            self.next_sid += 1
            self.subs[sub.sid] = sub
            reply: dict[str, Any] = {"type": "subscribed", "msg": {"channel": ch, "sid": sub.sid}}
            if cmd_id is not None:
                reply = {"id": cmd_id, **reply}
            self._push(orjson.dumps(reply), True)
            if ch == STATUS:
                self.extended = True
                self._hello(sub)
            elif ch == ORDERBOOK:
                sub.all_markets = all_markets
                sub.tickers.update(tickers)
                for m in state.markets.values():
                    if sub.wants(m.ticker) and self.fanout.visible(m.ticker):
                        self._send_book(sub, m, rs, refill=True)
        self.started = True

    def _hello(self, sub: Sub) -> None:
        state = self.fanout.state
        rs = state.record_seq
        hello = {
            "protocol": PROTOCOL_VERSION,
            "session_id": state.session_id,
            "mode": self.fanout.mode,
            "settings": state.settings,
            "wire_format": state.wire_format,
            "record_seq": rs,
            "markets": {
                t: {"state": m.state.value, "reason": m.reason, "followed": m.followed}
                for t, m in sorted(state.markets.items())
                if self.fanout.visible(t)
            },
        }
        self._push(self._envelope(StatusMessage.HELLO, sub, orjson.dumps(hello), rs, True), True)

    def _one_sid(self, params: dict[str, Any]) -> Sub:
        sid = params.get("sid")
        sids = params.get("sids")
        if (sid is None) == (sids is None):
            raise CommandError(12)
        if sids is not None:
            if not isinstance(sids, list) or len(sids) != 1:
                raise CommandError(12)
            sid = sids[0]
        if type(sid) is not int or sid not in self.subs:
            raise CommandError(7, repr(sid))
        return self.subs[sid]

    def _update(self, cmd_id: int | None, raw_params: Any) -> None:
        params = _params(raw_params)
        action = params.get("action")
        if action is None:
            raise CommandError(15)
        if action not in ("add_markets", "delete_markets", "get_snapshot"):
            raise CommandError(13, repr(action))
        sub = self._one_sid(params)
        if sub.channel != ORDERBOOK:
            raise CommandError(13, f"{action} on a {sub.channel} sid")
        tickers = self._tickers(params, required=True)
        state = self.fanout.state
        rs = state.record_seq
        if action == "get_snapshot":
            for t in tickers:
                self._send_book(sub, state.markets[t], rs, refill=True)
            return
        if action == "add_markets":
            new = [t for t in tickers if t not in sub.tickers]
            sub.tickers.update(new)
        else:
            new = []
            sub.tickers.difference_update(tickers)
        sub.seq += 1
        reply = {
            "id": cmd_id,
            "sid": sub.sid,
            "seq": sub.seq,
            "type": "ok",
            "msg": {"market_tickers": sorted(sub.tickers)},
        }
        self._reply(reply)
        for t in new:
            self._send_book(sub, state.markets[t], rs, refill=True)

    def _unsubscribe(self, cmd_id: int | None, raw_params: Any) -> None:
        sids = _required_list(_params(raw_params), "sids", 4)
        for sid in sids:
            if type(sid) is not int or sid not in self.subs:
                raise CommandError(7, repr(sid))
        for sid in sids:
            sub = self.subs.pop(sid)
            sub.seq += 1
            self._reply({"id": cmd_id, "sid": sid, "seq": sub.seq, "type": "unsubscribed"})
        self.extended = any(s.channel == STATUS for s in self.subs.values())


class Fanout:
    """``feed.state.Publisher`` that turns the state machine's output into frames for every
    consumer. ``mode`` is ``live`` or ``replay`` (said in the hello)."""

    def __init__(self, mode: str, markets: set[str] | None = None) -> None:
        self.mode = mode
        self.consumers: list[Consumer] = []
        self.state = TapState(self, markets)
        self.mark_every = 1000

    def snapshot_msg(self, m: Market) -> dict[str, Any]:
        st = self.state
        return snapshot_msg(m.ticker, m.market_id, m.yes, m.no, st.wire_format, st.empty_as_list)

    def visible(self, ticker: str) -> bool:
        only = self.state.only
        return only is None or ticker in only

    def add(self, max_queue: int = DEFAULT_MAX_QUEUE) -> Consumer:
        c = Consumer(self, max_queue)
        self.consumers.append(c)
        return c

    def remove(self, c: Consumer) -> None:
        if c in self.consumers:
            self.consumers.remove(c)

    def on_row(self, row: tuple[Any, ...]) -> None:
        """Feed one session-log row (the ``SessionLog.observer`` signature)."""
        self.state.on_row(row)
        if self.consumers and row[RECORD_SEQ] % self.mark_every == 0:
            self.mark()

    def mark(self) -> None:
        """A ``tap_mark``: every frame due up to ``record_seq`` is queued before it."""
        rs = self.state.record_seq
        for c in self.consumers:
            if c.extended:
                seqs = {str(s.sid): s.seq for s in c.subs.values()}
                c._status_frame(StatusMessage.MARK, {"seqs": seqs}, rs, False)

    # ------------------------------------------------------------------ Publisher
    def snapshot(self, m: Market, row: tuple[Any, ...]) -> None:
        if not self.consumers or not self.visible(m.ticker):
            return
        rs = row[RECORD_SEQ]
        msg: bytes | None = None
        for c in self.consumers:
            for sub in c.subs.values():
                if sub.channel == ORDERBOOK and sub.wants(m.ticker):
                    if msg is None:
                        msg = orjson.dumps(self.snapshot_msg(m))
                    c._push(c._envelope(SNAPSHOT_MSG, sub, msg, rs, True))

    def delta(self, m: Market, row: tuple[Any, ...]) -> None:
        if not self.consumers:
            return
        rs = row[RECORD_SEQ]
        msg: bytes | None = None
        ticker = m.ticker
        for c in self.consumers:
            for sub in c.subs.values():
                if sub.channel == ORDERBOOK and (sub.all_markets or ticker in sub.tickers):
                    if msg is None:
                        msg = orjson.dumps(orjson.loads(row[RAW])["msg"])
                    c._push(c._envelope(DELTA_MSG, sub, msg, rs, True))

    def lifecycle(self, row: tuple[Any, ...]) -> None:
        if not self.consumers:
            return
        rs = row[RECORD_SEQ]
        frame: dict[str, Any] | None = None
        for c in self.consumers:
            for sub in c.subs.values():
                if sub.channel == LIFECYCLE:
                    if frame is None:
                        frame = orjson.loads(row[RAW])
                        if not isinstance(frame, dict) or "msg" not in frame:
                            return
                    msg = orjson.dumps(frame["msg"])
                    c._push(c._envelope(frame["type"], sub, msg, rs, "seq" in frame))

    def status(self, msg_type: str, msg: dict[str, Any], record_seq: int) -> None:
        for c in self.consumers:
            if c.extended:
                c._status_frame(msg_type, msg, record_seq, False)
