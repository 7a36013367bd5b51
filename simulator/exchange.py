"""Sans-I/O protocol core: per-connection command handling, sids and seqs, fan-out of events.

No sockets and no clock here. A :class:`Session` is fed inbound text (``receive``) and exchange
events (via :class:`Exchange`), and accumulates the exact frames to send in ``outbox``; the shell
writes them. Rules implemented (protocol notes §3, §4.7):

* seq is per sid, shared by all markets of the sid; the snapshot consumes a seq value.
* ``ok``/``unsubscribed`` replies carry the sid and seq and consume a seq value by default
  (``reply_seq="echo"`` repeats the last one instead).
* one ``subscribed`` reply per channel, always before that sid's first snapshot.
* error codes 1, 2, 3, 4, 5, 6 (by switch), 7, 8, 9, 11, 12, 13, 14, 15, 16, 26.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from simulator.faults import FaultConfig, FaultCounters
from simulator.market import Delta, Engine, Notice
from simulator.wire import ProtocolOptions, data_frame, delta_body, notice_body, snapshot_body

ORDERBOOK = "orderbook_delta"
LIFECYCLE = "market_lifecycle_v2"
# The asyncapi channel enum (notes §3.1). Channels we do not model are accepted and stay silent,
# as a real but quiet channel would; anything else is error 8.
KNOWN_CHANNELS = frozenset(
    {
        ORDERBOOK,
        "ticker",
        "trade",
        "fill",
        "market_positions",
        LIFECYCLE,
        "multivariate_market_lifecycle",
        "multivariate",
        "communications",
        "order_group_updates",
        "user_orders",
        "cfbenchmarks_value",
    }
)
PRIVATE_CHANNELS = frozenset(
    {ORDERBOOK, "fill", "market_positions", "communications", "order_group_updates", "user_orders"}
)
LIFECYCLE_KINDS = frozenset({LIFECYCLE, "event_lifecycle", "event_fee_update"})

ERRORS = {
    1: "Unable to process message",
    2: "Params required",
    3: "Channels required",
    4: "Subscription IDs required",
    5: "Unknown command",
    6: "Already subscribed",
    7: "Unknown subscription ID",
    8: "Unknown channel name",
    9: "Authentication required",
    10: "Channel error",
    11: "Invalid parameter",
    12: "Exactly one subscription ID is required",
    13: "Unsupported action",
    14: "Market Ticker required",
    15: "Action required",
    16: "Market not found",
    17: "Internal error",
    25: "Subscription buffer overflow",
    26: "Subscription market limit exceeded",
    27: "Too many requests",
}


class CommandError(Exception):
    def __init__(self, code: int, market_ticker: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.market_ticker = market_ticker


class Sub:
    """One subscription: its channel, markets (insertion-ordered) and seq counter."""

    __slots__ = ("channel", "seq", "sid", "skip_ticker_ack", "tickers")

    def __init__(self, sid: int, channel: str, seq_start: int) -> None:
        self.sid = sid
        self.channel = channel
        self.tickers: dict[str, None] = {}
        self.seq = seq_start - 1  # last value used
        self.skip_ticker_ack = False


class Session:
    """Protocol state of one WebSocket connection."""

    def __init__(
        self,
        conn_id: int,
        engine: Engine,
        opts: ProtocolOptions,
        faults: FaultConfig,
        counters: FaultCounters,
        rng: random.Random,
        authenticated: bool = True,
    ) -> None:
        self.conn_id = conn_id
        self.engine = engine
        self.opts = opts
        self.faults = faults
        self.counters = counters
        self.rng = rng
        self.authenticated = authenticated
        self.outbox: list[str] = []
        self.subs: dict[int, Sub] = {}
        self.book_index: dict[str, list[Sub]] = {}
        self.lifecycle_subs: list[Sub] = []
        self._next_sid = 1
        self._fault_data = bool(faults.gap_rate or faults.duplicate_rate or faults.malformed_rate)

    def take(self) -> list[str]:
        out, self.outbox = self.outbox, []
        return out

    # ---- outbound -------------------------------------------------------------------------

    def _reply(self, obj: dict[str, Any]) -> None:
        self.outbox.append(orjson.dumps(obj).decode())

    def _error(self, cmd_id: Any, code: int, market_ticker: str | None = None) -> None:
        msg: dict[str, Any] = {"code": code, "msg": ERRORS.get(code, "Error")}
        if market_ticker is not None:
            msg["market_ticker"] = market_ticker
        obj: dict[str, Any] = {}
        if cmd_id is not None:
            obj["id"] = cmd_id
        obj["type"] = "error"
        obj["msg"] = msg
        self._reply(obj)

    def _reply_seq(self, sub: Sub) -> int:
        if self.opts.reply_seq == "consume":
            sub.seq += 1
        return sub.seq

    def emit(self, sub: Sub, kind: str, body: str, sequenced: bool) -> None:
        """Append one data frame for ``sub``, applying the per-frame faults."""
        seq: int | None = None
        if sequenced:
            sub.seq += 1
            if (
                self._fault_data
                and self.faults.gap_rate
                and self.rng.random() < self.faults.gap_rate
            ):
                sub.seq += 1
                self.counters.gaps += 1
            seq = sub.seq
        frame = data_frame(kind, sub.sid, seq, body)
        self.outbox.append(frame)
        if not self._fault_data:
            return
        f = self.faults
        if f.duplicate_rate and self.rng.random() < f.duplicate_rate:
            self.outbox.append(frame)
            self.counters.duplicates += 1
        if f.malformed_rate and self.rng.random() < f.malformed_rate:
            self.outbox.append(self._malformed(sub, kind, frame))

    def _malformed(self, sub: Sub, kind: str, frame: str) -> str:
        what = self.rng.choice(self.faults.malformed_kinds)
        self.counters.malformed += 1
        by = self.counters.malformed_by_kind
        by[what] = by.get(what, 0) + 1
        if what == "not_json":
            return "<html>502 Bad Gateway</html>"
        if what == "truncated":
            return frame[: max(1, len(frame) // 2)]
        if what == "unknown_type":
            return data_frame("sim_unknown_type", sub.sid, None, '{"note":"injected"}')
        # a known type with its required fields missing (no seq, no price/side/delta)
        return data_frame(kind, sub.sid, None, "{}")

    def send_snapshot(self, sub: Sub, ticker: str) -> None:
        m = self.engine.markets[ticker]
        self.emit(sub, "orderbook_snapshot", snapshot_body(m, self.opts), True)

    # ---- inbound --------------------------------------------------------------------------

    def receive(self, text: str | bytes) -> None:
        try:
            cmd = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._error(None, 1)
            return
        if not isinstance(cmd, dict):
            self._error(None, 1)
            return
        cmd_id = cmd.get("id")
        name = cmd.get("cmd")
        handler = {
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "update_subscription": self._update,
            "list_subscriptions": self._list,
        }.get(name if isinstance(name, str) else "")
        if handler is None:
            self._error(cmd_id, 5)
            return
        try:
            handler(cmd_id, cmd.get("params"))
        except CommandError as e:
            self._error(cmd_id, e.code, e.market_ticker)

    def _tickers(self, params: dict[str, Any]) -> list[str]:
        out: list[str] = []
        one = params.get("market_ticker")
        many = params.get("market_tickers")
        if one is not None:
            if not isinstance(one, str) or not one:
                raise CommandError(11)
            out.append(one)
        if many is not None:
            if not isinstance(many, list) or not all(isinstance(t, str) and t for t in many):
                raise CommandError(11)
            out.extend(many)
        return list(dict.fromkeys(out))

    def _check_known(self, tickers: list[str]) -> None:
        for t in tickers:
            if t not in self.engine.markets:
                raise CommandError(16, t)

    def _new_sub(self, channel: str) -> Sub:
        sub = Sub(self._next_sid, channel, self.opts.seq_start)
        self._next_sid += 1
        self.subs[sub.sid] = sub
        return sub

    def _index(self, sub: Sub, ticker: str) -> None:
        self.book_index.setdefault(ticker, []).append(sub)

    def _unindex(self, sub: Sub, ticker: str) -> None:
        lst = self.book_index.get(ticker)
        if lst and sub in lst:
            lst.remove(sub)
            if not lst:
                del self.book_index[ticker]

    def _subscribe(self, cmd_id: Any, params: Any) -> None:
        if not isinstance(params, dict):
            raise CommandError(2)
        channels = params.get("channels")
        if not isinstance(channels, list) or not channels:
            raise CommandError(3)
        for ch in channels:
            if ch not in KNOWN_CHANNELS:
                raise CommandError(8)
        channels = list(dict.fromkeys(channels))
        tickers = self._tickers(params)
        for ch in channels:
            if ch in PRIVATE_CHANNELS and not self.authenticated:
                raise CommandError(9)
        if ORDERBOOK in channels:
            if not tickers:
                raise CommandError(14)
            self._check_known(tickers)
            if len(tickers) > self.opts.max_markets_per_sub:
                raise CommandError(26)
        elif tickers:
            self._check_known(tickers)
        f = self.faults
        if f.subscribe_error_rate and self.rng.random() < f.subscribe_error_rate:
            self.counters.subscribe_errors += 1
            raise CommandError(f.subscribe_error_code)
        if self.opts.duplicate_subscribe == "error":
            for ch in channels:
                for s in self.subs.values():
                    if s.channel != ch:
                        continue
                    if ch != ORDERBOOK:
                        raise CommandError(6)
                    dup = next((t for t in tickers if t in s.tickers), None)
                    if dup is not None:
                        raise CommandError(6, dup)
        for ch in channels:
            sub = self._new_sub(ch)
            sub.skip_ticker_ack = bool(params.get("skip_ticker_ack"))
            self._reply(
                {"id": cmd_id, "type": "subscribed", "msg": {"channel": ch, "sid": sub.sid}}
            )
            if ch == ORDERBOOK:
                for t in tickers:
                    sub.tickers[t] = None
                    self._index(sub, t)
                for t in tickers:
                    self.send_snapshot(sub, t)
            elif ch == LIFECYCLE:
                self.lifecycle_subs.append(sub)
            else:
                for t in tickers:
                    sub.tickers[t] = None

    def _unsubscribe(self, cmd_id: Any, params: Any) -> None:
        if not isinstance(params, dict):
            raise CommandError(2)
        sids = params.get("sids")
        if sids is None and "sid" in params:
            sids = [params["sid"]]
        if not isinstance(sids, list) or not sids:
            raise CommandError(4)
        for sid in sids:
            if not isinstance(sid, int) or sid not in self.subs:
                raise CommandError(7)
        for sid in dict.fromkeys(sids):
            sub = self.subs.pop(sid)
            for t in sub.tickers:
                self._unindex(sub, t)
            if sub in self.lifecycle_subs:
                self.lifecycle_subs.remove(sub)
            seq = self._reply_seq(sub)
            self._reply({"id": cmd_id, "sid": sid, "seq": seq, "type": "unsubscribed"})

    def _update(self, cmd_id: Any, params: Any) -> None:
        if not isinstance(params, dict):
            raise CommandError(2)
        has_sid = "sid" in params
        has_sids = "sids" in params
        if has_sid == has_sids:
            raise CommandError(12)
        if has_sid:
            sid = params["sid"]
        else:
            sids = params["sids"]
            if not isinstance(sids, list) or len(sids) != 1:
                raise CommandError(12)
            sid = sids[0]
        if not isinstance(sid, int) or isinstance(sid, bool):
            raise CommandError(12)
        sub = self.subs.get(sid)
        if sub is None:
            raise CommandError(7)
        action = params.get("action")
        if action is None:
            raise CommandError(15)
        if (
            action not in ("add_markets", "delete_markets", "get_snapshot")
            or sub.channel != ORDERBOOK
        ):
            raise CommandError(13)
        tickers = self._tickers(params)
        if not tickers:
            raise CommandError(14)
        self._check_known(tickers)
        if action == "add_markets":
            new = [t for t in tickers if t not in sub.tickers]
            if len(sub.tickers) + len(new) > self.opts.max_markets_per_sub:
                raise CommandError(26)
            for t in new:
                sub.tickers[t] = None
                self._index(sub, t)
            self._ok(cmd_id, sub)
            for t in new:
                self.send_snapshot(sub, t)
        elif action == "delete_markets":
            for t in tickers:
                if t in sub.tickers:
                    del sub.tickers[t]
                    self._unindex(sub, t)
            self._ok(cmd_id, sub)
        else:
            self._ok(cmd_id, sub)
            for t in tickers:
                self.send_snapshot(sub, t)

    def _ok(self, cmd_id: Any, sub: Sub) -> None:
        seq = self._reply_seq(sub)
        obj: dict[str, Any] = {"id": cmd_id, "sid": sub.sid, "seq": seq, "type": "ok"}
        if not sub.skip_ticker_ack:
            obj["msg"] = {"market_tickers": list(sub.tickers)}
        self._reply(obj)

    def _list(self, cmd_id: Any, params: Any) -> None:
        self._reply(
            {
                "id": cmd_id,
                "type": "ok",
                "msg": [{"channel": s.channel, "sid": s.sid} for s in self.subs.values()],
            }
        )


class Exchange:
    """Owns the engine and all sessions; routes engine events to subscribers."""

    def __init__(
        self,
        engine: Engine,
        opts: ProtocolOptions,
        faults: FaultConfig,
        counters: FaultCounters,
        seed: int,
    ) -> None:
        self.engine = engine
        self.opts = opts
        self.faults = faults
        self.counters = counters
        self.seed = seed
        self.sessions: dict[int, Session] = {}
        self._next_conn = 1
        self._fault_rng = random.Random(seed * 7_919 + 1)
        # held lifecycle notices: (release_ms, emission index, notice). A notice is "reordered"
        # when it goes out after one emitted later than it.
        self._held: list[tuple[int, int, Notice]] = []
        self._emitted_notices = 0
        self._max_dispatched = 0

    def open_session(self, authenticated: bool = True) -> Session:
        conn_id = self._next_conn
        self._next_conn += 1
        rng = random.Random(self.seed * 1_000_003 + conn_id)
        s = Session(conn_id, self.engine, self.opts, self.faults, self.counters, rng, authenticated)
        self.sessions[conn_id] = s
        return s

    def close_session(self, conn_id: int) -> None:
        self.sessions.pop(conn_id, None)

    def pump(self) -> None:
        """Route everything the engine emitted since the last pump (and due held notices)."""
        events = self.engine.take()
        now = self.engine.now_ms
        f = self.faults
        if self._held:
            due = [h for h in self._held if h[0] <= now]
            if due:
                self._held = [h for h in self._held if h[0] > now]
                for _, index, n in sorted(due, key=lambda h: (h[0], h[1])):
                    self._dispatch_notice(n, index)
        if not events:
            return
        legacy = self.opts.legacy
        sessions = list(self.sessions.values())
        book_sessions = [s for s in sessions if s.book_index]
        for ev in events:
            if type(ev) is Delta:
                if not book_sessions:
                    continue
                ticker = ev.market.ticker
                body: str | None = None
                for s in book_sessions:
                    subs = s.book_index.get(ticker)
                    if subs:
                        if body is None:
                            body = delta_body(ev, legacy)
                        for sub in subs:
                            s.emit(sub, "orderbook_delta", body, True)
            else:
                assert isinstance(ev, Notice)
                self._emitted_notices += 1
                index = self._emitted_notices
                if f.lifecycle_delay_rate and self._fault_rng.random() < f.lifecycle_delay_rate:
                    delay = int(self._fault_rng.uniform(0, f.lifecycle_delay_max_s) * 1000)
                    self._held.append((now + delay, index, ev))
                    self.counters.lifecycle_delayed += 1
                    continue
                self._dispatch_notice(ev, index)

    def _dispatch_notice(self, n: Notice, index: int) -> None:
        if index < self._max_dispatched:
            self.counters.lifecycle_reordered += 1
        else:
            self._max_dispatched = index
        body: str | None = None
        seq_on = self.opts.lifecycle_seq
        for s in self.sessions.values():
            for sub in s.lifecycle_subs:
                if body is None:
                    body = notice_body(n)
                s.emit(sub, n.kind, body, seq_on)
