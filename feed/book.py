"""A market's bid levels, and the one rule for applying a Kalshi delta to them.

Why one function: the tap's state (``feed.state``), its client (``feed.client``) and the paper
broker's book (``paper.book``) all apply ``orderbook_delta`` changes to ``{price: size}`` levels,
and must agree exactly on what an impossible book is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Levels = dict[int, int]
"""{price micro-dollars: size centi-contracts}, sizes > 0 (``schemas.wire.Levels``)."""


def apply_delta(levels: Levels, price: int, delta: int) -> int:
    """Add ``delta`` (a signed size change) to the level at ``price``; a level that reaches zero
    or less is removed. Returns the new size: below zero, a delta was missed and ``levels`` is no
    longer the true book (the caller marks it so)."""
    size = levels.get(price, 0) + delta
    if size > 0:
        levels[price] = size
    else:
        levels.pop(price, None)
    return size


@dataclass(slots=True)
class Book:
    """A market's full book as a tap consumer holds it (bids per side, exact ints)."""

    yes: Levels = field(default_factory=dict)
    no: Levels = field(default_factory=dict)
    valid: bool = False

    def top(self, side: str, depth: int) -> tuple[tuple[int, int], ...]:
        """The best ``depth`` bid levels of ``side`` ("yes"/"no"), highest price first."""
        levels = self.yes if side == "yes" else self.no
        return tuple(sorted(levels.items(), reverse=True)[:depth])

    def apply(self, side: str, price: int, delta: int) -> None:
        """An ``orderbook_delta``: a negative size makes the book invalid until a snapshot."""
        if apply_delta(self.yes if side == "yes" else self.no, price, delta) < 0:
            self.valid = False
