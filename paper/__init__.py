"""Paper trading: one actor interface and one broker, live on the tap, on replays, and as a
Gymnasium environment. Paper only: nothing here can place a real order (the broker reads books it
is given and has no network access; ``tests/paper/test_paper_only.py`` keeps it that way).

* ``paper.orders`` — limit orders, cancels, and the YES/NO duality (``as_yes``), in one place;
* ``paper.fees`` — Kalshi's taker/maker fees, fee rounding and the per-order accumulator, exact;
* ``paper.book``, ``paper.fillmodel``, ``paper.broker`` — the recorded book, the pluggable
  (conservative by default) fill model with its limits written down, the simulated exchange for
  our orders: positions, cash, equity marked to mid, settlement;
* ``paper.actor``, ``paper.policies`` — the observation an actor gets and the decisions it
  returns; example policies;
* ``paper.engine`` (sans-I/O session), ``paper.drivers`` (live tap / replay via ``feed.Client``),
  ``paper.log`` (crash-safe paper log), ``paper.load`` (warehouse tables), ``paper.env``
  (``gymnasium.Env`` over recorded market lives) with ``paper.features`` (its observation vector
  and actions, and ``VectorActor`` to run a trained policy live), ``python -m paper``
  (``kalshi-paper``).
"""

from paper.actor import Actor, Decision, Observation
from paper.broker import Broker
from paper.orders import Action, Cancel, Order, Side, TimeInForce

__all__ = [
    "Action",
    "Actor",
    "Broker",
    "Cancel",
    "Decision",
    "Observation",
    "Order",
    "Side",
    "TimeInForce",
]
