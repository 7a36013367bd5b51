"""Synthetic ``feed.events`` streams for the paper tests (the sans-I/O core needs no sockets)."""

from __future__ import annotations

import random

from feed.events import BookUpdate, FeedEvent, Hello, LifecycleEvent, SessionEnded

OPEN_S = 1_800_000_000
M = 1_000_000


def market_life(
    ticker: str,
    *,
    seed: int = 0,
    steps: int = 200,
    result: str = "yes",
    record_seq: int = 0,
    open_s: int = OPEN_S,
) -> list[FeedEvent]:
    """One market's life: created, a snapshot, ``steps`` random deltas over 100 s of exchange
    time (open at ``open_s``, close 100 s later), determined."""
    rng = random.Random(seed)
    yes = {p * 10_000: rng.randint(1, 20) * 100 for p in range(30, 45)}
    no = {p * 10_000: rng.randint(1, 20) * 100 for p in range(40, 50)}
    seq = record_seq
    events: list[FeedEvent] = []

    def nxt() -> int:
        nonlocal seq
        seq += 1
        return seq

    def top(levels: dict[int, int]) -> tuple[tuple[int, int], ...]:
        return tuple(sorted(levels.items(), reverse=True))

    events.append(
        LifecycleEvent(
            ticker, "created", nxt(), open_ts=open_s, close_ts=open_s + 100, msg={"x": 1}
        )
    )
    events.append(BookUpdate(ticker, nxt(), True, True, top(yes), top(no)))
    for i in range(steps):
        side = rng.choice(["yes", "no"])
        book = yes if side == "yes" else no
        price = (
            rng.choice(list(book)) if book and rng.random() < 0.7 else rng.randint(30, 49) * 10_000
        )
        if (side == "yes" and price >= 450_000) or (side == "no" and price >= 500_000):
            price = (30 if side == "yes" else 40) * 10_000
        if price in book and rng.random() < 0.5:
            delta = -rng.randint(1, book[price])
        else:
            delta = rng.randint(1, 10) * 100
        book[price] = book.get(price, 0) + delta
        if book[price] <= 0:
            del book[price]
        ts_ms = (open_s + 1) * 1000 + i * (98_000 // steps)
        events.append(
            BookUpdate(ticker, nxt(), False, True, top(yes), top(no), ts_ms, side, price, delta)
        )
    events.append(
        LifecycleEvent(
            ticker,
            "determined",
            nxt(),
            result=result,
            settlement_value=M if result == "yes" else 0,
        )
    )
    return events


def session(n_markets: int = 3, seed: int = 0, steps: int = 200) -> list[FeedEvent]:
    out: list[FeedEvent] = [Hello("1", 42, "replay", {}, "current", 0)]
    for i in range(n_markets):
        out += market_life(
            f"KXT-26JAN01-M{i}",
            seed=seed + i,
            steps=steps,
            result="yes" if i % 2 == 0 else "no",
            record_seq=10_000 * i,
            open_s=OPEN_S + 200 * i,  # one after the other, as the exchange clock runs
        )
    out.append(SessionEnded("end", 10_000 * n_markets))
    return out
