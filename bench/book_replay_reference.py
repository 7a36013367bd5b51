"""The previous book replay of the training build (a dict + sorted list per delta, polars forward
fill; 0.3-0.5M deltas/s), kept as the oracle of ``materialize.book_replay.replay``: the
equivalence tests (through ``tests/support``) compare the two event by event, and
``bench/training_build.py`` measures "before" with it. Not product code, hence here: ``bench/``
must not import ``tests/``, and the tests may import this.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from materialize.book_replay import (
    ABSENT,
    Act,
    Levels,
    ReplayInput,
)


def _as_lists(inp: ReplayInput) -> ReplayInput:
    def lst(v: Any) -> list[Any]:
        return v.tolist() if isinstance(v, np.ndarray) else list(v)

    return ReplayInput(
        act=lst(inp.act),
        is_yes=lst(inp.is_yes),
        price=lst(inp.price),
        delta=lst(inp.delta),
        snapshots=inp.snapshots,
    )


@dataclass(slots=True)
class _Records:
    """Top-N of one side captured when its price set changed, at event ``idx``."""

    idx: list[int]
    prices: list[list[int]]
    sizes: list[list[int]]
    depth: list[int]


def _threshold(levels: list[int], top_n: int) -> int:
    """A level with price >= this is in the top N (0: fewer than N levels, all are)."""
    return levels[-top_n] if len(levels) >= top_n else 0


def _capture(rec: _Records, i: int, book: Levels, levels: list[int], total: int, neg: int) -> None:
    top = levels[-1:neg:-1]
    rec.idx.append(i)
    rec.prices.append(top)
    rec.sizes.append([book[q] for q in top])
    rec.depth.append(total)


def _loop_reference(
    inp: ReplayInput, top_n: int
) -> tuple[bytearray, list[int], list[int], _Records, _Records]:
    """The sequential part. Returns (ok, new level size, side depth, yes records, no records).
    Each side's state is indexed by ``k`` (0 yes, 1 no)."""
    n = len(inp.act)
    ok = bytearray(n)
    new_size = [0] * n
    depth = [0] * n
    recs = (_Records([], [], [], []), _Records([], [], [], []))
    books: list[Levels] = [{}, {}]
    levels: list[list[int]] = [[], []]
    thr = [0, 0]
    tot = [0, 0]
    bad = True
    neg = -top_n - 1
    snaps = inp.snapshots
    act = inp.act
    is_yes = inp.is_yes
    price = inp.price
    delta = inp.delta
    for i in range(n):
        a = act[i]
        if a == Act.DELTA:
            if bad:
                continue
            k = 0 if is_yes[i] else 1
            book = books[k]
            lv = levels[k]
            p = price[i]
            old = book.get(p, 0)
            s = old + delta[i]
            if s > 0:
                book[p] = s
                tot[k] += s - old
                if old == 0:
                    insort(lv, p)
                    if p > thr[k]:
                        thr[k] = _threshold(lv, top_n)
                        _capture(recs[k], i, book, lv, tot[k], neg)
            elif s == 0:
                if old:
                    del book[p]
                    del lv[bisect_left(lv, p)]
                    tot[k] -= old
                    if p >= thr[k]:
                        thr[k] = _threshold(lv, top_n)
                        _capture(recs[k], i, book, lv, tot[k], neg)
            else:
                bad = True
                continue
            new_size[i] = s
            depth[i] = tot[k]
            ok[i] = 1
        elif a == Act.SNAPSHOT:
            for k, side in enumerate(snaps[i]):
                book = books[k] = {p: s for p, s in side.items() if s > 0}
                lv = levels[k] = sorted(book)
                thr[k] = _threshold(lv, top_n)
                tot[k] = sum(book.values())
                _capture(recs[k], i, book, lv, tot[k], neg)
            bad = False
            ok[i] = 1
        elif a == Act.INVALID:
            bad = True
        elif a == Act.PROBE:
            ok[i] = 0 if bad else 1
        # Act.SKIP: nothing
    return ok, new_size, depth, recs[0], recs[1]


def _scattered(n: int, idx: list[int], values: list[int]) -> pl.Series:
    s = pl.repeat(None, n, dtype=pl.Int64, eager=True)
    if idx:
        s = s.scatter(idx, pl.Series(values=values, dtype=pl.Int64))
    return s


def _side_frame(n: int, rec: _Records, top_n: int, prefix: str) -> dict[str, pl.Series]:
    """Full-height columns holding the records (null where the side's top-N did not change)."""
    cols: dict[str, pl.Series] = {f"_{prefix}_rec": _scattered(n, rec.idx, [1] * len(rec.idx))}
    for j in range(top_n):
        cols[f"_{prefix}_p{j}"] = _scattered(
            n, rec.idx, [t[j] if j < len(t) else ABSENT for t in rec.prices]
        )
        cols[f"_{prefix}_s{j}"] = _scattered(
            n, rec.idx, [t[j] if j < len(t) else ABSENT for t in rec.sizes]
        )
    cols[f"_{prefix}_d"] = _scattered(n, rec.idx, rec.depth)
    return cols


def replay_reference(inp: ReplayInput, top_n: int = 5) -> pl.DataFrame:
    """The previous implementation of ``materialize.book_replay.replay`` (dict + sorted list per
    delta, polars forward fill): same input, same output contract."""
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    inp = _as_lists(inp)
    n = len(inp.act)
    ok, new_size, depth, yrec, nrec = _loop_reference(inp, top_n)
    base = pl.DataFrame(
        {
            "ok": pl.Series(values=ok, dtype=pl.UInt8).cast(pl.Boolean),
            "_yes": pl.Series(values=inp.is_yes, dtype=pl.Boolean),
            "_price": pl.Series(values=inp.price, dtype=pl.Int64),
            "_act": pl.Series(values=inp.act, dtype=pl.Int8),
            "_new": pl.Series(values=new_size, dtype=pl.Int64),
            "_dep": pl.Series(values=depth, dtype=pl.Int64),
            **_side_frame(n, yrec, top_n, "y"),
            **_side_frame(n, nrec, top_n, "n"),
        }
    )
    applied = pl.col("ok") & (pl.col("_act") == Act.DELTA)
    sides = (("y", "yes", applied & pl.col("_yes")), ("n", "no", applied & ~pl.col("_yes")))
    # Stage 1: slot prices as of every event (the slot -> price map changes only at records).
    base = base.with_columns(
        pl.col(f"_{prefix}_p{j}").forward_fill() for prefix, _, _ in sides for j in range(top_n)
    )
    # Stage 2: slot sizes: the record's, else the new size of an event hitting that slot's price.
    sizes: list[pl.Expr] = []
    for prefix, name, side_hit in sides:
        rec = pl.col(f"_{prefix}_rec").is_not_null()
        sizes += [
            pl.when(rec)
            .then(pl.col(f"_{prefix}_s{j}"))
            .when(side_hit & (pl.col("_price") == pl.col(f"_{prefix}_p{j}")))
            .then(pl.col("_new"))
            .otherwise(None)
            .forward_fill()
            .alias(f"_{prefix}_s{j}")
            for j in range(top_n)
        ]
        sizes.append(
            pl.when(rec)
            .then(pl.col(f"_{prefix}_d"))
            .when(side_hit)
            .then(pl.col("_dep"))
            .otherwise(None)
            .forward_fill()
            .alias(f"{name}_depth")
        )
    base = base.with_columns(sizes)
    # Stage 3: public names, the "no level" sentinel as null.
    out: list[pl.Expr] = [pl.col("ok")]
    for prefix, name, _ in sides:
        for kind, short in (("price", "p"), ("size", "s")):
            out += [
                pl.col(f"_{prefix}_{short}{j}")
                .replace(ABSENT, None)
                .alias(f"{name}_bid_{kind}_{j + 1}")
                for j in range(top_n)
            ]
        out.append(pl.col(f"{name}_depth"))
    return base.select(out)
