"""recorder.book: the book equals a plain reference model under random deltas, never holds a
zero level, and its best bids / crossed detection agree with brute force."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.book import BookProblem, OrderBook

prices = st.integers(1, 999_999)
small_prices = st.sampled_from([8_500, 10_000, 220_000, 540_000, 541_000, 560_000, 990_000])
sizes = st.integers(1, 100_000)
deltas = st.integers(-50_000, 50_000)
sides = st.sampled_from(["yes", "no"])
levels = st.dictionaries(st.one_of(prices, small_prices), sizes, max_size=8)


def test_basic_book() -> None:
    b = OrderBook()
    assert b.best_yes_bid() is None and b.best_yes_ask() is None and not b.crossed()
    b.apply_snapshot({80_000: 30_000, 220_000: 33_300}, {540_000: 2000, 560_000: 14_600})
    assert b.best_yes_bid() == 220_000
    assert b.best_no_bid() == 560_000
    assert b.best_yes_ask() == 440_000
    assert b.best_no_ask() == 780_000
    assert b.apply_delta("yes", 220_000, -3300) is None
    assert b.yes[220_000] == 30_000
    assert b.apply_delta("yes", 220_000, -30_000) is None
    assert 220_000 not in b.yes and b.best_yes_bid() == 80_000
    assert b.top_n("no", 1) == [(560_000, 14_600)]
    assert b.top_n("no", 5) == [(560_000, 14_600), (540_000, 2000)]
    assert b.depth("no") == 16_600 and b.depth("no", 1) == 14_600
    assert len(b) == 3


def test_negative_size_removes_level() -> None:
    b = OrderBook()
    b.apply_snapshot({500_000: 100}, {})
    assert b.apply_delta("yes", 500_000, -150) == BookProblem.NEGATIVE_SIZE
    assert b.yes == {} and b.best_yes_bid() is None
    assert b.apply_delta("no", 300_000, -1) == BookProblem.NEGATIVE_SIZE  # level never existed
    assert b.no == {}


def test_unknown_side_changes_nothing() -> None:
    b = OrderBook()
    b.apply_snapshot({500_000: 100}, {400_000: 100})
    assert b.apply_delta("maybe", 500_000, 10) == BookProblem.UNKNOWN_SIDE
    assert b.yes == {500_000: 100} and b.no == {400_000: 100}
    with pytest.raises(ValueError):
        b.top_n("maybe", 1)


def test_crossed_and_locked() -> None:
    b = OrderBook()
    b.apply_snapshot({600_000: 1}, {400_000: 1})
    assert b.locked() and not b.crossed()
    b.apply_delta("no", 400_001, 1)
    assert b.crossed()
    b.apply_delta("no", 400_001, -1)
    assert not b.crossed()


def test_snapshot_drops_zero_and_copies() -> None:
    yes = {1: 0, 2: 5}
    b = OrderBook()
    b.apply_snapshot(yes, {})
    yes[3] = 1
    assert b.yes == {2: 5}


@settings(max_examples=400, deadline=None)
@given(
    levels, levels, st.lists(st.tuples(sides, st.one_of(prices, small_prices), deltas), max_size=60)
)
def test_matches_reference_model(
    yes: dict[int, int], no: dict[int, int], ops: list[tuple[str, int, int]]
) -> None:
    book = OrderBook()
    book.apply_snapshot(yes, no)
    model = {"yes": dict(yes), "no": dict(no)}
    for side, price, delta in ops:
        size = model[side].get(price, 0) + delta
        if size > 0:
            model[side][price] = size
        else:
            model[side].pop(price, None)
        anomaly = book.apply_delta(side, price, delta)
        assert anomaly == (BookProblem.NEGATIVE_SIZE if size < 0 else None)
        assert book.yes == model["yes"] and book.no == model["no"]
        assert 0 not in book.yes.values() and 0 not in book.no.values()
        best_yes = max(model["yes"], default=None)
        best_no = max(model["no"], default=None)
        assert book.best_yes_bid() == best_yes
        assert book.best_no_bid() == best_no
        assert book.crossed() == (
            best_yes is not None and best_no is not None and best_yes + best_no > 1_000_000
        )
        assert book.top_n(side, 3) == sorted(model[side].items(), reverse=True)[:3]
