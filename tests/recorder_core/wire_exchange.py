"""A small reference exchange speaking wire frames, for tests of the connection core (no I/O).

It applies commands the way ``docs/protocol.md`` describes them (§3 commands and replies, §4 book
channels, §5 sequence numbers) and can play each uncertain point either way: replies with or
without ``id``, ``get_snapshot`` with an ``ok`` before its snapshots, after them or none, a repeat
subscribe as a new sid, merged (``ok`` without sid) or error 6, and error 16 for markets it does
not list yet. Replies and data are queued as raw JSON
bytes in ``outbox``; the test decides when (and whether) each one is delivered. It keeps the true
book of every market so tests can compare the core's books with the truth.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson

from recorder.subscriptions import Command
from schemas.wire import format_price, format_size

PRICES = (10_000, 20_000, 30_000, 40_000)  # micro-dollars: bids on each side never cross


@dataclass
class WireExchange:
    ids: bool = True
    snapshot_ok: str = "before"  # before | after | none
    repeat_subscribe: str = "new_sid"  # new_sid | merge | error6
    unlisted: set[str] = field(default_factory=set)  # error 16 until listed
    sids: dict[int, dict[str, None]] = field(default_factory=dict)
    lifecycle: dict[int, str] = field(default_factory=dict)
    seq: dict[int, int] = field(default_factory=dict)
    books: dict[str, dict[tuple[str, int], int]] = field(default_factory=dict)
    outbox: list[bytes] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    _next_sid: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- helpers -------------------------------------------------------------------------------
    def _send(self, obj: dict[str, Any]) -> None:
        self.outbox.append(orjson.dumps(obj))

    def _reply(self, cmd_id: int, obj: dict[str, Any]) -> None:
        if self.ids:
            obj = {"id": cmd_id, **obj}
        self._send(obj)

    def _next_seq(self, sid: int) -> int:
        self.seq[sid] = self.seq.get(sid, 0) + 1
        return self.seq[sid]

    def holder(self, ticker: str) -> int | None:
        return next((s for s, held in self.sids.items() if ticker in held), None)

    def book(self, ticker: str) -> dict[tuple[str, int], int]:
        return self.books.setdefault(ticker, {("yes", PRICES[0]): 100, ("no", PRICES[1]): 200})

    def snapshot(self, sid: int, ticker: str) -> None:
        levels = self.book(ticker)
        msg: dict[str, Any] = {"market_ticker": ticker, "market_id": "m-" + ticker}
        for side in ("yes", "no"):
            lv = sorted((p, s) for (sd, p), s in levels.items() if sd == side)
            if lv:
                msg[f"{side}_dollars_fp"] = [[format_price(p), format_size(s)] for p, s in lv]
        self._send(
            {"type": "orderbook_snapshot", "sid": sid, "seq": self._next_seq(sid), "msg": msg}
        )

    def holders(self, ticker: str) -> list[int]:
        return [s for s, held in self.sids.items() if ticker in held]

    def delta(self, ticker: str, side: str, price: int, change: int, *, lose: bool = False) -> bool:
        """A book change of a subscribed market, sent on every sid holding it; ``lose`` drops
        those frames (a seq gap on each)."""
        sids = self.holders(ticker)
        if not sids:
            return False
        levels = self.book(ticker)
        size = levels.get((side, price), 0) + change
        if size < 0:
            return False
        if size:
            levels[(side, price)] = size
        else:
            levels.pop((side, price), None)
        for sid in sids:
            seq = self._next_seq(sid)
            if lose:
                continue
            msg = {
                "market_ticker": ticker,
                "market_id": "m-" + ticker,
                "price_dollars": format_price(price),
                "delta_fp": format_size(change),
                "side": side,
                "ts_ms": 1_700_000_000_000 + seq,
            }
            self._send({"type": "orderbook_delta", "sid": sid, "seq": seq, "msg": msg})
        return True

    def inject(self, ticker: str, msg: dict[str, Any], kind: str = "orderbook_delta") -> None:
        """A frame of ``kind`` for ``ticker`` with this exact ``msg`` (odd values included),
        in order on its sid; the true book is not changed."""
        sid = self.holder(ticker)
        if sid is None:
            raise ValueError(f"{ticker} is not subscribed")
        body = {"market_ticker": ticker, "market_id": "m-" + ticker, **msg}
        self._send({"type": kind, "sid": sid, "seq": self._next_seq(sid), "msg": body})

    def lifecycle_notice(self, ticker: str, event_type: str, **fields: Any) -> None:
        for sid in self.lifecycle:
            msg = {"market_ticker": ticker, "event_type": event_type, **fields}
            self._send({"type": "market_lifecycle_v2", "sid": sid, "msg": msg})

    def kill_sid(self, sid: int, code: int = 17) -> None:
        """A live sid breaks on the exchange side: gone, and an error without id says so."""
        if self.sids.pop(sid, None) is not None:
            self._send({"type": "error", "sid": sid, "msg": {"code": code, "msg": "Internal"}})

    def disconnect(self) -> None:
        self.sids.clear()
        self.lifecycle.clear()
        self.seq.clear()
        self.outbox.clear()

    # -- commands --------------------------------------------------------------------------------
    def handle(self, c: Command) -> None:
        self.commands.append(c)
        p = c.params
        if c.cmd == "subscribe":
            channels = p.get("channels") or []
            if channels != ["orderbook_delta"]:
                for ch in channels:
                    sid = next(self._next_sid)
                    self.lifecycle[sid] = ch
                    self._reply(
                        c.cmd_id, {"type": "subscribed", "msg": {"channel": ch, "sid": sid}}
                    )
                return
            tickers = list(p["market_tickers"])
            missing = next((t for t in tickers if t in self.unlisted), None)
            if missing is not None:
                self._error(c.cmd_id, 16, "Market not found", missing)
                return
            if self.sids and self.repeat_subscribe == "error6":
                dup = next((t for t in tickers if self.holder(t) is not None), None)
                if dup is not None:
                    self._error(c.cmd_id, 6, "Already subscribed", dup)
                    return
            if self.sids and self.repeat_subscribe == "merge":
                sid = next(iter(self.sids))
                added = [t for t in tickers if t not in self.sids[sid]]
                self.sids[sid].update(dict.fromkeys(added))
                self._reply(
                    c.cmd_id, {"type": "ok", "msg": {"market_tickers": list(self.sids[sid])}}
                )
                for t in added:
                    self.snapshot(sid, t)
                return
            sid = next(self._next_sid)
            self.sids[sid] = dict.fromkeys(tickers)
            self._reply(
                c.cmd_id, {"type": "subscribed", "msg": {"channel": "orderbook_delta", "sid": sid}}
            )
            for t in tickers:
                self.snapshot(sid, t)
        elif c.cmd == "unsubscribe":
            sid = p["sids"][0]
            if sid not in self.sids and sid not in self.lifecycle:
                self._error(c.cmd_id, 7, "Unknown subscription ID")
                return
            self.sids.pop(sid, None)
            self.lifecycle.pop(sid, None)
            self._reply(c.cmd_id, {"type": "unsubscribed", "sid": sid, "seq": self._next_seq(sid)})
        elif c.cmd == "update_subscription":
            sid = p["sids"][0]
            if sid not in self.sids:
                self._error(c.cmd_id, 7, "Unknown subscription ID")
                return
            held = self.sids[sid]
            tickers = list(p["market_tickers"])
            action = p["action"]
            if action == "add_markets":
                missing = next((t for t in tickers if t in self.unlisted), None)
                if missing is not None:
                    self._error(c.cmd_id, 16, "Market not found", missing)
                    return
                held.update(dict.fromkeys(tickers))
                self._ok(c.cmd_id, sid, list(held))
                for t in tickers:
                    self.snapshot(sid, t)
            elif action == "delete_markets":
                for t in tickers:
                    held.pop(t, None)
                self._ok(c.cmd_id, sid, list(held))
            else:  # get_snapshot
                chosen = [t for t in tickers if t in held]
                if self.snapshot_ok == "before":
                    self._ok(c.cmd_id, sid, tickers)
                for t in chosen:
                    self.snapshot(sid, t)
                if self.snapshot_ok == "after":
                    self._ok(c.cmd_id, sid, tickers)

    def _ok(self, cmd_id: int, sid: int, tickers: list[str]) -> None:
        self._reply(
            cmd_id,
            {
                "type": "ok",
                "sid": sid,
                "seq": self._next_seq(sid),
                "msg": {"market_tickers": tickers},
            },
        )

    def _error(self, cmd_id: int, code: int, text: str, ticker: str | None = None) -> None:
        msg: dict[str, Any] = {"code": code, "msg": text}
        if ticker is not None:
            msg["market_ticker"] = ticker
        self._reply(cmd_id, {"type": "error", "msg": msg})
