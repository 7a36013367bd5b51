"""The broker: conservative fills, exact accounting, settlement, duality, lifecycle."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from feed.events import LifecycleEvent
from paper.broker import Broker, Report
from paper.fillmodel import QueueDepletionFillModel
from paper.orders import Action, Cancel, Order, Side, TimeInForce

T = "KXTEST-26JAN01-T1"
M = 1_000_000


def broker_with(yes: list[tuple[int, int]], no: list[tuple[int, int]], **kw: object) -> Broker:
    b = Broker(cash=10_000 * M, **kw)  # type: ignore[arg-type]
    b.on_snapshot(T, yes, no, t_ns=1)
    return b


def fills(reports: list[Report]) -> list[tuple[int, int, str]]:
    return [(r.yes_price, r.size, str(r.liquidity)) for r in reports if r.kind == "fill"]  # type: ignore[misc]


def test_a_crossing_order_takes_level_by_level_never_more_than_shown() -> None:
    # YES asks: 1 - NO bids: 0.40 x 3, 0.42 x 5
    b = broker_with([(380_000, 1000)], [(600_000, 300), (580_000, 500)])
    r = b.submit(Order(T, Action.BUY, Side.YES, 420_000, 1000, TimeInForce.IOC), 2)
    assert fills(r) == [(400_000, 300, "taker"), (420_000, 500, "taker")]
    assert r[-1].kind == "cancel" and r[-1].size == 200
    assert b.market(T).position == 800
    # the book did not change for others, but what we took is gone for us
    assert b.market(T).book.size(True, 400_000) == 300
    again = b.submit(Order(T, Action.BUY, Side.YES, 420_000, 1000, TimeInForce.IOC), 3)
    assert fills(again) == []
    # the level grows past what we took: only the growth is ours
    b.on_delta(T, "no", 600_000, 200, 4)
    third = b.submit(Order(T, Action.BUY, Side.YES, 400_000, 1000, TimeInForce.IOC), 5)
    assert fills(third) == [(400_000, 200, "taker")]


def test_a_resting_order_waits_for_the_queue_then_a_trade_through() -> None:
    b = broker_with([(400_000, 1000)], [(550_000, 500)])  # bid 0.40 x 10, ask 0.45 x 5
    r = b.submit(Order(T, Action.BUY, Side.YES, 400_000, 300), 2)
    assert fills(r) == [] and r[0].kind == "order"
    oid = r[0].order_id
    assert oid is not None
    assert b.open_orders(T)[0].resting.queue_ahead == 1000
    assert fills(b.on_delta(T, "yes", 400_000, -400, 3)) == []  # 4 ahead of us went
    assert b.open_orders(T)[0].resting.queue_ahead == 600
    assert fills(b.on_delta(T, "yes", 400_000, 500, 4)) == []  # joins behind us
    assert b.open_orders(T)[0].resting.queue_ahead == 600
    # a seller at 0.40 appears while 6 are still ahead: they get it, not us
    assert fills(b.on_delta(T, "no", 600_000, 200, 5)) == []
    # the level empties: we are first, and the seller still shown trades through to us
    assert fills(b.on_delta(T, "yes", 400_000, -1100, 6)) == [(400_000, 200, "maker")]
    assert b.open_orders(T)[0].resting.queue_ahead == 0
    assert fills(b.on_delta(T, "no", 600_000, -100, 7)) == []  # what we took is not there twice
    got = b.on_delta(T, "no", 600_000, 300, 8)  # seller at 0.40 now 4 > the 1 left after us
    assert fills(got) == [(400_000, 100, "maker")]
    assert b.market(T).position == 300 and b.open_orders(T) == []
    assert b.cancel(Cancel(oid), 8)[0].kind == "reject"


def test_queue_depletion_model_fills_on_decreases_past_the_queue() -> None:
    b = broker_with([(400_000, 1000)], [(550_000, 500)], fill_model=QueueDepletionFillModel())
    b.submit(Order(T, Action.BUY, Side.YES, 400_000, 300), 2)
    assert fills(b.on_delta(T, "yes", 400_000, 500, 3)) == []  # behind us
    assert fills(b.on_delta(T, "yes", 400_000, -1100, 4)) == [(400_000, 100, "maker")]


def test_orders_are_refused_on_an_invalid_book_and_outside_the_trading_window() -> None:
    b = broker_with([(400_000, 1000)], [(550_000, 500)])
    b.set_valid(T, False)
    assert b.submit(Order(T, Action.BUY, Side.YES, 400_000, 100), 2)[0].kind == "reject"
    b.set_valid(T, True)
    b.on_lifecycle(LifecycleEvent(T, "created", open_ts=100, close_ts=200), 3)
    r = b.submit(Order(T, Action.BUY, Side.YES, 400_000, 100), 50 * 10**9)
    assert r[0].kind == "reject" and "initialized" in (r[0].reason or "")
    assert b.submit(Order(T, Action.BUY, Side.YES, 400_000, 100), 150 * 10**9)[0].kind == "order"
    r = b.submit(Order(T, Action.BUY, Side.YES, 400_000, 100), 200 * 10**9)
    assert "closed" in (r[0].reason or "")
    bad = b.submit(Order(T, Action.BUY, Side.YES, 0, 100), 150 * 10**9)[0]
    assert bad.kind == "reject" and "price" in (bad.reason or "")


def test_determination_cancels_and_settles_exactly() -> None:
    b = broker_with([(400_000, 1000)], [(550_000, 5000)])
    b.submit(Order(T, Action.BUY, Side.YES, 450_000, 1000, TimeInForce.IOC), 2)  # 10 YES
    b.submit(Order(T, Action.BUY, Side.YES, 300_000, 500), 3)  # rests
    cash = b.cash
    r = b.on_lifecycle(LifecycleEvent(T, "determined", result="yes", settlement_value=M), 4)
    assert [x.kind for x in r] == ["cancel", "settle"]
    assert b.cash - cash == 10 * M and b.market(T).position == 0
    assert b.submit(Order(T, Action.BUY, Side.YES, 450_000, 100), 5)[0].kind == "reject"


def test_reactivation_cancels_resting_orders() -> None:
    b = broker_with([(400_000, 1000)], [(550_000, 500)])
    b.submit(Order(T, Action.BUY, Side.YES, 400_000, 300), 2)
    b.on_lifecycle(LifecycleEvent(T, "deactivated"), 3)
    assert b.market(T).status(3) == "inactive"
    r = b.on_lifecycle(LifecycleEvent(T, "activated"), 4)
    assert [x.kind for x in r] == ["cancel"] and b.open_orders() == []


def test_cash_is_checked_including_open_orders() -> None:
    b = Broker(cash=10 * M)
    b.on_snapshot(T, [(400_000, 100_000)], [(550_000, 100_000)], t_ns=1)
    assert b.submit(Order(T, Action.BUY, Side.YES, 400_000, 2000), 2)[0].kind == "order"  # $8
    r = b.submit(Order(T, Action.BUY, Side.NO, 500_000, 1000), 3)
    assert r[0].kind == "reject" and "insufficient cash" in (r[0].reason or "")


# -- properties ---------------------------------------------------------------------------------

cents = st.integers(1, 99).map(lambda c: c * 10_000)
levels = st.dictionaries(cents, st.integers(1, 5000), max_size=6)
orders = st.lists(
    st.tuples(
        st.sampled_from(list(Action)),
        st.sampled_from(list(Side)),
        st.integers(1, 999_999),
        st.integers(1, 3000),
        st.sampled_from(list(TimeInForce)),
    ),
    min_size=1,
    max_size=12,
)


Levels = list[tuple[int, int]]


def _uncrossed(yes: dict[int, int], no: dict[int, int]) -> tuple[Levels, Levels]:
    best_yes = max(yes, default=0)
    return sorted(yes.items()), [(p, s) for p, s in no.items() if p + best_yes < M]


def _value_fine(pos: int, yes_price: int) -> int:
    """What a position is worth at a YES price, in 1e-8 dollars (NO contracts at 1 - p)."""
    return pos * yes_price if pos >= 0 else -pos * (M - yes_price)


@settings(max_examples=150)
@given(levels, levels, orders)
def test_fills_never_exceed_shown_and_equity_moves_only_by_fees(
    yes: dict[int, int], no: dict[int, int], batch: list[tuple[Action, Side, int, int, TimeInForce]]
) -> None:
    y, n = _uncrossed(yes, no)
    b = Broker(cash=1_000_000 * M)
    b.on_snapshot(T, y, n, t_ns=1)
    shown = {(False, p): s for p, s in y} | {(True, M - p): s for p, s in n}
    taken: dict[tuple[bool, int], int] = {}
    for t, (action, side, price, size, tif) in enumerate(batch, start=2):
        for r in b.submit(Order(T, action, side, price, size, tif), t):
            if r.kind != "fill":
                continue
            assert r.yes_price is not None and r.size is not None and r.charge is not None
            key = (bool(r.yes_buy), r.yes_price)
            taken[key] = taken.get(key, 0) + r.size
            assert taken[key] <= shown[key]
            # cash + positions at the trade price: conserved up to the fee, exactly
            pos_after = r.position_after
            pos_before = pos_after - r.size if r.yes_buy else pos_after + r.size
            dv = _value_fine(pos_after, r.yes_price) - _value_fine(pos_before, r.yes_price)
            assert r.charge.cash_change * 100 + dv == -r.charge.net_fee_fine
    assert b.cash >= 0


@settings(max_examples=100)
@given(levels, levels, orders, st.sampled_from(["yes", "no"]))
def test_settlement_pays_exactly(
    yes: dict[int, int],
    no: dict[int, int],
    batch: list[tuple[Action, Side, int, int, TimeInForce]],
    result: str,
) -> None:
    y, n = _uncrossed(yes, no)
    b = Broker(cash=1_000_000 * M)
    b.on_snapshot(T, y, n, t_ns=1)
    for t, (action, side, price, size, tif) in enumerate(batch, start=2):
        b.submit(Order(T, action, side, price, size, tif), t)
    pos, cash = b.market(T).position, b.cash
    b.on_lifecycle(LifecycleEvent(T, "determined", result=result), 100)
    won = pos if result == "yes" else -pos
    assert b.cash - cash == max(0, won) * M // 100
    assert b.market(T).position == 0 and b.open_orders() == []


@given(levels, levels, st.integers(1, 999_999), st.integers(1, 3000), st.sampled_from(list(Action)))
def test_yes_no_duality_gives_equal_exposure(
    yes: dict[int, int], no: dict[int, int], price: int, size: int, action: Action
) -> None:
    """Buying NO at p is selling YES at 1 - p (and selling NO at p is buying YES at 1 - p): the
    same fills, position, cash and equity."""
    y, n = _uncrossed(yes, no)
    a, b = Broker(cash=1_000_000 * M), Broker(cash=1_000_000 * M)
    a.on_snapshot(T, y, n, t_ns=1)
    b.on_snapshot(T, y, n, t_ns=1)
    other = Action.SELL if action is Action.BUY else Action.BUY
    ra = a.submit(Order(T, action, Side.NO, price, size), 2)
    rb = b.submit(Order(T, other, Side.YES, M - price, size), 2)
    assert fills(ra) == fills(rb)
    assert a.market(T).position == b.market(T).position
    assert a.cash == b.cash and a.equity() == b.equity()
    assert isinstance(a.equity(), Fraction)


events = st.lists(
    st.one_of(
        st.tuples(
            st.just("delta"), st.sampled_from(["yes", "no"]), cents, st.integers(-3000, 3000)
        ),
        st.tuples(
            st.just("order"),
            st.sampled_from(list(Action)),
            st.sampled_from(list(Side)),
            st.integers(1, 99).map(lambda c: c * 10_000),
            st.integers(1, 3000),
        ),
    ),
    max_size=40,
)


@settings(max_examples=150)
@given(levels, levels, events)
def test_over_time_we_never_take_more_than_was_shown(
    yes: dict[int, int], no: dict[int, int], stream: list[tuple[object, ...]]
) -> None:
    """Across book changes, resting and crossing orders: at every level, what we took never
    exceeds what the recording showed there (net of what we took before, and of decreases)."""
    y, n = _uncrossed(yes, no)
    b = Broker(cash=10_000_000 * M)
    b.on_snapshot(T, y, n, t_ns=1)
    budget = {(False, p): s for p, s in y} | {(True, M - p): s for p, s in n}
    for t, ev in enumerate(stream, start=2):
        if ev[0] == "delta":
            _, side, price, delta = ev
            assert isinstance(side, str) and isinstance(price, int) and isinstance(delta, int)
            key = (side == "no", price if side == "yes" else M - price)
            old = b.market(T).book.size(*key)
            reports = b.on_delta(T, side, price, delta, t)
            new = b.market(T).book.size(*key)
            budget[key] = (
                budget.get(key, 0) + (new - old) if new > old else min(budget.get(key, 0), new)
            )
        else:
            _, action, oside, price, size = ev
            assert isinstance(action, Action) and isinstance(oside, Side)
            assert isinstance(price, int) and isinstance(size, int)
            reports = b.submit(Order(T, action, oside, price, size), t)
        for r in reports:
            if r.kind != "fill":
                continue
            assert r.level_price is not None and r.size is not None
            key = (bool(r.yes_buy), r.level_price)  # a buy takes asks, a sell takes bids
            budget[key] = budget.get(key, 0) - r.size
            assert budget[key] >= 0, f"took {r.size} at {key} beyond what was shown"
    assert b.cash >= 0


def test_a_mark_reports_the_position_at_the_mid_and_changes_nothing() -> None:
    b = broker_with([(400_000, 1000)], [(550_000, 5000)])  # YES 0.40 bid, 0.45 ask
    b.submit(Order(T, Action.BUY, Side.YES, 450_000, 1000, TimeInForce.IOC), 2)  # 10 YES
    cash, equity = b.cash, b.equity()
    r = b.mark(T, 3)
    assert (r.kind, r.t_ns, r.market_ticker) == ("mark", 3, T)
    assert (r.yes_price, r.position_after, r.cash_after) == (425_000, 1000, cash)
    assert (b.cash, b.equity(), b.market(T).position) == (cash, equity, 1000)
