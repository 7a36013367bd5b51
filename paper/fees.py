"""Kalshi's trading fees and fee rounding, in exact integers.

Units (``schemas.units``): prices in micro-dollars (``P = price / 1_000_000``), sizes in
centi-contracts (``C = size / 100``). Money the broker keeps (cash, fees) is in micro-dollars. Money
*inside one fill* (revenue, the unrounded balance change) may need 8 decimals (a 6-decimal price
times a 2-decimal size), so it is computed in units of 1e-8 dollars (``PRICE_SCALE * SIZE_SCALE``
per dollar) and only rounded where Kalshi rounds.

**Fee model** (Kalshi fee schedule): ``taker = 0.07 × C × P × (1 − P)``;
``maker = 0.0175 × C × P × (1 − P)`` only on series that charge maker fees (otherwise makers pay
0). ``P × (1 − P)`` is the same for a YES contract at P and a NO contract at 1 − P, so the fee
does not depend on which side of the duality an order is written in.

**Rounding** (docs.kalshi.com "Fee Rounding", checked 2026-11): per fill,

1. the trade fee is rounded *up* to $0.0001;
2. ``balance_change = revenue − trade_fee`` (revenue signed: negative for a buyer);
3. the balance changes by ``floor(balance_change)`` to the member's precision ($0.01 for
   non-direct members, the default here; $0.0001 for direct members);
4. ``rounding_fee = balance_change − floor(balance_change)``.

A **fee accumulator** per order (across taker and maker fills of the same order) adds up the
rounding fees; once it reaches $0.01 a whole-cent rebate is paid and the accumulator drops by
$0.01. The page says "exceeds $0.01"; we read it as "reaches", because only then does the total of
many small fills converge to what one equivalent fill would cost (two fills each rounding by half a
cent add up to a cent that one fill would never have charged). The net fee is ``trade fee +
rounding fee − rebate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from schemas.units import PRICE_SCALE, SIZE_SCALE

FINE_PER_DOLLAR = PRICE_SCALE * SIZE_SCALE
"""Units of one fill's exact money: 1e-8 dollars (micro-dollar price × centi-contract size)."""
FINE_PER_MICRO = SIZE_SCALE
"""1e-8-dollar units per micro-dollar."""

CENTICENT = PRICE_SCALE // 10_000
"""$0.0001 in micro-dollars: the trade fee's rounding step and a direct member's precision."""
CENT = PRICE_SCALE // 100
"""$0.01 in micro-dollars: a non-direct member's balance precision and the rebate step."""

_TAKER_NUM, _TAKER_DEN = 7, 100  # 0.07
_MAKER_NUM, _MAKER_DEN = 7, 400  # 0.0175


class Liquidity(StrEnum):
    """Who provided the liquidity of a fill, as far as we are concerned."""

    TAKER = "taker"
    MAKER = "maker"


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """What a market charges. ``maker_fees``: the series charges maker fees (most do not).
    ``balance_precision``: the member's balance step in micro-dollars (``CENT`` or
    ``CENTICENT``)."""

    maker_fees: bool = False
    balance_precision: int = CENT

    def __post_init__(self) -> None:
        if self.balance_precision not in (CENT, CENTICENT):
            raise ValueError(
                f"balance_precision must be {CENT} ($0.01) or {CENTICENT} ($0.0001) "
                f"micro-dollars, got {self.balance_precision}"
            )


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def trade_fee(price: int, size: int, liquidity: Liquidity, schedule: FeeSchedule) -> int:
    """The trade fee of one fill in micro-dollars, rounded up to $0.0001 (0 for makers on series
    without maker fees). ``price`` in micro-dollars (0 < price < 1_000_000), ``size`` in
    centi-contracts (> 0)."""
    if not 0 < price < PRICE_SCALE:
        raise ValueError(f"price {price} micro-dollars is outside (0, 1)")
    if size <= 0:
        raise ValueError(f"size {size} centi-contracts must be positive")
    if liquidity is Liquidity.MAKER:
        if not schedule.maker_fees:
            return 0
        num, den = _MAKER_NUM, _MAKER_DEN
    else:
        num, den = _TAKER_NUM, _TAKER_DEN
    # fee$ = num/den × size/SIZE_SCALE × price/PRICE_SCALE × (PRICE_SCALE − price)/PRICE_SCALE;
    # in centicents (× 10_000), rounded up, exactly.
    numer = num * size * price * (PRICE_SCALE - price) * 10_000
    denom = den * SIZE_SCALE * PRICE_SCALE * PRICE_SCALE
    return _ceil_div(numer, denom) * CENTICENT


@dataclass(frozen=True, slots=True)
class FillCharge:
    """The money of one fill: ``cash_change`` (micro-dollars, what the balance moves by, aligned to
    the member's precision) and the three fee components (micro-dollars for the trade fee and
    rebate; the rounding fee in 1e-8 dollars because it can be finer than a micro-dollar)."""

    revenue_fine: int
    trade_fee: int
    rounding_fee_fine: int
    rebate: int
    cash_change: int

    @property
    def net_fee_fine(self) -> int:
        """trade fee + rounding fee − rebate, in 1e-8 dollars (>= 0 over an order's life)."""
        fee_and_rebate = (self.trade_fee - self.rebate) * FINE_PER_MICRO
        return fee_and_rebate + self.rounding_fee_fine


class FeeAccumulator:
    """One order's rounding accumulator (Kalshi keeps one per order, across taker and maker
    fills). Feed it each fill's revenue and trade fee; it returns the fill's charge."""

    __slots__ = ("accumulated_fine", "schedule")

    def __init__(self, schedule: FeeSchedule) -> None:
        self.schedule = schedule
        self.accumulated_fine = 0

    def charge(self, revenue_fine: int, fee: int) -> FillCharge:
        """``revenue_fine``: the fill's signed revenue in 1e-8 dollars (negative for a buyer);
        ``fee``: its trade fee (already rounded up, micro-dollars)."""
        step = self.schedule.balance_precision * FINE_PER_MICRO
        change = revenue_fine - fee * FINE_PER_MICRO
        floored = (change // step) * step  # toward negative infinity
        rounding = change - floored
        self.accumulated_fine += rounding
        cent_fine = CENT * FINE_PER_MICRO
        rebates = self.accumulated_fine // cent_fine
        self.accumulated_fine -= rebates * cent_fine
        rebate = rebates * CENT
        return FillCharge(
            revenue_fine=revenue_fine,
            trade_fee=fee,
            rounding_fee_fine=rounding,
            rebate=rebate,
            cash_change=floored // FINE_PER_MICRO + rebate,
        )
