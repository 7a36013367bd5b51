"""Example policies (``kalshi-paper --policy paper.policies:SpreadCapture``).

They show the interface, not an edge: each is deterministic (same events, same decisions), so a
live run and a replay of the same session give the same orders.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from paper.actor import Decision, Observation
from paper.orders import Action, Cancel, Order, Side, TimeInForce
from schemas.units import PRICE_SCALE

TICK = 10_000
"""One cent in micro-dollars: the quoting step of the examples."""


class DoNothing:
    """Never trades: the baseline every other policy must beat."""

    def on_event(self, obs: Observation) -> Decision | None:
        return None


@dataclass
class TakeOnce:
    """Buys ``size`` YES at the best ask (IOC) on the first valid, active book of each market,
    then holds to settlement. Useful as a deterministic taker in tests and benchmarks."""

    size: int = 100
    done: set[str] = field(default_factory=set, init=False)
    """Markets already bought."""

    def on_event(self, obs: Observation) -> Decision | None:
        if obs.market_ticker in self.done or not obs.book_valid or obs.status != "active":
            return None
        ask = obs.best_ask
        if ask is None:
            return None
        self.done.add(obs.market_ticker)
        return Decision(
            orders=[Order(obs.market_ticker, Action.BUY, Side.YES, ask, self.size, TimeInForce.IOC)]
        )


@dataclass
class SpreadCapture:
    """Quotes one tick inside the spread on both sides when it is at least ``min_spread`` wide:
    a YES bid at best bid + 1 tick and a NO bid at 1 − (best ask − 1 tick) (the YES offer written
    on the NO side: the duality at work). Stops quoting a side once ``max_position`` is reached on
    it, requotes when the inside moves, and cancels everything in the last ``stop_fraction`` of
    the market's scheduled life."""

    size: int = 100
    min_spread: int = 3 * TICK
    max_position: int = 500
    stop_fraction: float = 0.9

    def on_event(self, obs: Observation) -> Decision | None:
        if not obs.book_valid:
            return None
        late = obs.life_fraction is not None and obs.life_fraction >= self.stop_fraction
        bid, ask = obs.best_bid, obs.best_ask
        if obs.status != "active" or late or bid is None or ask is None:
            if obs.open_orders and obs.status == "active":
                return Decision(cancels=[Cancel(o.order_id) for o in obs.open_orders])
            return None
        want: dict[bool, int] = {}
        if ask - bid >= self.min_spread:
            if obs.position < self.max_position:
                want[True] = bid + TICK
            if -obs.position < self.max_position:
                want[False] = ask - TICK
        decision = Decision()
        have: dict[bool, int] = {}
        for o in obs.open_orders:
            if want.get(o.buy) == o.yes_price and o.buy not in have:
                have[o.buy] = o.yes_price
            else:
                decision.cancels.append(Cancel(o.order_id))
        for buy, price in want.items():
            if buy in have:
                continue
            if buy:
                decision.orders.append(
                    Order(obs.market_ticker, Action.BUY, Side.YES, price, self.size)
                )
            else:
                decision.orders.append(
                    Order(obs.market_ticker, Action.BUY, Side.NO, PRICE_SCALE - price, self.size)
                )
        return decision if decision.orders or decision.cancels else None
