"""The paper session: feed events in, broker and actor in between, paper-log rows out.

Sans-I/O and shared by every driver: the live tap and a replay hand it the same ``feed.events``
in the same order, so a deterministic policy gets the same fills in both. Its clock is the
exchange's (``ts_ms`` of book deltas, never decreasing), not the machine's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, assert_never

from feed.events import (
    BookUpdate,
    FeedEvent,
    Hello,
    Lagged,
    LifecycleEvent,
    Membership,
    RecordMark,
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
        match ev:
            case Hello():
                self.session_id = ev.session_id
            case SessionEnded():
                self.ended = True
            case Lagged():  # every book is stale until its fresh snapshot
                for m in self.broker.markets.values():
                    m.book.valid = False
            case BookUpdate() | LifecycleEvent() | ValidityChange():
                if self.markets is None or ev.market_ticker in self.markets:
                    return self._market_event(ev)
            case Membership() | RecordMark():
                pass  # joins and leaves: the broker learns of a market from its book and lifecycle
            case other:
                assert_never(other)
        return []

    def _market_event(self, ev: BookUpdate | LifecycleEvent | ValidityChange) -> list[Row]:
        """One market's event: the broker first, then the actor sees the market."""
        ticker, seq = ev.market_ticker, ev.record_seq
        reports: list[Report] = []
        match ev:
            case BookUpdate():
                reports += self._book(ev)
                event = "book"
            case LifecycleEvent():
                reports += self.broker.on_lifecycle(ev, self.now_ns)
                event = ev.event_type
            case ValidityChange():  # no actor call: the book itself did not change
                self.broker.set_valid(ticker, ev.state is Validity.VALID)
                return []
            case other:
                assert_never(other)
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
        last = self._last_mark.get(ticker)
        if self.broker.market(ticker).position != 0 and (
            last is None or self.now_ns - last >= MARK_EVERY_NS
        ):
            self._last_mark[ticker] = self.now_ns
            rows.append(Row(self.broker.mark(ticker, self.now_ns), seq, self.broker.equity()))
        return rows

    def _book(self, ev: BookUpdate) -> list[Report]:
        """The clock moves to the update's exchange time; a delta may fill our resting orders."""
        if ev.ts_ms is not None:
            self.now_ns = max(self.now_ns, ev.ts_ms * 1_000_000)
        ticker = ev.market_ticker
        if ev.is_snapshot:
            return self.broker.on_snapshot(ticker, ev.yes, ev.no, self.now_ns, ev.valid)
        self.broker.set_valid(ticker, ev.valid)  # a delta breaking the book fills nothing
        if ev.side is None or ev.price is None or ev.delta is None:
            return []
        return self.broker.on_delta(ticker, ev.side, ev.price, ev.delta, self.now_ns)

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
