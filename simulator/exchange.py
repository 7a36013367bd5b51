"""Sans-I/O protocol core: per-connection command handling, sids and seqs, fan-out of events.

No sockets and no clock here. A :class:`Session` is fed inbound text (``receive``) and exchange
events (via :class:`Exchange`), and accumulates the exact frames to send in ``outbox``; the shell
writes them. Rules implemented (docs/protocol.md §3, §5):

* seq is per sid, shared by all markets of the sid; the snapshot consumes a seq value.
* ``ok``/``unsubscribed`` replies carry the sid and seq and consume a seq value by default
  (``reply_seq="echo"`` repeats the last one instead).
* one ``subscribed`` reply per channel, always before that sid's first snapshot.
* error codes 1, 2, 3, 4, 5, 6 (by switch), 7, 8, 9, 11, 12, 13, 14, 15, 16, 26; asynchronous
  10, 17, 25 on a live sid (by fault knob), after which the sid is gone ("resubscribe").
* the switches of ``ProtocolOptions`` for the other uncertain points: get_snapshot with or
  without its ``ok``, replies without ``id``, a repeat subscribe merged into the existing sid,
  error 16 for a market in its first seconds, a clock offset on lifecycle ``*_ts`` fields.

What each switch and fault did is appended to ``effects`` (plain dicts with an ``effect`` key),
which the shell writes to ground truth, so a test can tell a client's failure from a fault.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.wire import (
    DELTA_MSG,
    ERROR_MESSAGES,
    KALSHI_CHANNELS,
    LIFECYCLE_MSG_TYPES,
    ORDERBOOK_CHANNEL,
    SNAPSHOT_MSG,
)
from simulator.faults import FaultConfig, FaultCounters
from simulator.market import Delta, Engine, Notice
from simulator.wire import ProtocolOptions, data_frame, delta_body, notice_body, snapshot_body

PRIVATE_CHANNELS = frozenset(
    {
        ORDERBOOK_CHANNEL,
        "fill",
        "market_positions",
        "communications",
        "order_group_updates",
        "user_orders",
    }
)


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

    def __init__(self, exchange: Exchange, conn_id: int, authenticated: bool = True) -> None:
        # the exchange's engine, options, fault knobs and counters, and its effects list
        self.ex = exchange
        self.conn_id = conn_id
        self.authenticated = authenticated
        # this connection's own fault decisions: reproducible per seed and connection
        self.rng = random.Random(exchange.seed * 1_000_003 + conn_id)
        self.outbox: list[str] = []
        self.subs: dict[int, Sub] = {}
        self.book_index: dict[str, list[Sub]] = {}
        # lifecycle-type channels (market_lifecycle_v2, multivariate_market_lifecycle) -> subs
        self.notice_subs: dict[str, list[Sub]] = {ch: [] for ch in LIFECYCLE_MSG_TYPES}
        self._next_sid = 1
        f = exchange.faults
        self._fault_data = bool(f.gap_rate or f.duplicate_rate or f.malformed_rate)

    def take(self) -> list[str]:
        out, self.outbox = self.outbox, []
        return out

    # ---- outbound -------------------------------------------------------------------------

    def _effect(self, effect: str, /, **fields: Any) -> None:
        self.ex.effect(effect, conn=self.conn_id, **fields)

    def _reply(self, obj: dict[str, Any]) -> None:
        self.outbox.append(orjson.dumps(obj).decode())

    def _answer(self, cmd_id: Any, obj: dict[str, Any], carries_sid: bool) -> None:
        """A command's reply, with its ``id`` unless the ``reply_id`` switch leaves it out."""
        mode = self.ex.opts.reply_id
        if mode == "always" or (mode == "sid_replies" and not carries_sid):
            obj = {"id": cmd_id, **obj}
        elif cmd_id is not None:
            self._effect("reply_without_id", cmd_id=cmd_id, type=obj.get("type"))
        self._reply(obj)

    def _error(self, cmd_id: Any, code: int, market_ticker: str | None = None) -> None:
        msg: dict[str, Any] = {"code": code, "msg": ERROR_MESSAGES.get(code, "Error")}
        if market_ticker is not None:
            msg["market_ticker"] = market_ticker
        obj: dict[str, Any] = {}
        if cmd_id is not None and self.ex.opts.reply_id != "never":
            obj["id"] = cmd_id
        obj["type"] = "error"
        obj["msg"] = msg
        self._reply(obj)

    def async_error(self, sub: Sub, code: int) -> None:
        """A terminal error on a live sid (10, 17, 25): the sid is gone, the client must
        resubscribe. Carries the sid (else no client could tell which subscription died)."""
        self._drop_sub(sub)
        self.ex.counters.async_errors += 1
        self._effect(
            "async_error", sid=sub.sid, code=code, channel=sub.channel, tickers=list(sub.tickers)
        )
        self._reply(
            {
                "type": "error",
                "sid": sub.sid,
                "msg": {"code": code, "msg": ERROR_MESSAGES.get(code)},
            }
        )

    def _reply_seq(self, sub: Sub) -> int:
        if self.ex.opts.reply_seq == "consume":
            sub.seq += 1
        return sub.seq

    def emit(self, sub: Sub, kind: str, body: str, sequenced: bool) -> None:
        """Append one data frame for ``sub``, applying the per-frame faults."""
        seq: int | None = None
        if sequenced:
            sub.seq += 1
            if (
                self._fault_data
                and self.ex.faults.gap_rate
                and self.rng.random() < self.ex.faults.gap_rate
            ):
                sub.seq += 1
                self.ex.counters.gaps += 1
            seq = sub.seq
        frame = data_frame(kind, sub.sid, seq, body)
        self.outbox.append(frame)
        if not self._fault_data:
            return
        f = self.ex.faults
        if f.duplicate_rate and self.rng.random() < f.duplicate_rate:
            self.outbox.append(frame)
            self.ex.counters.duplicates += 1
        if f.malformed_rate and self.rng.random() < f.malformed_rate:
            self.outbox.append(self._malformed(sub, kind, frame))

    def _malformed(self, sub: Sub, kind: str, frame: str) -> str:
        what = self.rng.choice(self.ex.faults.malformed_kinds)
        self.ex.counters.malformed += 1
        by = self.ex.counters.malformed_by_kind
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
        m = self.ex.engine.markets[ticker]
        self.emit(sub, SNAPSHOT_MSG, snapshot_body(m, self.ex.opts), True)

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

    def _check_known(self, tickers: list[str], cmd: str | None = None) -> None:
        """Error 16 for an unknown market; with ``new_market_not_found_s`` also for one created
        less than that long ago (``cmd`` names the command the switch applies to)."""
        markets = self.ex.engine.markets
        young = self.ex.opts.new_market_not_found_s * 1000
        for t in tickers:
            m = markets.get(t)
            if m is None:
                raise CommandError(16, t)
            if young and cmd is not None and self.ex.engine.now_ms - m.created_ms < young:
                self.ex.counters.not_found_new += 1
                self._effect("not_found_new", ticker=t, cmd=cmd)
                raise CommandError(16, t)

    def _new_sub(self, channel: str) -> Sub:
        sub = Sub(self._next_sid, channel, self.ex.opts.seq_start)
        self._next_sid += 1
        self.subs[sub.sid] = sub
        return sub

    def _index(self, sub: Sub, ticker: str) -> None:
        self.book_index.setdefault(ticker, []).append(sub)

    def _drop_sub(self, sub: Sub) -> None:
        self.subs.pop(sub.sid, None)
        for t in sub.tickers:
            self._unindex(sub, t)
        lst = self.notice_subs.get(sub.channel)
        if lst is not None and sub in lst:
            lst.remove(sub)

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
            # channels we do not model are accepted and stay silent, as a real but quiet
            # channel would; anything else is error 8
            if ch not in KALSHI_CHANNELS:
                raise CommandError(8)
        channels = list(dict.fromkeys(channels))
        tickers = self._tickers(params)
        for ch in channels:
            if ch in PRIVATE_CHANNELS and not self.authenticated:
                raise CommandError(9)
        if ORDERBOOK_CHANNEL in channels:
            if not tickers:
                raise CommandError(14)
            self._check_known(tickers, "subscribe")
            if len(tickers) > self.ex.opts.max_markets_per_sub:
                raise CommandError(26)
        elif tickers:
            self._check_known(tickers)
        f = self.ex.faults
        if f.subscribe_error_rate and self.rng.random() < f.subscribe_error_rate:
            self.ex.counters.subscribe_errors += 1
            raise CommandError(f.subscribe_error_code)
        mode = self.ex.opts.duplicate_subscribe
        if mode == "error":
            for ch in channels:
                for s in self.subs.values():
                    if s.channel != ch:
                        continue
                    if ch != ORDERBOOK_CHANNEL:
                        raise CommandError(6)
                    dup = next((t for t in tickers if t in s.tickers), None)
                    if dup is not None:
                        raise CommandError(6, dup)
        existing: dict[str, Sub] = {}
        if mode == "merge":
            for ch in channels:
                old = next((s for s in self.subs.values() if s.channel == ch), None)
                if old is not None:
                    existing[ch] = old
            ob = existing.get(ORDERBOOK_CHANNEL)
            if ob is not None:
                added = [t for t in tickers if t not in ob.tickers]
                if len(ob.tickers) + len(added) > self.ex.opts.max_markets_per_sub:
                    raise CommandError(26)
        for ch in channels:
            old = existing.get(ch)
            if old is not None:
                self._merge(cmd_id, old, tickers)
                continue
            sub = self._new_sub(ch)
            sub.skip_ticker_ack = bool(params.get("skip_ticker_ack"))
            self._answer(
                cmd_id, {"type": "subscribed", "msg": {"channel": ch, "sid": sub.sid}}, True
            )
            if ch == ORDERBOOK_CHANNEL:
                for t in tickers:
                    sub.tickers[t] = None
                    self._index(sub, t)
                for t in tickers:
                    self.send_snapshot(sub, t)
            elif ch in self.notice_subs:
                self.notice_subs[ch].append(sub)
            else:
                for t in tickers:
                    sub.tickers[t] = None

    def _merge(self, cmd_id: Any, sub: Sub, tickers: list[str]) -> None:
        """A repeat subscribe merged into ``sub`` (docs/protocol.md §9, "repeat subscribe"): same
        tickers are a no-op with no fresh snapshot, new ones are added and snapshotted; the reply
        is an ``ok`` without sid."""
        added = []
        if sub.channel == ORDERBOOK_CHANNEL:
            added = [t for t in tickers if t not in sub.tickers]
        for t in added:
            sub.tickers[t] = None
            self._index(sub, t)
        self.ex.counters.merged_subscribes += 1
        self._effect("merged_subscribe", sid=sub.sid, channel=sub.channel, added=added)
        obj: dict[str, Any] = {"type": "ok"}
        if sub.channel == ORDERBOOK_CHANNEL:
            obj["msg"] = {"market_tickers": list(sub.tickers)}
        self._answer(cmd_id, obj, True)
        for t in added:
            self.send_snapshot(sub, t)

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
            sub = self.subs[sid]
            self._drop_sub(sub)
            seq = self._reply_seq(sub)
            self._answer(cmd_id, {"sid": sid, "seq": seq, "type": "unsubscribed"}, True)

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
            or sub.channel != ORDERBOOK_CHANNEL
        ):
            raise CommandError(13)
        tickers = self._tickers(params)
        if not tickers:
            raise CommandError(14)
        self._check_known(tickers, "add_markets" if action == "add_markets" else None)
        if action == "add_markets":
            new = [t for t in tickers if t not in sub.tickers]
            if len(sub.tickers) + len(new) > self.ex.opts.max_markets_per_sub:
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
            when = self.ex.opts.get_snapshot_ok
            if when == "before":
                self._ok(cmd_id, sub)
            for t in tickers:
                self.send_snapshot(sub, t)
            if when == "after":
                self._ok(cmd_id, sub)
            elif when == "none":
                self._effect("get_snapshot_without_ok", cmd_id=cmd_id, sid=sub.sid)

    def _ok(self, cmd_id: Any, sub: Sub) -> None:
        seq = self._reply_seq(sub)
        obj: dict[str, Any] = {"sid": sub.sid, "seq": seq, "type": "ok"}
        if not sub.skip_ticker_ack:
            obj["msg"] = {"market_tickers": list(sub.tickers)}
        self._answer(cmd_id, obj, True)

    def _list(self, cmd_id: Any, params: Any) -> None:
        self._answer(
            cmd_id,
            {
                "type": "ok",
                "msg": [{"channel": s.channel, "sid": s.sid} for s in self.subs.values()],
            },
            False,
        )


@dataclass(eq=False)
class Exchange:
    """Owns the engine and all sessions; routes engine events to subscribers. Its sessions share
    its engine, options, fault knobs, counters and effects."""

    engine: Engine
    opts: ProtocolOptions
    faults: FaultConfig
    counters: FaultCounters
    seed: int

    def __post_init__(self) -> None:
        self.sessions: dict[int, Session] = {}
        self._next_conn = 1
        self._fault_rng = random.Random(self.seed * 7_919 + 1)
        # held lifecycle notices: (release_ms, emission index, notice). A notice is "reordered"
        # when it goes out after one emitted later than it.
        self._held: list[tuple[int, int, Notice]] = []
        self._emitted_notices = 0
        self._max_dispatched = 0
        self.effects: list[dict[str, Any]] = []  # drained by the shell into ground truth
        self._last_pump_ms = self.engine.now_ms
        self._offset_s = round(self.opts.clock_offset_s)
        self._offset_ms = round(self.opts.clock_offset_s * 1000)

    def effect(self, effect: str, /, **fields: Any) -> None:
        """Record what a switch or fault did (a line of ground truth's ``effects.jsonl``),
        stamped with the exchange's time."""
        self.effects.append({"effect": effect, "t_ms": self.engine.now_ms, **fields})

    def open_session(self, authenticated: bool = True) -> Session:
        conn_id = self._next_conn
        self._next_conn += 1
        s = Session(self, conn_id, authenticated)
        self.sessions[conn_id] = s
        return s

    def close_session(self, conn_id: int) -> None:
        self.sessions.pop(conn_id, None)

    def pump(self) -> None:
        """Route everything the engine emitted since the last pump (and due held notices)."""
        events = self.engine.take()
        now = self.engine.now_ms
        f = self.faults
        if f.async_error_rate and now > self._last_pump_ms:
            self._async_errors((now - self._last_pump_ms) / 1000.0)
        self._last_pump_ms = max(self._last_pump_ms, now)
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
                            body = delta_body(ev, legacy, self._offset_ms)
                        for sub in subs:
                            s.emit(sub, DELTA_MSG, body, True)
            else:
                assert isinstance(ev, Notice)
                self._emitted_notices += 1
                index = self._emitted_notices
                if f.lifecycle_drop_rate and self._fault_rng.random() < f.lifecycle_drop_rate:
                    self.counters.lifecycle_dropped += 1
                    self.effect(
                        "lifecycle_dropped",
                        kind=ev.kind,
                        channel=ev.channel,
                        ticker=ev.ticker,
                        event_type=ev.msg.get("event_type"),
                    )
                    continue
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
            for sub in s.notice_subs[n.channel]:
                if body is None:
                    body = notice_body(n, self._offset_s)
                s.emit(sub, n.kind, body, seq_on)

    def _async_errors(self, dt_s: float) -> None:
        """Each live sid fails with probability ``async_error_rate * dt``."""
        f = self.faults
        p = f.async_error_rate * dt_s
        rng = self._fault_rng
        for s in list(self.sessions.values()):
            for sub in list(s.subs.values()):
                if rng.random() < p:
                    s.async_error(sub, rng.choice(f.async_error_codes))
