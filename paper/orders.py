"""Orders an actor can send, and the one place where the YES/NO duality is resolved.

A Kalshi market has one book seen from two sides: a NO bid at q is a YES offer at 1 − q. So
*buying NO at p is the same exposure as selling YES at 1 − p*, and selling NO at p is buying YES
at 1 − p. :func:`as_yes` turns every order into that single YES view (buy or sell YES, at a YES
price); the broker, the fill model and the position only ever see the YES view. Positions are a
signed count of YES contracts: ``+5`` = 5 YES contracts, ``-5`` = 5 NO contracts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from schemas.units import PRICE_SCALE


class Side(StrEnum):
    YES = "yes"
    NO = "no"


class Action(StrEnum):
    BUY = "buy"
    SELL = "sell"


class TimeInForce(StrEnum):
    GTC = "gtc"
    """Good till cancelled: what does not cross rests in the book."""
    IOC = "ioc"
    """Immediate or cancel: take what crosses now, cancel the rest."""


@dataclass(frozen=True, slots=True)
class Order:
    """A limit order as the actor writes it. ``price`` in micro-dollars of the named side's
    contract, ``size`` in centi-contracts. ``client_id`` is the actor's own tag (optional)."""

    market_ticker: str
    action: Action
    side: Side
    price: int
    size: int
    tif: TimeInForce = TimeInForce.GTC
    client_id: str | None = None

    def validate(self) -> str | None:
        """Why the order cannot be accepted (one line an actor author can act on), or None."""
        if not 0 < self.price < PRICE_SCALE:
            return (
                f"price {self.price} micro-dollars must be between 1 and {PRICE_SCALE - 1} "
                "(a limit price strictly between $0 and $1)"
            )
        if self.size <= 0:
            return f"size {self.size} centi-contracts must be positive"
        return None


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel one of our open orders by the id the broker gave it."""

    order_id: int


@dataclass(frozen=True, slots=True)
class YesView:
    """An order in the YES view: buy or sell YES at ``price`` (micro-dollars of a YES contract)."""

    buy: bool
    price: int


def as_yes(action: Action, side: Side, price: int) -> YesView:
    """The YES view of an order: the one place the duality lives.

    buy YES at p  -> buy YES at p;      sell YES at p -> sell YES at p;
    buy NO at p   -> sell YES at 1 − p; sell NO at p  -> buy YES at 1 − p.
    """
    if side is Side.YES:
        return YesView(buy=action is Action.BUY, price=price)
    return YesView(buy=action is not Action.BUY, price=PRICE_SCALE - price)
