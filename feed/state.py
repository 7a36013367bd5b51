"""The tap's sans-I/O core: session-log rows in, books + validity + what to publish out.

Why rows: the live tap is fed the very row tuples the recorder writes (``SessionLog.observer``)
and the replay reads the same rows back from the segments, so one state machine makes live and
replay identical by construction.

Rules (docs/protocol.md §5, §9; they mirror the recorder's own book keeping):

* a market gets a book when the session joins it (``market_joined``), ``unanchored``;
* an ``orderbook_snapshot`` frame replaces its book: ``valid``;
* an ``orderbook_delta`` is applied while ``valid``; a negative level makes it ``resyncing``;
* seq is checked per (connection, epoch, sid), like the recorder: a forward gap makes every
  market of that sid ``resyncing`` (the gapped delta is not applied); an old or duplicate seq is
  skipped; ``ok``/``unsubscribed`` replies move the last seq with ``max``;
* ``gap``, ``resync``, ``loss``, ``disconnected`` and book ``anomaly`` decisions make the markets
  they name ``resyncing``; ``market_left`` makes a market ``unanchored`` (no longer followed).

Malformed frames are recorded only (the recorder ignores them too). Nothing here raises on
recorded input: odd rows are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from feed.book import apply_delta
from feed.events import StatusMessage, Validity
from schemas.log import LOG_COLUMNS
from schemas.wire import (
    CURRENT,
    DELTA_MSG,
    LIFECYCLE_CHANNEL_MSG_TYPES,
    SNAPSHOT_MSG,
    empty_sides_listed,
    snapshot_format,
    snapshot_levels,
)

_COL = {name: i for i, name in enumerate(LOG_COLUMNS)}
RECORD_SEQ = _COL["record_seq"]
RECV_NS = _COL["recv_ns"]
KIND = _COL["kind"]
CONN = _COL["conn"]
EPOCH = _COL["epoch"]
MSG_TYPE = _COL["msg_type"]
SID = _COL["sid"]
SEQ = _COL["seq"]
TICKER = _COL["market_ticker"]
MALFORMED = _COL["malformed"]
RAW = _COL["raw"]
SIDE = _COL["side"]
PRICE = _COL["price"]
DELTA = _COL["delta"]
TS_MS = _COL["ts_ms"]
SESSION_ID = _COL["session_id"]


SidKey = tuple[int | None, int | None, int]


@dataclass(slots=True)
class Market:
    """One market's book as the tap knows it."""

    ticker: str
    yes: dict[int, int] = field(default_factory=dict)
    no: dict[int, int] = field(default_factory=dict)
    state: Validity = Validity.UNANCHORED
    reason: str = "joined"
    market_id: str | None = None
    sid: SidKey | None = None
    followed: bool = True
    """False after ``market_left``: the recorder no longer books it (the book is frozen)."""


class Publisher(Protocol):
    """Where the state machine's output goes (``feed.fanout.Fanout``)."""

    def snapshot(self, m: Market, row: tuple[Any, ...]) -> None: ...
    def delta(self, m: Market, row: tuple[Any, ...]) -> None: ...
    def lifecycle(self, row: tuple[Any, ...]) -> None: ...
    def status(self, msg_type: str, msg: dict[str, Any], record_seq: int) -> None: ...


class NullPublisher:
    """Publishes nothing (pre-rolling a replay up to ``--from``)."""

    def snapshot(self, m: Market, row: tuple[Any, ...]) -> None:
        pass

    def delta(self, m: Market, row: tuple[Any, ...]) -> None:
        pass

    def lifecycle(self, row: tuple[Any, ...]) -> None:
        pass

    def status(self, msg_type: str, msg: dict[str, Any], record_seq: int) -> None:
        pass


def _payload(row: tuple[Any, ...]) -> dict[str, Any]:
    try:
        obj = orjson.loads(row[RAW])
    except orjson.JSONDecodeError:
        return {}
    return obj if isinstance(obj, dict) else {}


class TapState:
    """Books and validity of one session, rebuilt from its log rows in record order."""

    def __init__(self, publisher: Publisher | None = None, markets: set[str] | None = None) -> None:
        self.pub: Publisher = publisher or NullPublisher()
        self.only = markets
        """If set, only these markets exist for consumers (``kalshi-replay --markets``)."""
        self.session_id: int | None = None
        self.settings: dict[str, Any] = {}
        self.record_seq = 0
        self.recv_ns = 0
        self.wire_format = CURRENT
        self.empty_as_list = False
        """Recorded snapshots wrote an empty side as ``[]`` (served the same way)."""
        self.markets: dict[str, Market] = {}
        self.sid_last: dict[SidKey, int] = {}
        self.sid_markets: dict[SidKey, set[str]] = {}
        self.ended: str | None = None

    # ------------------------------------------------------------------ input
    def on_row(self, row: tuple[Any, ...]) -> None:
        """Process one ``LOG_SCHEMA`` row (a tuple in ``LOG_COLUMNS`` order)."""
        rs = row[RECORD_SEQ]
        if rs <= self.record_seq:
            return  # already seen (overlapping files of a recovered session)
        self.record_seq = rs
        self.recv_ns = row[RECV_NS]
        if self.session_id is None:
            self.session_id = row[SESSION_ID]
        kind = row[KIND]
        if kind == "in":
            if row[MALFORMED]:
                return
            t = row[MSG_TYPE]
            if t == DELTA_MSG:
                self._delta(row)
            elif t == SNAPSHOT_MSG:
                self._snapshot(row)
            elif t in LIFECYCLE_CHANNEL_MSG_TYPES:
                ticker = row[TICKER]
                if self.only is None or ticker is None or ticker in self.only:
                    self.pub.lifecycle(row)
            elif t in ("ok", "unsubscribed"):
                self._reply(row)
        elif kind == "decision":
            self._decision(row)

    # ------------------------------------------------------------------ frames
    def _seq(self, row: tuple[Any, ...]) -> bool:
        """Seq check of a data frame; False if it is stale (skip it)."""
        sid, seq = row[SID], row[SEQ]
        if sid is None or seq is None:
            return True
        key = (row[CONN], row[EPOCH], sid)
        last = self.sid_last.get(key)
        self.sid_last[key] = seq if last is None or seq > last else last
        if last is None or seq == last + 1:
            return True
        if seq > last:
            for t in sorted(self.sid_markets.get(key, ())):
                self._invalidate(t, Validity.RESYNCING, "gap", row[RECORD_SEQ])
            return True
        return False

    def _delta(self, row: tuple[Any, ...]) -> None:
        if not self._seq(row):
            return
        m = self.markets.get(row[TICKER])
        if m is None or m.state is not Validity.VALID or not m.followed:
            return
        side, price, delta = row[SIDE], row[PRICE], row[DELTA]
        levels = m.yes if side == "yes" else m.no if side == "no" else None
        if levels is None or price is None or delta is None:
            self._invalidate(m.ticker, Validity.RESYNCING, "unreadable_delta", row[RECORD_SEQ])
            return
        if apply_delta(levels, price, delta) < 0:
            self._invalidate(m.ticker, Validity.RESYNCING, "negative_size", row[RECORD_SEQ])
            return
        self.pub.delta(m, row)

    def _snapshot(self, row: tuple[Any, ...]) -> None:
        self._seq(row)
        ticker = row[TICKER]
        m = self.markets.get(ticker)
        if m is None or not m.followed:
            return
        if row[SID] is not None:
            key = (row[CONN], row[EPOCH], row[SID])
            if m.sid is not None and m.sid != key:
                self.sid_markets.get(m.sid, set()).discard(ticker)
            m.sid = key
            self.sid_markets.setdefault(key, set()).add(ticker)
        try:
            body = orjson.loads(row[RAW])
            msg = body.get("msg") if isinstance(body, dict) else None
            if not isinstance(msg, dict):
                raise ValueError("snapshot msg is not an object")
            yes, no = snapshot_levels(msg)
        except (ValueError, orjson.JSONDecodeError):
            self._invalidate(ticker, Validity.RESYNCING, "bad_snapshot", row[RECORD_SEQ])
            return
        self.wire_format = snapshot_format(msg)
        if not yes or not no:
            self.empty_as_list = empty_sides_listed(msg)
        mid = msg.get("market_id")
        m.market_id = mid if isinstance(mid, str) else m.market_id
        m.yes, m.no = yes, no
        was = m.state
        m.state, m.reason = Validity.VALID, "snapshot"
        self.pub.snapshot(m, row)
        if was is not Validity.VALID:
            self._publish_state(m, row[RECORD_SEQ])

    def _reply(self, row: tuple[Any, ...]) -> None:
        sid, seq = row[SID], row[SEQ]
        if sid is None or seq is None:
            return
        key = (row[CONN], row[EPOCH], sid)
        last = self.sid_last.get(key)
        if last is not None and seq > last:
            self.sid_last[key] = seq
        if row[MSG_TYPE] == "unsubscribed":
            self.sid_last.pop(key, None)

    # ------------------------------------------------------------------ decisions
    def _decision(self, row: tuple[Any, ...]) -> None:
        name = row[MSG_TYPE]
        rs = row[RECORD_SEQ]
        if name == "session_start":
            self.settings = _payload(row)
            return
        if name == "session_end":
            p = _payload(row)
            self.ended = str(p.get("reason", "stopped"))
            self.pub.status(StatusMessage.SESSION_END, {"reason": self.ended}, rs)
            return
        if name in ("market_joined", "market_left", "market_skipped"):
            self._membership(name, row)
            return
        p = _payload(row)
        if name in ("gap", "resync"):
            tickers = p.get("market_tickers")
            for t in tickers if isinstance(tickers, list) else ():
                if isinstance(t, str):
                    self._invalidate(t, Validity.RESYNCING, name, rs)
        elif name == "loss":
            key = (row[CONN], row[EPOCH], row[SID])
            for t in sorted(self.sid_markets.get(key, ())):
                self._invalidate(t, Validity.RESYNCING, "loss", rs)
        elif name == "disconnected":
            conn, epoch = p.get("conn", row[CONN]), p.get("epoch", row[EPOCH])
            for t, m in sorted(self.markets.items()):
                if m.sid is not None and m.sid[0] == conn and m.sid[1] == epoch:
                    self._invalidate(t, Validity.RESYNCING, "disconnected", rs)
            # that connection's sids are gone for good (a reconnect gets new ones)
            for key in [k for k in self.sid_last if k[0] == conn and k[1] == epoch]:
                del self.sid_last[key]
                self.sid_markets.pop(key, None)
        elif name == "anomaly":
            t = p.get("market_ticker")
            if isinstance(t, str) and p.get("what") in ("negative_size", "bad_snapshot"):
                self._invalidate(t, Validity.RESYNCING, str(p.get("what")), rs)

    def _membership(self, name: str, row: tuple[Any, ...]) -> None:
        p = _payload(row)
        ticker = p.get("market_ticker", row[TICKER])
        if not isinstance(ticker, str):
            return
        if self.only is not None and ticker not in self.only:
            return
        rs = row[RECORD_SEQ]
        kind = name.removeprefix("market_")
        self.pub.status(
            StatusMessage.MARKET,
            {"market_ticker": ticker, "action": kind, "reason": p.get("reason"), "detail": p},
            rs,
        )
        if name == "market_joined":
            m = self.markets.get(ticker)
            if m is None:
                m = self.markets[ticker] = Market(ticker)
                self._publish_state(m, rs)
            else:
                m.followed = True
                self._invalidate(ticker, Validity.UNANCHORED, "joined", rs)
        elif name == "market_left":
            self._invalidate(ticker, Validity.UNANCHORED, "left", rs)
            m = self.markets.get(ticker)
            if m is not None:
                # A recorder runs for weeks: a left market keeps only its name (so it stays
                # known), not its levels.
                m.followed = False
                m.yes, m.no = {}, {}
                if m.sid is not None:
                    self.sid_markets.get(m.sid, set()).discard(ticker)
                    m.sid = None

    # ------------------------------------------------------------------ validity
    def _invalidate(self, ticker: str, state: Validity, reason: str, rs: int) -> None:
        m = self.markets.get(ticker)
        if m is None or m.state is state:
            return
        if state is Validity.RESYNCING and not m.followed:
            return
        m.state, m.reason = state, reason
        self._publish_state(m, rs)

    def _publish_state(self, m: Market, rs: int) -> None:
        self.pub.status(
            StatusMessage.BOOK_STATE,
            {"market_ticker": m.ticker, "state": m.state.value, "reason": m.reason},
            rs,
        )
