"""The recorded book of one market, in the YES view, as the broker sees it.

Kalshi's book has only bids: YES bids and NO bids. A NO bid at q is an offer to sell YES at 1 − q,
so the YES view is ``bids`` (YES bid price -> size) and ``asks`` (YES ask price = 1 − NO bid ->
size). Prices micro-dollars, sizes centi-contracts. This is the book *others* see: our own paper
orders never change it (they are not in the recording, and adding them would make every other
participant's behaviour in the recording inconsistent with the book).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from feed.book import apply_delta
from schemas.units import PRICE_SCALE


class Book:
    """One market's recorded book (YES view) and whether it can be trusted right now."""

    __slots__ = ("_best", "asks", "bids", "valid")

    def __init__(self) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.valid = False
        self._best: tuple[int | None, int | None] | None = None
        """(best bid, best ask), cached until the book changes: equity marks every held market
        on every event, and only one book changes per event."""

    def replace(self, yes: Iterable[tuple[int, int]], no: Iterable[tuple[int, int]]) -> None:
        """A snapshot: ``yes``/``no`` are (price, size) bid levels of each side."""
        self.bids = {p: s for p, s in yes if s > 0}
        self.asks = {PRICE_SCALE - p: s for p, s in no if s > 0}
        self._best = None

    def apply(self, side: str, price: int, delta: int) -> tuple[bool, int, int, int]:
        """A delta on Kalshi's ``side`` ("yes"/"no") at its bid ``price``. Returns
        ``(is_ask, yes_price, old_size, new_size)``; a level at or below 0 is removed."""
        if side == "yes":
            levels, is_ask, yes_price = self.bids, False, price
        else:
            levels, is_ask, yes_price = self.asks, True, PRICE_SCALE - price
        new = apply_delta(levels, yes_price, delta)
        self._best = None
        return is_ask, yes_price, new - delta, max(new, 0)

    def size(self, is_ask: bool, yes_price: int) -> int:
        return (self.asks if is_ask else self.bids).get(yes_price, 0)

    def _bests(self) -> tuple[int | None, int | None]:
        if self._best is None:
            self._best = (
                max(self.bids) if self.bids else None,
                min(self.asks) if self.asks else None,
            )
        return self._best

    @property
    def best_bid(self) -> int | None:
        return self._bests()[0]

    @property
    def best_ask(self) -> int | None:
        return self._bests()[1]

    @property
    def mid_x2(self) -> int | None:
        """Twice the mid (bid + ask) in micro-dollars, or None if a side is empty: exact."""
        bid, ask = self._bests()
        if bid is None or ask is None:
            return None
        return bid + ask

    def top(self, n: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The best ``n`` bid levels and ask levels (YES view), best first."""
        bids = heapq.nlargest(n, self.bids.items())
        asks = heapq.nsmallest(n, self.asks.items())
        return bids, asks
