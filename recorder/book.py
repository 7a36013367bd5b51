"""One market's order book: YES and NO bid levels in exact fixed-point units.

Prices are micro-dollars, sizes centi-contracts (``schemas.units``). Kalshi books hold bids only: a
NO bid at p is a YES ask at 1 - p. The book runs once per delta in the recorder, so the best bid of
each side is cached and only recomputed (lazily) when the best level itself goes away.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from schemas.units import PRICE_SCALE


class BookProblem(StrEnum):
    """Why a market's book is not, or may not be, the exchange's: the ``what`` of its ``anomaly``
    record. Each is followed by a resync (with backoff), except a first ``CROSSED_BOOK``."""

    # A delta took a level below zero: the level is removed (same as clamping to 0).
    NEGATIVE_SIZE = "negative_size"
    UNKNOWN_SIDE = "unknown_side"  # a delta named a side other than yes/no: nothing applied
    CROSSED_BOOK = "crossed_book"  # best yes + best no > $1 (may be a pair of deltas in flight)
    CROSSED_PERSISTS = "crossed_persists"  # still crossed after the grace period
    DELTA_BEFORE_SNAPSHOT = "delta_before_snapshot"  # deltas, but its snapshot never came
    INEXACT_VALUE = "inexact_value"  # a value that cannot be stored exactly (kept raw)
    BAD_SNAPSHOT = "bad_snapshot"  # a snapshot that cannot be read
    NO_SNAPSHOT = "no_snapshot"  # on a sid, but no snapshot for two command deadlines


_STALE = -1  # cached best unknown; recompute on read (prices are never negative in a book)


class OrderBook:
    """Bid levels per side, ``{price: size}``; a level never holds 0."""

    __slots__ = ("_best_no", "_best_yes", "no", "yes")

    def __init__(self) -> None:
        self.yes: dict[int, int] = {}
        self.no: dict[int, int] = {}
        self._best_yes: int | None = None
        self._best_no: int | None = None

    def apply_snapshot(self, yes: Mapping[int, int], no: Mapping[int, int]) -> None:
        """Replace the whole book (levels of size 0 are dropped)."""
        self.yes = {p: s for p, s in yes.items() if s}
        self.no = {p: s for p, s in no.items() if s}
        self._best_yes = _STALE
        self._best_no = _STALE

    def clear(self) -> None:
        """Forget every level (e.g. before a resync)."""
        self.apply_snapshot({}, {})

    def apply_delta(self, side: str, price: int, delta: int) -> BookProblem | None:
        """Add ``delta`` to the level at ``price``; returns what went wrong, or None.

        A result of 0 removes the level; below 0 also removes it and returns ``NEGATIVE_SIZE``.
        """
        if side == "yes":
            levels = self.yes
            best = self._best_yes
        elif side == "no":
            levels = self.no
            best = self._best_no
        else:
            return BookProblem.UNKNOWN_SIDE
        size = levels.get(price, 0) + delta
        if size > 0:
            levels[price] = size
            if best is None or (best != _STALE and price > best):
                best = price
            anomaly = None
        else:
            if price in levels:
                del levels[price]
                if price == best:
                    best = _STALE if levels else None
            anomaly = BookProblem.NEGATIVE_SIZE if size < 0 else None
        if side == "yes":
            self._best_yes = best
        else:
            self._best_no = best
        return anomaly

    def best_yes_bid(self) -> int | None:
        """Highest YES bid price, or None if the YES side is empty."""
        best = self._best_yes
        if best == _STALE:
            best = self._best_yes = max(self.yes) if self.yes else None
        return best

    def best_no_bid(self) -> int | None:
        """Highest NO bid price, or None if the NO side is empty."""
        best = self._best_no
        if best == _STALE:
            best = self._best_no = max(self.no) if self.no else None
        return best

    def best_yes_ask(self) -> int | None:
        """Cheapest YES ask = 1 - best NO bid."""
        no = self.best_no_bid()
        return None if no is None else PRICE_SCALE - no

    def best_no_ask(self) -> int | None:
        """Cheapest NO ask = 1 - best YES bid."""
        yes = self.best_yes_bid()
        return None if yes is None else PRICE_SCALE - yes

    def crossed(self) -> bool:
        """Best YES bid + best NO bid > 1: impossible on a consistent book (resync)."""
        yes = self.best_yes_bid()
        no = self.best_no_bid()
        return yes is not None and no is not None and yes + no > PRICE_SCALE

    def locked(self) -> bool:
        """Best YES bid + best NO bid == 1: should not persist (a warning, not an error)."""
        yes = self.best_yes_bid()
        no = self.best_no_bid()
        return yes is not None and no is not None and yes + no == PRICE_SCALE

    def levels(self, side: str) -> dict[int, int]:
        """The live level dict of ``side`` (``yes``/``no``); do not mutate."""
        if side == "yes":
            return self.yes
        if side == "no":
            return self.no
        raise ValueError(f"side must be 'yes' or 'no', got {side!r}")

    def top_n(self, side: str, n: int) -> list[tuple[int, int]]:
        """The ``n`` best bids of ``side`` as ``(price, size)``, best (highest price) first."""
        levels = self.levels(side)
        if n <= 0:
            return []
        return [(p, levels[p]) for p in sorted(levels, reverse=True)[:n]]

    def depth(self, side: str, n: int | None = None) -> int:
        """Total resting size (centi-contracts) of ``side``, over its ``n`` best levels or all."""
        if n is None:
            return sum(self.levels(side).values())
        return sum(size for _, size in self.top_n(side, n))

    def __len__(self) -> int:
        return len(self.yes) + len(self.no)

    def __repr__(self) -> str:
        return f"OrderBook(yes={self.yes!r}, no={self.no!r})"
