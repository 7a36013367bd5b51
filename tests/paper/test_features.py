"""A vector policy (the Gymnasium env's observation and actions) runs as an actor unchanged."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from paper.engine import PaperSession
from paper.features import BUY_YES, CLOSE, HOLD, Features, VectorActor, obs_fields
from tests.paper.feedgen import session


class BuyThenClose(VectorActor):
    """Buys YES when flat and early in the life, closes after the middle: uses the vector only."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[npt.NDArray[np.float32]] = []
        self.names = obs_fields(self.features.top_n)

    def act(self, vector: npt.NDArray[np.float32]) -> int:
        self.seen.append(vector)
        pos = vector[self.names.index("position_fraction")]
        frac = vector[self.names.index("sched_life_fraction")]
        if pos == 0 and 0 < frac < 0.3:
            return BUY_YES
        if pos > 0 and frac > 0.6:
            return CLOSE
        return HOLD


def test_a_vector_policy_trades_through_the_actor_interface() -> None:
    actor = BuyThenClose()
    s = PaperSession(actor)
    reports = [row.report for ev in session(n_markets=2, steps=300) for row in s.handle(ev)]
    fills = [r for r in reports if r.kind == "fill"]
    buys = [r for r in fills if r.yes_buy]
    sells = [r for r in fills if not r.yes_buy]
    assert len(buys) >= 2 and len(sells) >= 2  # in and out of both markets, by the vector alone
    assert all(r.liquidity == "taker" for r in fills)
    low, high = Features().bounds()
    assert all(v.shape == low.shape and (v >= low).all() and (v <= high).all() for v in actor.seen)
    # the vector reads the book: the first observation of a market shows its inside
    first = actor.seen[0]
    assert 0 < first[0] < first[1] <= 1
