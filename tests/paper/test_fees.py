"""Kalshi fees and fee rounding: hand-computed cases (docs.kalshi.com "Fee Rounding") and
properties against an independent ``Decimal`` computation."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paper.fees import (
    CENT,
    CENTICENT,
    FINE_PER_MICRO,
    FeeAccumulator,
    FeeSchedule,
    Liquidity,
    trade_fee,
)

TAKER = Liquidity.TAKER
MAKER = Liquidity.MAKER
PLAIN = FeeSchedule()
MAKER_SERIES = FeeSchedule(maker_fees=True)


@pytest.mark.parametrize(
    ("price", "size", "liq", "schedule", "expected"),
    [
        (500_000, 100, TAKER, PLAIN, 17_500),  # 0.07 × 1 × 0.5 × 0.5 = 0.0175 exactly
        (500_000, 10_000, TAKER, PLAIN, 1_750_000),  # 100 contracts: $1.75
        (55_000, 100, TAKER, PLAIN, 3_700),  # 0.00363825 -> 0.0037
        (55_000, 300, TAKER, PLAIN, 11_000),  # 0.01091475 -> 0.0110
        (8_500, 1_067, TAKER, PLAIN, 6_300),  # sub-penny, fractional: 0.0062946... -> 0.0063
        (990_000, 100, TAKER, PLAIN, 700),  # 0.000693 -> 0.0007
        (10_000, 100, TAKER, PLAIN, 700),  # same at 1 - P
        (500_000, 100, MAKER, MAKER_SERIES, 4_400),  # 0.004375 -> 0.0044
        (500_000, 100, MAKER, PLAIN, 0),  # series without maker fees
        (1, 1, TAKER, PLAIN, 100),  # the smallest fee is one centicent
    ],
)
def test_trade_fee_hand_cases(
    price: int, size: int, liq: Liquidity, schedule: FeeSchedule, expected: int
) -> None:
    assert trade_fee(price, size, liq, schedule) == expected


def _decimal_fee(price: int, size: int, rate: str) -> int:
    with localcontext() as ctx:
        ctx.prec = 60
        p = Decimal(price) / 1_000_000
        c = Decimal(size) / 100
        fee = Decimal(rate) * c * p * (1 - p)
        return int(fee.quantize(Decimal("0.0001"), rounding=ROUND_CEILING) * 1_000_000)


prices = st.integers(1, 999_999)
sizes = st.integers(1, 10_000_000)


@given(prices, sizes)
def test_trade_fee_matches_the_formula_rounded_up_to_a_centicent(price: int, size: int) -> None:
    assert trade_fee(price, size, TAKER, PLAIN) == _decimal_fee(price, size, "0.07")
    assert trade_fee(price, size, MAKER, MAKER_SERIES) == _decimal_fee(price, size, "0.0175")
    assert trade_fee(price, size, TAKER, PLAIN) % CENTICENT == 0


@given(prices, sizes)
def test_fee_is_the_same_on_either_side_of_the_duality(price: int, size: int) -> None:
    assert trade_fee(price, size, TAKER, PLAIN) == trade_fee(1_000_000 - price, size, TAKER, PLAIN)


def test_rounding_three_one_lot_fills_at_a_sub_penny_price() -> None:
    """Buy 3 at $0.055 as three 1-lot taker fills, cent precision: each fill's balance change
    -0.0587 floors to -0.06 (rounding fee 0.0013); the accumulator reaches 0.0039, no rebate."""
    acc = FeeAccumulator(PLAIN)
    charges = [acc.charge(-55_000 * 100, trade_fee(55_000, 100, TAKER, PLAIN)) for _ in range(3)]
    assert [c.cash_change for c in charges] == [-60_000] * 3
    assert [c.rounding_fee_fine for c in charges] == [1_300 * FINE_PER_MICRO] * 3
    assert [c.rebate for c in charges] == [0, 0, 0]
    assert acc.accumulated_fine == 3_900 * FINE_PER_MICRO
    single = FeeAccumulator(PLAIN).charge(-55_000 * 300, trade_fee(55_000, 300, TAKER, PLAIN))
    assert single.cash_change == -180_000  # -0.165 - 0.011 = -0.176 -> -0.18


def test_accumulated_rounding_is_rebated_in_whole_cents() -> None:
    """Maker fills without maker fees at $0.055: each rounds by half a cent; the second brings the
    accumulator to a cent, which is rebated: two fills cost exactly 2 × $0.055 rounded."""
    acc = FeeAccumulator(PLAIN)
    a = acc.charge(-55_000 * 100, 0)
    b = acc.charge(-55_000 * 100, 0)
    assert (a.cash_change, a.rebate) == (-60_000, 0)
    assert (b.cash_change, b.rebate) == (-50_000, CENT)
    assert acc.accumulated_fine == 0
    assert a.net_fee_fine + b.net_fee_fine == 0


def test_direct_member_precision_keeps_centicents() -> None:
    acc = FeeAccumulator(FeeSchedule(balance_precision=CENTICENT))
    c = acc.charge(-55_000 * 100, trade_fee(55_000, 100, TAKER, PLAIN))
    assert c.cash_change == -58_700 and c.rounding_fee_fine == 0


def test_bad_precision_is_refused_with_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="balance_precision"):
        FeeSchedule(balance_precision=5)


@given(
    st.lists(st.tuples(prices, st.integers(1, 100_000), st.booleans()), min_size=1, max_size=30),
    st.sampled_from([CENT, CENTICENT]),
)
def test_fill_charges_are_aligned_and_exact(
    fills: list[tuple[int, int, bool]], precision: int
) -> None:
    """Every balance change is a multiple of the member's precision, equals the floored
    revenue − fee plus rebates, and an order's net fee is never negative."""
    schedule = FeeSchedule(balance_precision=precision)
    acc = FeeAccumulator(schedule)
    net = 0
    for price, size, buy in fills:
        revenue = (-price if buy else price) * size
        fee = trade_fee(price, size, TAKER, schedule)
        c = acc.charge(revenue, fee)
        assert c.cash_change % precision == 0
        change = Decimal(revenue) / 10**8 - Decimal(fee) / 10**6
        floored = change.quantize(Decimal(precision) / 10**6, rounding=ROUND_FLOOR)
        assert Decimal(c.cash_change - c.rebate) / 10**6 == floored
        assert 0 <= c.rounding_fee_fine < precision * FINE_PER_MICRO
        net += c.net_fee_fine
        assert net >= 0
        assert 0 <= acc.accumulated_fine < CENT * FINE_PER_MICRO
