"""How our paper orders fill against a recorded book: the model, written down, and pluggable.

What the recording shows is each price level's resting size over time (``orderbook_delta``); it
does not show trades, cancels, or who was where in a queue. Any fill model is therefore an
assumption. The default, :class:`ConservativeFillModel`, errs on the side of filling *less* than
reality would have:

**Taking (an order that crosses).** It takes the opposite side level by level, best price first,
each at that level's price, and never more than the size shown *minus what we already took there*.
Our fills do not remove the liquidity from the recorded book (others' behaviour in the recording
assumed it stayed), so the broker keeps a per-level "taken" ledger; a level's taken amount is
clamped to its shown size whenever that shrinks and forgotten when the level disappears. So the
same shown contracts are never sold to us twice, and a refill we could not have known about is
only available once the shown size grows past what we took.

**Resting (what does not cross, GTC).** The order joins the queue behind the whole size already
shown at its price on its side (``queue_ahead``). A decrease of that level is assumed to come from
the front of the queue (a trade or a cancel ahead of us) and reduces ``queue_ahead``; an increase
joins behind us. A decrease never fills us by itself: we cannot tell a trade that reached us from
a cancel behind us, so we assume the cancel. The order fills only when the queue ahead is gone
*and* the opposite side trades through its price: a recorded opposite level appears at or beyond
our price (a seller at or below our bid). It then fills at our own price, as maker, up to the
opposite size shown there (minus what we already took) — in the real exchange that seller would
have met us first.

**Limits.** Counting every decrease ahead of us as progress is optimistic when those were cancels
of orders that would not have traded; assuming decreases at the front of the queue is optimistic
for the same reason; never filling on a level decrease once at the front is pessimistic. Our own
orders never match each other. Nothing models latency: an order is in the book from the event it
was sent on. Levels outside the depth the feed shows are invisible. Use
:class:`QueueDepletionFillModel` (fills on decreases past the queue ahead) to bound the answer from
the other side; write your own by implementing :class:`FillModel`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from paper.book import Book

Available = Callable[[bool, int], int]
"""``available(is_ask, yes_price)``: shown size at a level minus what we already took there."""


@dataclass(slots=True)
class Resting:
    """What the fill model knows of one of our resting orders (YES view)."""

    buy: bool
    price: int
    remaining: int
    queue_ahead: int


class FillModel(Protocol):
    """The pluggable part of the broker. Sizes in centi-contracts, prices YES micro-dollars."""

    def take(
        self, buy: bool, limit: int, size: int, book: Book, available: Available
    ) -> list[tuple[int, int]]:
        """Fills of a crossing order: (price, size) per level, in the order taken."""
        ...

    def queue_ahead(self, buy: bool, price: int, book: Book) -> int:
        """Where an order joins the queue at ``price``."""
        ...

    def level_changed(self, order: Resting, old: int, new: int) -> int:
        """The order's own level went from ``old`` to ``new``: update the queue, return a maker
        fill size (0 for none)."""
        ...

    def trade_through(
        self, order: Resting, book: Book, available: Available
    ) -> list[tuple[int, int]]:
        """Opposite levels (price, size to use) that fill the resting order at its own price."""
        ...


def _crossing(buy: bool, limit: int, book: Book) -> list[tuple[int, int]]:
    """Opposite levels that cross ``limit``, best first: asks <= limit for a buy, bids >= limit
    for a sell."""
    if buy:
        return sorted((p, s) for p, s in book.asks.items() if p <= limit)
    return sorted(((p, s) for p, s in book.bids.items() if p >= limit), reverse=True)


class ConservativeFillModel:
    """The default model (see the module docstring)."""

    def take(
        self, buy: bool, limit: int, size: int, book: Book, available: Available
    ) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        left = size
        for price, _shown in _crossing(buy, limit, book):
            if left <= 0:
                break
            n = min(left, available(buy, price))
            if n > 0:
                out.append((price, n))
                left -= n
        return out

    def queue_ahead(self, buy: bool, price: int, book: Book) -> int:
        return book.size(not buy, price)

    def level_changed(self, order: Resting, old: int, new: int) -> int:
        if new < old:
            order.queue_ahead = max(0, order.queue_ahead - (old - new))
        order.queue_ahead = min(order.queue_ahead, new)
        return 0

    def trade_through(
        self, order: Resting, book: Book, available: Available
    ) -> list[tuple[int, int]]:
        if order.queue_ahead > 0:
            return []
        return self.take(order.buy, order.price, order.remaining, book, available)


class QueueDepletionFillModel(ConservativeFillModel):
    """An optimistic bound: a decrease of our level beyond the queue ahead is a trade that
    reached us (fills us at our price)."""

    def level_changed(self, order: Resting, old: int, new: int) -> int:
        if new >= old:
            return 0
        dec = old - new
        through = max(0, dec - order.queue_ahead)
        order.queue_ahead = max(0, order.queue_ahead - dec)
        return min(through, order.remaining)
