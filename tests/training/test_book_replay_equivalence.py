"""The vectorised replay equals the previous implementation (``replay_reference``) on random data.

Random books with many level creations/removals, wide books (more than 64 price levels per side,
so the alive-set bitmask spans several words), sub-penny and large prices, invalidation by
negative sizes and by ``Act.INVALID``, stale events and probes; list and numpy inputs.
"""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest

from materialize.book_replay import (
    Act,
    Levels,
    ReplayInput,
    replay,
)
from tests.support.oracles import replay_reference
from tests.training.replay_events import Event, replay_input


def _random_events(rng: random.Random, n: int, n_prices: int, big: bool) -> list[Event]:
    scale = 1_000_003 if big else 1_000
    prices = sorted(rng.sample(range(1, 1_000), n_prices))
    prices = [p * scale for p in prices]
    events: list[Event] = []
    books: tuple[Levels, Levels] = ({}, {})
    for i in range(n):
        r = rng.random()
        if i == 0 or r < 0.01:
            k = rng.randrange(0, n_prices + 1)
            yes = {p: rng.randrange(-2, 30) * 100 for p in rng.sample(prices, k)}
            no = {p: rng.randrange(1, 30) * 100 for p in rng.sample(prices, rng.randrange(k + 1))}
            books = ({p: s for p, s in yes.items() if s > 0}, dict(no))
            events.append((Act.SNAPSHOT, yes, no))
            continue
        a = Act.DELTA
        if r < 0.015:
            a = Act.INVALID
        elif r < 0.025:
            a = Act.SKIP
        elif r < 0.035:
            a = Act.PROBE
        side = rng.random() < 0.5
        p = rng.choice(prices)
        old = books[0 if side else 1].get(p, 0)
        if old and rng.random() < 0.5:  # remove part, all, or (rarely) more than there is
            d = -rng.randrange(1, max(old // 100, 1) + 1) * 100
            d -= 100 if rng.random() < 0.002 else 0
        else:
            d = rng.choice([100, 250, 1, 0]) if rng.random() < 0.1 else 100
        if a == Act.DELTA:
            book = books[0 if side else 1]
            if old + d > 0:
                book[p] = old + d
            else:
                book.pop(p, None)
        events.append((a, side, p, d))
    return events


def _assert_same(got: pl.DataFrame, want: pl.DataFrame) -> None:
    """Same columns and types, same ``ok``, same values on every ``ok`` row (values on the other
    rows are documented as meaningless)."""
    assert got.schema == want.schema
    assert got["ok"].to_list() == want["ok"].to_list()
    ok = want["ok"]
    assert got.filter(ok).to_dicts() == want.filter(ok).to_dicts()


@pytest.mark.parametrize(
    ("seed", "n", "n_prices", "top_n", "big"),
    [
        (1, 3000, 8, 1, False),
        (2, 3000, 12, 3, False),
        (3, 5000, 20, 5, False),
        (4, 5000, 20, 5, True),
        (5, 4000, 90, 5, False),
        (6, 4000, 150, 70, False),
        (7, 2000, 3, 8, True),
        (8, 6000, 300, 130, False),
    ],
)
def test_replay_equals_reference(seed: int, n: int, n_prices: int, top_n: int, big: bool) -> None:
    inp = replay_input(_random_events(random.Random(seed), n, n_prices, big))
    want = replay_reference(inp, top_n)
    _assert_same(replay(inp, top_n), want)
    as_numpy = ReplayInput(
        act=np.array(inp.act, dtype=np.int8),
        is_yes=np.array(inp.is_yes, dtype=np.bool_),
        price=np.array(inp.price, dtype=np.int64),
        delta=np.array(inp.delta, dtype=np.int64),
        snapshots=inp.snapshots,
    )
    _assert_same(replay(as_numpy, top_n), want)


def test_many_markets_back_to_back() -> None:
    """Markets concatenated (each starting with its snapshot), some with unanchored deltas."""
    rng = random.Random(11)
    events: list[Event] = []
    for k in range(60):
        if k % 7 == 3:  # a market whose first events came before its snapshot
            events += [(Act.INVALID, True, 5_000, 100), (Act.INVALID, False, 6_000, 200)]
            events.append((Act.PROBE,))
        events += _random_events(rng, rng.randrange(1, 400), rng.randrange(1, 40), False)
    inp = replay_input(events)
    _assert_same(replay(inp, 5), replay_reference(inp, 5))


def test_edge_inputs() -> None:
    cases: list[list[Event]] = [
        [],
        [(Act.DELTA, True, 10, 5), (Act.PROBE,), (Act.SKIP,)],
        [(Act.SNAPSHOT, {}, {}), (Act.DELTA, True, 10, 5), (Act.DELTA, True, 10, -5), (Act.PROBE,)],
    ]
    for events in cases:
        inp = replay_input(events)
        for top_n in (1, 2):
            _assert_same(replay(inp, top_n), replay_reference(inp, top_n))
    with pytest.raises(ValueError):
        replay(replay_input([]), 0)
