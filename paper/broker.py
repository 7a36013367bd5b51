"""The broker: a pure simulated exchange for *our* orders, fed by recorded or live books.

Sans-I/O: no sockets, clocks or files; the caller passes every event with its time (``t_ns``) and
gets back what happened (:class:`Report` records: orders accepted or rejected, fills, cancels,
settlements). It never contacts Kalshi and has no way to: it only reads books it is given.

* **Fills** follow a pluggable :class:`~paper.fillmodel.FillModel` (default: conservative; the
  model and its limits are in ``paper.fillmodel``). Our orders never change the recorded book.
* **Fees** are Kalshi's (``paper.fees``): taker on what an order takes when it arrives, maker on
  resting fills, per-order rounding accumulator, balance kept at the member's precision.
* **Positions** are signed YES centi-contracts (negative = NO contracts; the duality lives in
  ``paper.orders.as_yes``). Cash is Kalshi's balance: buying YES at p costs p; buying NO (selling
  YES at 1 − p while not long) costs 1 − p; closing pays back the other way. Orders are accepted
  only while the cash not already reserved by open orders covers their opening cost plus fees.
* **Equity** is cash plus positions marked to the mid (a YES contract is worth the mid, a NO
  contract 1 − mid), exact (``Fraction``: a mid may end in half a micro-dollar).
* **Lifecycle**: orders are accepted while the market is active (after its open time, before its
  close time as known then, not paused, not determined; a market whose schedule we never saw is
  taken as active). ``deactivated`` pauses it; the ``activated`` that follows cancels our resting
  orders (as Kalshi cancels all resting orders then). ``determined`` stops trading, cancels our open
  orders and pays each YES contract the settlement value ($1 on a yes result) and each NO contract
  the rest. A book that is not valid (gap, not anchored) fills nothing and accepts no order.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from feed.events import LifecycleEvent
from paper.book import Book
from paper.fees import (
    CENT,
    FINE_PER_MICRO,
    FeeAccumulator,
    FeeSchedule,
    FillCharge,
    Liquidity,
    trade_fee,
)
from paper.fillmodel import ConservativeFillModel, FillModel, Resting
from paper.orders import Cancel, Order, TimeInForce, as_yes
from schemas.units import PRICE_SCALE, SIZE_SCALE

NS = 1_000_000_000


@dataclass(slots=True)
class OpenOrder:
    """One of our orders while it lives in the broker."""

    order_id: int
    order: Order
    resting: Resting
    accumulator: FeeAccumulator
    reserved: int
    """Micro-dollars of cash this order holds back (its remaining opening cost + taker fee)."""
    filled: int = 0


@dataclass(frozen=True, slots=True)
class Report:
    """One thing the broker did. ``kind``: order | reject | fill | cancel | settle | mark."""

    kind: str
    t_ns: int
    market_ticker: str
    order_id: int | None = None
    order: Order | None = None
    yes_buy: bool | None = None
    yes_price: int | None = None
    size: int | None = None
    liquidity: Liquidity | None = None
    charge: FillCharge | None = None
    reason: str | None = None
    level_price: int | None = None
    """For a fill: the recorded opposite level (YES price) whose shown size it used; None when
    the fill model filled a resting order without using one (queue depletion)."""
    cash_after: int = 0
    position_after: int = 0


@dataclass(slots=True)
class MarketState:
    """What the broker knows of one market."""

    ticker: str
    book: Book = field(default_factory=Book)
    taken: dict[tuple[bool, int], int] = field(default_factory=dict)
    position: int = 0
    open_ts: int | None = None
    close_ts: int | None = None
    paused: bool = False
    determined: bool = False
    result: str | None = None
    settlement_value: int | None = None
    last_mid_x2: int | None = None
    last_fill_price: int | None = None
    orders: dict[int, OpenOrder] = field(default_factory=dict)

    def status(self, t_ns: int) -> str:
        """Kalshi's REST vocabulary as known at ``t_ns``: initialized, active, inactive, closed,
        determined."""
        if self.determined:
            return "determined"
        if self.paused:
            return "inactive"
        if self.close_ts is not None and t_ns >= self.close_ts * NS:
            return "closed"
        if self.open_ts is not None and t_ns < self.open_ts * NS:
            return "initialized"
        return "active"

    def available(self, is_ask: bool, yes_price: int) -> int:
        return max(0, self.book.size(is_ask, yes_price) - self.taken.get((is_ask, yes_price), 0))

    def mark_x2(self) -> int | None:
        """Twice the YES mark in micro-dollars: the mid, else the last mid, else the last fill."""
        m = self.book.mid_x2 if self.book.valid else None
        if m is not None:
            return m
        if self.last_mid_x2 is not None:
            return self.last_mid_x2
        return None if self.last_fill_price is None else 2 * self.last_fill_price


def opening_cost(buy: bool, price: int, size: int, position: int) -> int:
    """Cash an order of ``size`` at YES ``price`` needs beyond what closing frees: micro-dollars,
    rounded up, plus its taker fee."""
    closable = max(0, -position) if buy else max(0, position)
    opening = max(0, size - closable)
    unit = price if buy else PRICE_SCALE - price
    cost = -((-unit * opening) // FINE_PER_MICRO)
    fee = trade_fee(price, size, Liquidity.TAKER, FeeSchedule()) if size > 0 else 0
    return cost + fee + CENT  # + the most the balance rounding can take


class Broker:
    """See the module docstring. ``cash`` is the starting balance in micro-dollars."""

    def __init__(
        self,
        cash: int = 1_000 * PRICE_SCALE,
        *,
        fill_model: FillModel | None = None,
        fees: FeeSchedule | None = None,
        maker_fee_series: frozenset[str] = frozenset(),
    ) -> None:
        self.cash = cash
        self.starting_cash = cash
        self.fill_model: FillModel = fill_model or ConservativeFillModel()
        self.fees = fees or FeeSchedule()
        self.maker_fee_series = maker_fee_series
        self.markets: dict[str, MarketState] = {}
        self._ids = itertools.count(1)
        self.fees_paid_fine = 0
        self._held: set[str] = set()
        """Tickers with a non-zero position (equity sums only these)."""

    # -- state -------------------------------------------------------------------------------

    def market(self, ticker: str) -> MarketState:
        m = self.markets.get(ticker)
        if m is None:
            m = self.markets[ticker] = MarketState(ticker)
        return m

    def schedule_for(self, ticker: str) -> FeeSchedule:
        series = ticker.split("-", 1)[0]
        if series in self.maker_fee_series and not self.fees.maker_fees:
            return FeeSchedule(maker_fees=True, balance_precision=self.fees.balance_precision)
        return self.fees

    def reserved(self) -> int:
        return sum(o.reserved for m in self.markets.values() for o in m.orders.values())

    def equity(self) -> Fraction:
        """Cash plus every position marked to mid, in micro-dollars (exact)."""
        total = self.cash * 200
        for ticker in self._held:
            total += self._value_x200(self.markets[ticker])
        return Fraction(total, 200)

    def _value_x200(self, m: MarketState) -> int:
        """200 × the position's value in micro-dollars: (mark × 2) × centi-contracts is an
        integer, so the sum stays in ints and one ``Fraction`` is built at the end."""
        if m.position == 0:
            return 0
        mark = m.mark_x2()
        if mark is None:
            return 0
        if m.position > 0:
            return mark * m.position
        return (2 * PRICE_SCALE - mark) * -m.position

    # -- market data -------------------------------------------------------------------------

    def on_snapshot(
        self,
        ticker: str,
        yes: list[tuple[int, int]] | tuple[tuple[int, int], ...],
        no: list[tuple[int, int]] | tuple[tuple[int, int], ...],
        t_ns: int,
        valid: bool = True,
    ) -> list[Report]:
        m = self.market(ticker)
        m.book.replace(yes, no)
        m.book.valid = valid
        for key in list(m.taken):
            shown = m.book.size(*key)
            if shown == 0:
                del m.taken[key]
            else:
                m.taken[key] = min(m.taken[key], shown)
        for o in m.orders.values():
            r = o.resting
            r.queue_ahead = min(r.queue_ahead, m.book.size(not r.buy, r.price))
        return self._after_book(m, t_ns)

    def on_delta(self, ticker: str, side: str, price: int, delta: int, t_ns: int) -> list[Report]:
        m = self.market(ticker)
        is_ask, yes_price, old, new = m.book.apply(side, price, delta)
        key = (is_ask, yes_price)
        if key in m.taken:
            if new == 0:
                del m.taken[key]
            else:
                m.taken[key] = min(m.taken[key], new)
        reports: list[Report] = []
        if m.book.valid and m.status(t_ns) == "active":
            for o in list(m.orders.values()):
                r = o.resting
                if r.buy != is_ask and r.price == yes_price:  # our own level
                    n = min(self.fill_model.level_changed(r, old, new), r.remaining)
                    if n > 0:
                        reports.append(self._fill(m, o, yes_price, n, Liquidity.MAKER, t_ns))
        reports.extend(self._after_book(m, t_ns))
        return reports

    def set_valid(self, ticker: str, valid: bool) -> None:
        """The feed says the book is (not) trustworthy; an invalid book fills nothing."""
        self.market(ticker).book.valid = valid

    def _after_book(self, m: MarketState, t_ns: int) -> list[Report]:
        if not m.book.valid:
            return []
        mid = m.book.mid_x2
        if mid is not None:
            m.last_mid_x2 = mid
        reports: list[Report] = []
        if m.status(t_ns) != "active":
            return reports
        for o in list(m.orders.values()):
            for price, n in self.fill_model.trade_through(o.resting, m.book, m.available):
                n = min(n, o.resting.remaining)
                if n <= 0:
                    break
                self._take_ledger(m, o.resting.buy, price, n)
                reports.append(
                    self._fill(m, o, o.resting.price, n, Liquidity.MAKER, t_ns, level=price)
                )
                if o.order_id not in m.orders:
                    break
        return reports

    def on_lifecycle(self, ev: LifecycleEvent, t_ns: int) -> list[Report]:
        """Apply one lifecycle notice, as the feed types it (live, replay or the env's own)."""
        m = self.market(ev.market_ticker)
        event_type, result = ev.event_type, ev.result
        if ev.open_ts is not None:
            m.open_ts = ev.open_ts
        if ev.close_ts is not None and event_type in ("created", "close_date_updated"):
            m.close_ts = ev.close_ts
        reports: list[Report] = []
        if event_type == "deactivated":
            m.paused = True
        elif event_type == "activated":
            if m.paused:  # Kalshi cancels every resting order on reactivation
                reports.extend(self._cancel_all(m, t_ns, "market_reactivated"))
            m.paused = False
        elif event_type == "determined" and not m.determined:
            reports.extend(self._cancel_all(m, t_ns, "market_determined"))
            m.determined = True
            m.result = result
            # a binary result decides; settlement_value only for other (scalar) results
            value = {"yes": PRICE_SCALE, "no": 0}.get((result or "").lower(), ev.settlement_value)
            m.settlement_value = value
            if value is not None and m.position != 0:
                reports.append(self._settle(m, value, t_ns))
        return reports

    # -- orders ------------------------------------------------------------------------------

    def submit(self, order: Order, t_ns: int) -> list[Report]:
        """Accept (and match) or reject one order."""
        m = self.market(order.market_ticker)
        why = order.validate()
        if why is None and m.status(t_ns) != "active":
            why = f"market is {m.status(t_ns)}: orders are accepted only while it is active"
        if why is None and not m.book.valid:
            why = "book not valid (gap or not anchored yet): wait for the next snapshot"
        view = as_yes(order.action, order.side, order.price)
        cost = 0
        if why is None:
            cost = opening_cost(view.buy, view.price, order.size, m.position)
            free = self.cash - self.reserved()
            if cost > free:
                why = f"insufficient cash: needs {cost} micro-dollars, {free} free"
        if why is not None:
            return [self._report("reject", m, t_ns, order=order, reason=why)]
        oid = next(self._ids)
        resting = Resting(
            buy=view.buy,
            price=view.price,
            remaining=order.size,
            queue_ahead=self.fill_model.queue_ahead(view.buy, view.price, m.book),
        )
        o = OpenOrder(oid, order, resting, FeeAccumulator(self.schedule_for(m.ticker)), cost)
        m.orders[oid] = o
        reports = [self._report("order", m, t_ns, o)]
        for price, n in self.fill_model.take(view.buy, view.price, order.size, m.book, m.available):
            n = min(n, resting.remaining)
            if n <= 0:
                break
            self._take_ledger(m, view.buy, price, n)
            reports.append(self._fill(m, o, price, n, Liquidity.TAKER, t_ns, level=price))
        if oid in m.orders:
            resting.queue_ahead = self.fill_model.queue_ahead(view.buy, view.price, m.book)
            if order.tif is TimeInForce.IOC:
                reports.append(self._cancel(m, o, t_ns, "ioc_remainder"))
        return reports

    def cancel(self, cancel: Cancel, t_ns: int) -> list[Report]:
        for m in self.markets.values():
            o = m.orders.get(cancel.order_id)
            if o is not None:
                return [self._cancel(m, o, t_ns, "requested")]
        return [
            Report(
                "reject",
                t_ns,
                "",
                order_id=cancel.order_id,
                reason=f"no open order {cancel.order_id} to cancel",
                cash_after=self.cash,
            )
        ]

    def open_orders(self, ticker: str | None = None) -> list[OpenOrder]:
        ms = [self.markets[ticker]] if ticker in self.markets else []
        if ticker is None:
            ms = list(self.markets.values())
        return [o for m in ms for o in m.orders.values()]

    # -- internals ---------------------------------------------------------------------------

    def mark(self, ticker: str, t_ns: int) -> Report:
        """Our position in ``ticker`` marked to its mid (``yes_price``; None without a mid), for
        equity curves: it changes nothing."""
        m = self.market(ticker)
        mark_x2 = m.mark_x2()
        return self._report("mark", m, t_ns, yes_price=None if mark_x2 is None else mark_x2 // 2)

    def _take_ledger(self, m: MarketState, is_ask: bool, price: int, n: int) -> None:
        key = (is_ask, price)
        m.taken[key] = m.taken.get(key, 0) + n

    def _report(
        self, kind: str, m: MarketState, t_ns: int, o: OpenOrder | None = None, **kw: Any
    ) -> Report:
        """A report on ``m`` after the change, about our order ``o`` if one (its id and the
        order as submitted)."""
        if o is not None:
            kw.update(order_id=o.order_id, order=o.order)
        return Report(kind, t_ns, m.ticker, cash_after=self.cash, position_after=m.position, **kw)

    def _fill(
        self,
        m: MarketState,
        o: OpenOrder,
        price: int,
        n: int,
        liq: Liquidity,
        t_ns: int,
        level: int | None = None,
    ) -> Report:
        buy = o.resting.buy
        pos = m.position
        closing = min(n, max(0, -pos) if buy else max(0, pos))
        opening = n - closing
        if buy:  # close NO contracts (sell them at 1 - p), open YES at p
            revenue = (PRICE_SCALE - price) * closing - price * opening
        else:  # close YES contracts at p, open NO at 1 - p
            revenue = price * closing - (PRICE_SCALE - price) * opening
        fee = trade_fee(price, n, liq, o.accumulator.schedule)
        charge = o.accumulator.charge(revenue, fee)
        self.cash += charge.cash_change
        self.fees_paid_fine += charge.net_fee_fine
        m.position = pos + n if buy else pos - n
        if m.position:
            self._held.add(m.ticker)
        else:
            self._held.discard(m.ticker)
        m.last_fill_price = price
        r = o.resting
        r.remaining -= n
        o.filled += n
        o.reserved = opening_cost(buy, r.price, r.remaining, m.position) if r.remaining > 0 else 0
        if r.remaining <= 0:
            del m.orders[o.order_id]
        return self._report(
            "fill",
            m,
            t_ns,
            o,
            yes_buy=buy,
            yes_price=price,
            size=n,
            liquidity=liq,
            charge=charge,
            level_price=level,
        )

    def _cancel(self, m: MarketState, o: OpenOrder, t_ns: int, reason: str) -> Report:
        m.orders.pop(o.order_id, None)
        return self._report("cancel", m, t_ns, o, size=o.resting.remaining, reason=reason)

    def _cancel_all(self, m: MarketState, t_ns: int, reason: str) -> list[Report]:
        return [self._cancel(m, o, t_ns, reason) for o in list(m.orders.values())]

    def _settle(self, m: MarketState, value: int, t_ns: int) -> Report:
        pos = m.position
        per_contract = value if pos > 0 else PRICE_SCALE - value  # a NO contract pays 1 - value
        payout = per_contract * abs(pos) // SIZE_SCALE
        self.cash += payout
        m.position = 0
        self._held.discard(m.ticker)
        return self._report(
            "settle",
            m,
            t_ns,
            yes_price=value,
            size=pos,
            reason=f"result={m.result} pays {payout} micro-dollars",
        )
