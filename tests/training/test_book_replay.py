"""Book reconstruction equals a naive dict model, event by event (property test)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from materialize.book_replay import (
    Act,
    Levels,
    replay,
)
from tests.support.oracles import naive_top
from tests.training.replay_events import replay_input

PRICES = [8_500, 10_000, 400_000, 410_000, 415_500, 420_000, 500_000, 990_000]
levels = st.dictionaries(st.sampled_from(PRICES), st.integers(1, 5000), max_size=6)
event = st.one_of(
    st.tuples(st.just(Act.SNAPSHOT), levels, levels),
    st.tuples(
        st.just(Act.DELTA),
        st.booleans(),
        st.sampled_from(PRICES),
        st.integers(-3000, 3000).filter(bool),
    ),
    st.tuples(st.sampled_from([Act.SKIP, Act.INVALID, Act.PROBE])),
)


def _naive(events: list[tuple], top_n: int) -> list[dict | None]:
    """Per event: the expected public columns when the book is valid, else None."""
    yes: Levels = {}
    no: Levels = {}
    bad = True
    out: list[dict | None] = []
    for ev in events:
        a = ev[0]
        if a == Act.SNAPSHOT:
            yes, no, bad = dict(ev[1]), dict(ev[2]), False
        elif a == Act.DELTA and not bad:
            book = yes if ev[1] else no
            size = book.get(ev[2], 0) + ev[3]
            if size < 0:
                bad = True
            elif size == 0:
                book.pop(ev[2], None)
            else:
                book[ev[2]] = size
        elif a == Act.INVALID:
            bad = True
        applied = a in (Act.SNAPSHOT, Act.PROBE) or (a == Act.DELTA and not bad)
        if bad or not applied:
            out.append(None)
            continue
        row: dict = {"yes_depth": sum(yes.values()), "no_depth": sum(no.values())}
        for name, book in (("yes", yes), ("no", no)):
            top = naive_top(book, top_n)
            for j in range(top_n):
                p, s = top[j] if j < len(top) else (None, None)
                row[f"{name}_bid_price_{j + 1}"] = p
                row[f"{name}_bid_size_{j + 1}"] = s
        out.append(row)
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(event, max_size=60), st.integers(1, 4))
def test_replay_equals_naive_model(events: list[tuple], top_n: int) -> None:
    got = replay(replay_input(events), top_n).to_dicts()
    want = _naive(events, top_n)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g["ok"] == (w is not None), (i, events[: i + 1])
        if w is not None:
            for k, v in w.items():
                assert g[k] == v, (i, k, events[: i + 1])


def test_exact_subpenny_and_fractional_levels() -> None:
    inp = replay_input([(Act.SNAPSHOT, {8_400: 100}, {2_500_00: 1}), (Act.DELTA, True, 8_500, 250)])
    row = replay(inp, 2).row(1, named=True)
    assert (row["yes_bid_price_1"], row["yes_bid_size_1"]) == (8_500, 250)
    assert (row["yes_bid_price_2"], row["yes_bid_size_2"]) == (8_400, 100)
