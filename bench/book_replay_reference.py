"""The previous book replay of the training build (a dict + sorted list per delta, polars forward
fill; 0.3-0.5M deltas/s), kept verbatim as the oracle of ``materialize.book_replay.replay``: the
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
    ACT_DELTA,
    ACT_INVALID,
    ACT_PROBE,
    ACT_SNAPSHOT,
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


def _loop_reference(
    inp: ReplayInput, top_n: int
) -> tuple[bytearray, list[int], list[int], _Records, _Records]:
    """The sequential part. Returns (ok, new level size, side depth, yes records, no records)."""
    n = len(inp.act)
    ok = bytearray(n)
    new_size = [0] * n
    depth = [0] * n
    yrec = _Records([], [], [], [])
    nrec = _Records([], [], [], [])
    yb: Levels = {}
    nb: Levels = {}
    ys: list[int] = []
    ns: list[int] = []
    ythr = 0  # a level with price >= thr is in the top N (0: fewer than N levels, all are)
    nthr = 0
    ytot = 0
    ntot = 0
    bad = True
    neg = -top_n - 1
    snaps = inp.snapshots
    act = inp.act
    is_yes = inp.is_yes
    price = inp.price
    delta = inp.delta
    for i in range(n):
        a = act[i]
        if a == ACT_DELTA:
            if bad:
                continue
            p = price[i]
            if is_yes[i]:
                old = yb.get(p, 0)
                s = old + delta[i]
                if s > 0:
                    yb[p] = s
                    ytot += s - old
                    if old == 0:
                        insort(ys, p)
                        if p > ythr:
                            ythr = ys[-top_n] if len(ys) >= top_n else 0
                            top = ys[-1:neg:-1]
                            yrec.idx.append(i)
                            yrec.prices.append(top)
                            yrec.sizes.append([yb[q] for q in top])
                            yrec.depth.append(ytot)
                elif s == 0:
                    if old:
                        del yb[p]
                        del ys[bisect_left(ys, p)]
                        ytot -= old
                        if p >= ythr:
                            ythr = ys[-top_n] if len(ys) >= top_n else 0
                            top = ys[-1:neg:-1]
                            yrec.idx.append(i)
                            yrec.prices.append(top)
                            yrec.sizes.append([yb[q] for q in top])
                            yrec.depth.append(ytot)
                else:
                    bad = True
                    continue
                new_size[i] = s
                depth[i] = ytot
            else:
                old = nb.get(p, 0)
                s = old + delta[i]
                if s > 0:
                    nb[p] = s
                    ntot += s - old
                    if old == 0:
                        insort(ns, p)
                        if p > nthr:
                            nthr = ns[-top_n] if len(ns) >= top_n else 0
                            top = ns[-1:neg:-1]
                            nrec.idx.append(i)
                            nrec.prices.append(top)
                            nrec.sizes.append([nb[q] for q in top])
                            nrec.depth.append(ntot)
                elif s == 0:
                    if old:
                        del nb[p]
                        del ns[bisect_left(ns, p)]
                        ntot -= old
                        if p >= nthr:
                            nthr = ns[-top_n] if len(ns) >= top_n else 0
                            top = ns[-1:neg:-1]
                            nrec.idx.append(i)
                            nrec.prices.append(top)
                            nrec.sizes.append([nb[q] for q in top])
                            nrec.depth.append(ntot)
                else:
                    bad = True
                    continue
                new_size[i] = s
                depth[i] = ntot
            ok[i] = 1
        elif a == ACT_SNAPSHOT:
            yl, nl = snaps[i]
            yb = {p: s for p, s in yl.items() if s > 0}
            nb = {p: s for p, s in nl.items() if s > 0}
            ys = sorted(yb)
            ns = sorted(nb)
            ythr = ys[-top_n] if len(ys) >= top_n else 0
            nthr = ns[-top_n] if len(ns) >= top_n else 0
            ytot = sum(yb.values())
            ntot = sum(nb.values())
            top = ys[-1:neg:-1]
            yrec.idx.append(i)
            yrec.prices.append(top)
            yrec.sizes.append([yb[q] for q in top])
            yrec.depth.append(ytot)
            top = ns[-1:neg:-1]
            nrec.idx.append(i)
            nrec.prices.append(top)
            nrec.sizes.append([nb[q] for q in top])
            nrec.depth.append(ntot)
            bad = False
            ok[i] = 1
        elif a == ACT_INVALID:
            bad = True
        elif a == ACT_PROBE:
            ok[i] = 0 if bad else 1
        # ACT_SKIP: nothing
    return ok, new_size, depth, yrec, nrec


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
    applied = pl.col("ok") & (pl.col("_act") == ACT_DELTA)
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
