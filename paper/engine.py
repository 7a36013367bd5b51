"""The paper session: feed events in, broker and actor in between, paper-log rows out.

Sans-I/O and shared by every driver: the live tap and a replay hand it the same ``feed.events``
in the same order, so a deterministic policy gets the same fills in both. Its clock is the
exchange's (``ts_ms`` of book deltas, never decreasing), not the machine's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from feed.events import (
    BookUpdate,
    FeedEvent,
    Hello,
    Lagged,
    LifecycleEvent,
    SessionEnded,
    Validity,
    ValidityChange,
)
from paper.actor import Actor, Decision, observe
from paper.broker import NS, Broker, Report
from paper.fees import FINE_PER_DOLLAR
from schemas.units import PRICE_SCALE


class PolicyError(Exception):
    """The actor raised, or returned something that is not a ``Decision`` (or None)."""


MARK_EVERY_NS = NS
"""At most one mark-to-mid row per market per second of exchange time while we hold a position:
enough for an equity curve, few enough rows for a day of live trading."""


@dataclass(slots=True)
class Row:
    """One paper-log entry before it is written: the broker's report plus where it happened."""

    report: Report
    record_seq: int | None
    equity: Fraction


@dataclass
class PaperSession:
    """Drive ``actor`` with feed events through ``broker``. ``markets``: only these tickers
    (None: every market the feed shows)."""

    actor: Actor
    broker: Broker = field(default_factory=Broker)
    top_n: int = 5
    markets: frozenset[str] | None = None
    session_id: int | None = None
    now_ns: int = 0
    ended: bool = False
    events: int = 0
    _last_mark: dict[str, int] = field(default_factory=dict)

    def handle(self, ev: FeedEvent) -> list[Row]:
        """Apply one feed event; return the paper-log rows it produced."""
        self.events += 1
        if isinstance(ev, Hello):
            self.session_id = ev.session_id
            return []
        if isinstance(ev, SessionEnded):
            self.ended = True
            return []
        if isinstance(ev, Lagged):  # every book is stale until its fresh snapshot
            for m in self.broker.markets.values():
                m.book.valid = False
            return []
        ticker = getattr(ev, "market_ticker", None)
        if ticker is None or (self.markets is not None and ticker not in self.markets):
            return []
        seq = getattr(ev, "record_seq", None)
        reports: list[Report] = []
        if isinstance(ev, BookUpdate):
            if ev.ts_ms is not None:
                self.now_ns = max(self.now_ns, ev.ts_ms * 1_000_000)
            if ev.is_snapshot:
                reports += self.broker.on_snapshot(ticker, ev.yes, ev.no, self.now_ns, ev.valid)
            elif ev.side is not None and ev.price is not None and ev.delta is not None:
                self.broker.set_valid(ticker, ev.valid)  # a delta breaking the book fills nothing
                reports += self.broker.on_delta(ticker, ev.side, ev.price, ev.delta, self.now_ns)
            else:
                self.broker.set_valid(ticker, ev.valid)
            event = "book"
        elif isinstance(ev, LifecycleEvent):
            reports += self.broker.on_lifecycle(ev, self.now_ns)
            event = ev.event_type
        elif isinstance(ev, ValidityChange):
            self.broker.set_valid(ticker, ev.state is Validity.VALID)
            return self._rows(reports, seq)
        else:
            return []
        obs = observe(self.broker, ticker, self.now_ns, event, self.top_n)
        name = type(self.actor).__name__
        try:
            decision = self.actor.on_event(obs)
        except Exception as exc:
            raise PolicyError(
                f"policy {name} raised {type(exc).__name__} on {ticker} ({event}, record "
                f"{seq}): {exc}"
            ) from exc
        if decision is not None:
            if not isinstance(decision, Decision):
                raise PolicyError(
                    f"policy {name} returned {type(decision).__name__}: on_event must return "
                    "paper.actor.Decision(orders=[...], cancels=[...]) or None"
                )
            reports += self.apply(decision)
        rows = self._rows(reports, seq)
        m = self.broker.market(ticker)
        last = self._last_mark.get(ticker)
        if m.position != 0 and (last is None or self.now_ns - last >= MARK_EVERY_NS):
            self._last_mark[ticker] = self.now_ns
            mark_x2 = m.mark_x2()
            mark = Report(
                "mark",
                self.now_ns,
                ticker,
                yes_price=None if mark_x2 is None else mark_x2 // 2,
                cash_after=self.broker.cash,
                position_after=m.position,
            )
            rows.append(Row(mark, seq, self.broker.equity()))
        return rows

    def apply(self, decision: Decision) -> list[Report]:
        reports: list[Report] = []
        for c in decision.cancels:
            reports += self.broker.cancel(c, self.now_ns)
        for o in decision.orders:
            reports += self.broker.submit(o, self.now_ns)
        return reports

    def _rows(self, reports: list[Report], seq: int | None) -> list[Row]:
        if not reports:
            return []
        equity = self.broker.equity()
        return [Row(r, seq, equity) for r in reports]

    def summary(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "cash": self.broker.cash,
            "equity": float(self.broker.equity()) / PRICE_SCALE,
            "fees_paid_usd": self.broker.fees_paid_fine / FINE_PER_DOLLAR,
            "positions": {t: m.position for t, m in self.broker.markets.items() if m.position},
        }
