"""The actor interface: one policy API for live paper trading, backtests and training.

On every event of one of its markets (a book update, a lifecycle event) an actor gets an
:class:`Observation` and returns a :class:`Decision` (limit orders and cancels) or ``None``. The
same actor object runs unchanged against the live tap, a replay, or (through
``paper.env.PaperEnv``'s action mapping) the Gymnasium environment.

Exact units: prices micro-dollars, sizes centi-contracts, cash micro-dollars (``schemas.units``).
Times are the exchange's clock as the feed carries it (``ts_ms`` of book deltas), never the
machine's, so a replay decides exactly as the live run did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

from feed.events import Level, best_price
from paper.broker import NS, Broker, MarketState
from paper.orders import Cancel, Order


@dataclass(frozen=True, slots=True)
class OrderView:
    """One of our open orders as the actor sees it (YES view: ``buy`` YES at ``yes_price``)."""

    order_id: int
    order: Order
    buy: bool
    yes_price: int
    remaining: int
    queue_ahead: int


@dataclass(frozen=True, slots=True)
class Observation:
    """What an actor knows at one event of one market.

    Book: ``yes_bids`` and ``yes_asks`` (YES view; an ask at a is a NO bid at 1 − a), top N, best
    first. ``book_valid`` false means the recorded book is not trustworthy now (after a gap, before
    the next snapshot): the broker accepts no order then.

    Lifecycle: ``time_since_open_ns`` and ``time_to_close_ns`` are from the schedule known at this
    moment (a later ``close_date_updated`` never leaks backwards); ``life_fraction`` is
    ``time_since_open / (close − open)`` on that schedule (None while the schedule is unknown);
    ``status`` uses Kalshi's REST words (initialized, active, inactive, closed, determined).
    """

    t_ns: int
    market_ticker: str
    event: str
    """"book" or the lifecycle event_type ("created", "determined", ...)."""
    yes_bids: tuple[Level, ...]
    yes_asks: tuple[Level, ...]
    book_valid: bool
    time_since_open_ns: int | None
    time_to_close_ns: int | None
    life_fraction: float | None
    status: str
    position: int
    """Signed YES centi-contracts (negative: NO contracts)."""
    open_orders: tuple[OrderView, ...]
    cash: int
    equity: Fraction
    """Cash + every position marked to mid (micro-dollars, exact)."""

    @property
    def best_bid(self) -> int | None:
        return best_price(self.yes_bids)

    @property
    def best_ask(self) -> int | None:
        return best_price(self.yes_asks)

    @property
    def mid_x2(self) -> int | None:
        """bid + ask in micro-dollars (twice the mid, exact) or None if a side is empty."""
        b, a = self.best_bid, self.best_ask
        return None if b is None or a is None else b + a


@dataclass(slots=True)
class Decision:
    """What an actor wants done now: new limit orders and cancels (cancels apply first)."""

    orders: list[Order] = field(default_factory=list)
    cancels: list[Cancel] = field(default_factory=list)


class Actor(Protocol):
    """A policy. Implement ``on_event``; keep state on ``self`` if you need it."""

    def on_event(self, obs: Observation) -> Decision | None: ...


def observe(broker: Broker, ticker: str, t_ns: int, event: str, top_n: int = 5) -> Observation:
    """The observation of ``ticker`` at ``t_ns`` from the broker's state."""
    m: MarketState = broker.market(ticker)
    bids, asks = m.book.top(top_n)
    since = None if m.open_ts is None else t_ns - m.open_ts * NS
    to_close = None if m.close_ts is None else m.close_ts * NS - t_ns
    frac = None
    if m.open_ts is not None and m.close_ts is not None and m.close_ts > m.open_ts:
        frac = (t_ns - m.open_ts * NS) / ((m.close_ts - m.open_ts) * NS)
    views = tuple(
        OrderView(
            o.order_id,
            o.order,
            o.resting.buy,
            o.resting.price,
            o.resting.remaining,
            o.resting.queue_ahead,
        )
        for o in m.orders.values()
    )
    return Observation(
        t_ns=t_ns,
        market_ticker=ticker,
        event=event,
        yes_bids=tuple(bids),
        yes_asks=tuple(asks),
        book_valid=m.book.valid,
        time_since_open_ns=since,
        time_to_close_ns=to_close,
        life_fraction=frac,
        status=m.status(t_ns),
        position=m.position,
        open_orders=views,
        cash=broker.cash,
        equity=broker.equity(),
    )
