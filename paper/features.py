"""The Gymnasium environment's observation vector and discrete actions, as functions of the actor
interface, so a policy trained in ``paper.env`` runs unchanged on the live tap or a replay.

Both sides compute through the same two functions: :meth:`Features.vector` turns an
:class:`~paper.actor.Observation` into the numeric vector, :meth:`Features.decide` turns a discrete
action into the orders the env submits. The env builds its ``Observation`` from its broker with
``paper.actor.observe`` exactly as the paper session does; :class:`VectorActor` is the adapter
that plugs a vector policy into ``kalshi-paper``.

**Observation vector** (float32; names from :func:`obs_fields`, ``N = top_n``), in order:

* ``best_yes_bid``, ``best_yes_ask`` (dollars; an empty side reads as bid 0 / ask 1), ``mid``,
  ``spread``;
* ``log_yes_bid_size_1..N`` then ``log_yes_ask_size_1..N``: ``log1p(contracts)`` of the top-N
  YES bids and YES asks (NO bids, as offers), 0 where a level is absent;
* ``log_yes_depth``, ``log_no_depth``: ``log1p`` of the contracts in those top-N levels;
* ``sched_life_fraction``: time since open / (close − open) on the schedule known then, clipped
  to [-1, 2] (0 while unknown);
* ``log_seconds_since_open``, ``log_seconds_to_close``: ``log1p`` of seconds (0 if negative or
  unknown);
* ``position_fraction``: signed YES position / ``max_position``, clipped to [-1, 1];
* ``cash_change_usd``: cash now − cash at the first observation, dollars, clipped to ±1000.

**Actions** (``Discrete(4)``): 0 hold; 1 buy ``trade_size`` YES at the best YES ask; 2 buy
``trade_size`` NO at the best NO ask (1 − best YES bid); 3 close the position at the best
opposite price. All IOC; 1 and 2 only while the position stays within ``max_position``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from paper.actor import Decision, Observation
from paper.orders import Action, Order, Side, TimeInForce
from schemas.units import PRICE_SCALE, SIZE_SCALE

HOLD, BUY_YES, BUY_NO, CLOSE = 0, 1, 2, 3
N_ACTIONS = 4


def obs_fields(top_n: int) -> list[str]:
    """Names of the observation vector's entries, in order."""
    return [
        "best_yes_bid",
        "best_yes_ask",
        "mid",
        "spread",
        *(f"log_yes_bid_size_{j}" for j in range(1, top_n + 1)),
        *(f"log_yes_ask_size_{j}" for j in range(1, top_n + 1)),
        "log_yes_depth",
        "log_no_depth",
        "sched_life_fraction",
        "log_seconds_since_open",
        "log_seconds_to_close",
        "position_fraction",
        "cash_change_usd",
    ]


@functools.lru_cache(maxsize=8)
def _bounds(top_n: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    names = obs_fields(top_n)
    low = np.full(len(names), -1.0, dtype=np.float32)
    high = np.full(len(names), 1.0, dtype=np.float32)
    for i, name in enumerate(names):
        if name.startswith("log_"):
            low[i], high[i] = 0.0, 40.0
        elif name == "sched_life_fraction":
            low[i], high[i] = -1.0, 2.0
        elif name == "cash_change_usd":
            low[i], high[i] = -1000.0, 1000.0
        elif name in ("best_yes_bid", "best_yes_ask", "mid"):
            low[i], high[i] = 0.0, 1.0
    return low, high


@dataclass(frozen=True, slots=True)
class Features:
    """The vector layout and the action mapping for one setting of the knobs (sizes in
    centi-contracts)."""

    top_n: int = 5
    trade_size: int = 100
    max_position: int = 1000

    def bounds(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """(low, high) of every entry (copies: the caller may change them)."""
        low, high = _bounds(self.top_n)
        return low.copy(), high.copy()

    def vector(self, obs: Observation, start_cash: int) -> npt.NDArray[np.float32]:
        n = self.top_n
        bid = obs.yes_bids[0][0] / PRICE_SCALE if obs.yes_bids else 0.0
        ask = obs.yes_asks[0][0] / PRICE_SCALE if obs.yes_asks else 1.0

        def sizes(levels: tuple[tuple[int, int], ...]) -> list[float]:
            vals = [math.log1p(s / SIZE_SCALE) for _, s in levels[:n]]
            return vals + [0.0] * (n - len(vals))

        def log_s(ns: int | None) -> float:
            return 0.0 if ns is None or ns <= 0 else math.log1p(ns / 1e9)

        vec = [
            bid,
            ask,
            (bid + ask) / 2,
            ask - bid,
            *sizes(obs.yes_bids),
            *sizes(obs.yes_asks),
            math.log1p(sum(s for _, s in obs.yes_bids[:n]) / SIZE_SCALE),
            math.log1p(sum(s for _, s in obs.yes_asks[:n]) / SIZE_SCALE),
            0.0 if obs.life_fraction is None else obs.life_fraction,
            log_s(obs.time_since_open_ns),
            log_s(obs.time_to_close_ns),
            obs.position / self.max_position,
            (obs.cash - start_cash) / PRICE_SCALE,
        ]
        low, high = _bounds(self.top_n)
        return np.clip(np.asarray(vec, dtype=np.float32), low, high)

    def decide(self, action: int, obs: Observation) -> Order | None:
        """The order a discrete action sends (None: hold, or nothing to do)."""
        t, size, pos = obs.market_ticker, self.trade_size, obs.position
        bid, ask = obs.best_bid, obs.best_ask
        ioc = TimeInForce.IOC
        if action == BUY_YES and ask is not None and pos + size <= self.max_position:
            return Order(t, Action.BUY, Side.YES, ask, size, ioc)
        if action == BUY_NO and bid is not None and -pos + size <= self.max_position:
            return Order(t, Action.BUY, Side.NO, PRICE_SCALE - bid, size, ioc)
        if action == CLOSE and pos > 0 and bid is not None:
            return Order(t, Action.SELL, Side.YES, bid, pos, ioc)
        if action == CLOSE and pos < 0 and ask is not None:
            return Order(t, Action.SELL, Side.NO, PRICE_SCALE - ask, -pos, ioc)
        return None


class VectorActor:
    """A Gymnasium-style policy (vector in, discrete action out) as an actor, for the live tap
    and replays. Subclass it and override :meth:`act` (load your trained weights in
    ``__init__``), then ``kalshi-paper --policy mymodule:MyActor``. Acts on valid books only."""

    def __init__(self, top_n: int = 5, trade_size: int = 100, max_position: int = 1000) -> None:
        self.features = Features(top_n, trade_size, max_position)
        self.start_cash: int | None = None

    def act(self, vector: npt.NDArray[np.float32]) -> int:
        """The discrete action for an observation vector; the default holds."""
        return HOLD

    def on_event(self, obs: Observation) -> Decision | None:
        if self.start_cash is None:
            self.start_cash = obs.cash
        if obs.event != "book" or not obs.book_valid:
            return None
        order = self.features.decide(int(self.act(self.features.vector(obs, self.start_cash))), obs)
        return None if order is None else Decision(orders=[order])
