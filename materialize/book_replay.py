"""Order-book reconstruction for training sets: snapshots + deltas in record order -> top-N rows.

Semantics (docs/protocol.md §4), exact integers throughout (price micro-dollars, size
centi-contracts): a snapshot replaces the book; a delta adds to (side, price); a result of 0
removes the level; a **negative** result is an impossible state: the book is invalid from there
until the next snapshot (never a row). What counts as valid input (anchored, no gap since the
anchor, not stale) is decided by the caller and passed in as an action code per event;
"invalid" is sticky until the next snapshot.

How :func:`replay` gets past 1M deltas/s (the previous dict-per-delta loop, kept as the oracle
``bench/book_replay_reference.py`` for the tests and the benchmark, ran at ~0.4M/s): everything
is a numpy array pass (numpy, not polars, because the steps below need scatters, segmented scans
and bit operations); there is no Python loop over events.

1. **Spans and levels.** Each snapshot opens a span (up to the next snapshot). A *level* is
   (span, side, price); its entries are the snapshot's size (if any) and the deltas on it. One
   sort by (level, event) puts each level's entries together in order; a segmented cumulative
   sum gives the level's size after every delta. Level ids number levels in price order within
   their (span, side) group.
2. **Validity.** A span turns invalid at its first ``Act.INVALID`` event or its first negative
   level size, whichever comes first; deltas before that point are exactly the applied ones (the
   sizes before a point do not depend on anything after it).
3. **Top-N sets.** Only a snapshot or a delta that creates or removes a level can change which
   levels are in a side's top N. Over just those events, each group's set of alive levels is a
   bitmask over its price ranks (a running XOR: creating and removing both flip a bit), and the
   top N are its N lowest set bits (ranks counted from the best price). Where that set differs
   from the previous one, it is a *record*.
4. **Rows.** Every event takes the latest record's level per slot; a slot's size is the size at
   the latest record (looked up in the sorted entries, only where the slot's level changed) or,
   if later, the new size of the latest delta on that level — a forward fill per slot. Depth is
   a running sum per side, reset at snapshots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa


class Act(IntEnum):
    """What the replay does with one event: the action code the caller decides per event."""

    SNAPSHOT = 0
    """Replace the book with the snapshot's levels; the book is valid afterwards."""
    DELTA = 1
    """Apply the delta (if the book is valid)."""
    SKIP = 2
    """Ignore the event (stale/duplicate seq): no state change, no row."""
    INVALID = 3
    """The book is not valid from here until the next snapshot (gap, loss, unanchored delta)."""
    PROBE = 4
    """No state change; ``ok`` tells whether the book is valid at this point (e.g. at
    determination)."""


ABSENT = -1  # sentinel for "no level in this slot" while forward-filling (prices/sizes are > 0)

Levels = dict[int, int]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class ReplayInput:
    """Events of one or more markets, grouped by market and in record order within a market.

    The per-event columns may be sequences or numpy arrays (numpy is the fast path).
    ``snapshots[i]`` holds the (yes, no) levels of event ``i`` when ``act[i] == Act.SNAPSHOT``.
    Markets need no separator: every valid span starts with that market's own snapshot.
    """

    act: Sequence[int] | npt.NDArray[np.integer[Any]]
    is_yes: Sequence[bool] | npt.NDArray[np.bool_]
    price: Sequence[int] | npt.NDArray[np.integer[Any]]
    delta: Sequence[int] | npt.NDArray[np.integer[Any]]
    snapshots: dict[int, tuple[Levels, Levels]]


def yes_cols(top_n: int) -> list[str]:
    """Names of the yes-side level columns, best first."""
    return [f"yes_bid_price_{j}" for j in range(1, top_n + 1)] + [
        f"yes_bid_size_{j}" for j in range(1, top_n + 1)
    ]


def no_cols(top_n: int) -> list[str]:
    """Names of the no-side level columns, best first."""
    return [f"no_bid_price_{j}" for j in range(1, top_n + 1)] + [
        f"no_bid_size_{j}" for j in range(1, top_n + 1)
    ]


def _out_names(top_n: int) -> list[str]:
    return ["ok", *yes_cols(top_n), "yes_depth", *no_cols(top_n), "no_depth"]


def _null_where(values: I64, sizes: I64, gaps: bool, before: int) -> pa.Array:
    """``values`` as an Arrow int64 array, null where ``sizes`` is ``ABSENT`` (no level): only
    the first ``before`` rows unless ``gaps`` (the slot is empty in some record)."""
    if gaps:
        valid = sizes >= 0
    elif before:
        valid = np.ones(len(values), dtype=np.bool_)
        valid[:before] = False
    else:
        return pa.array(values)
    bits = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.int64(), len(values), [bits, pa.py_buffer(values)])


def replay(inp: ReplayInput, top_n: int = 5) -> pl.DataFrame:
    """Reconstruct the book after every event.

    Returns one row per input event, in input order: ``ok`` (the book is valid after this event
    and the event changed or confirmed it: a row may be emitted here), the top-N levels per side
    (``yes_bid_price_1..N``, ``yes_bid_size_1..N``, ``no_bid_price_1..N``, ``no_bid_size_1..N``,
    null where the side has fewer levels) and ``yes_depth``/``no_depth`` (total resting size per
    side). Values on rows with ``ok`` false are meaningless.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    act = np.asarray(inp.act, dtype=np.int8)
    is_yes = np.asarray(inp.is_yes, dtype=np.bool_)
    price = np.asarray(inp.price, dtype=np.int64)
    delta = np.asarray(inp.delta, dtype=np.int64)
    n = len(act)

    # -- spans: span k runs from the k-th snapshot to the next; -1 before the first one.
    is_snap = act == Act.SNAPSHOT
    snap_at = np.flatnonzero(is_snap)
    n_span = len(snap_at)
    span = np.cumsum(is_snap, dtype=np.int64) - 1

    # -- entries of levels: snapshot levels (size > 0) first, then every delta inside a span.
    s_time: list[int] = []
    s_yes: list[bool] = []
    s_price: list[int] = []
    s_size: list[int] = []
    tot = np.zeros((2, n_span + 1), dtype=np.int64)  # [yes, no] depth right after each snapshot
    for k, i in enumerate(snap_at.tolist()):
        for side, lv in enumerate(inp.snapshots[i]):
            for p, s in lv.items():
                if s > 0:
                    s_time.append(i)
                    s_yes.append(side == 0)
                    s_price.append(p)
                    s_size.append(s)
                    tot[side, k] += s
    n_s = len(s_time)
    d_at = np.flatnonzero((act == Act.DELTA) & (span >= 0))
    e_time = np.concatenate([np.array(s_time, dtype=np.int64), d_at])
    e_yes = np.concatenate([np.array(s_yes, dtype=np.bool_), is_yes[d_at]])
    e_price = np.concatenate([np.array(s_price, dtype=np.int64), price[d_at]])
    e_val = np.concatenate([np.array(s_size, dtype=np.int64), delta[d_at]])
    e_group = span[e_time] * 2 + ~e_yes  # (span, side); yes before no (any fixed order works)
    s_time_at, s_yes_at = e_time[:n_s].copy(), e_yes[:n_s].copy()
    del e_yes

    # -- one sort by (span, side, price, time): dense price ranks keep the key in 64 bits.
    if len(e_price) and int(e_price.min()) >= 0 and int(e_price.max()) < 1 << 22:
        present = np.bincount(e_price) > 0
        n_prices = int(present.sum())
        e_prank = (np.cumsum(present, dtype=np.int64) - 1)[e_price]
    else:
        uniq, inverse = np.unique(e_price, return_inverse=True)
        n_prices = len(uniq)
        e_prank = inverse.astype(np.int64).reshape(-1)
    # The key packs (level key, entry index); within a level, entry order is event order
    # (snapshot entries come first and precede their span's deltas). Keys are unique, so a plain
    # sort is exact; the input is grouped by market, so it is nearly sorted at the top.
    n_e = len(e_time)
    shift = max(n_e.bit_length(), 1)
    if ((2 * n_span + 2) * max(n_prices, 1)) << shift >= 1 << 62:  # pragma: no cover
        raise ValueError("too many (span, side, price) levels for a 64-bit sort key")
    e_group *= n_prices
    e_group += e_prank
    e_group <<= shift
    e_group |= np.arange(n_e)
    sorted_key = np.sort(e_group)
    del e_group, e_prank  # (arrays are dropped as soon as they are done with: less memory)
    order = sorted_key & ((1 << shift) - 1)
    o_key = sorted_key >> shift
    first = np.ones(len(order), dtype=np.bool_)
    first[1:] = o_key[1:] != o_key[:-1]
    level_key = o_key[first]
    del o_key
    o_level = np.cumsum(first, dtype=np.int64)
    o_level -= 1  # level ids: price order within (span, side)
    level_price = e_price[order[first]]
    o_val = e_val[order]
    del e_price, e_val
    o_size = np.cumsum(o_val)
    o_size -= (o_size[first] - o_val[first])[o_level]  # level size after each entry
    del o_val

    # -- validity: a span is bad from its first Act.INVALID or first negative size.
    bad_from = np.full(n_span + 1, n, dtype=np.int64)
    bad_from[n_span] = -1  # index -1: events before the first snapshot are never valid
    neg = o_size < 0
    if neg.any():
        neg_at = e_time[order[neg]]
        np.minimum.at(bad_from, span[neg_at], neg_at)
    del e_time
    inv_at = np.flatnonzero((act == Act.INVALID) & (span >= 0))
    if len(inv_at):
        np.minimum.at(bad_from, span[inv_at], inv_at)
    valid = bad_from[span] > np.arange(n)
    ok = valid & ((act == Act.SNAPSHOT) | (act == Act.DELTA) | (act == Act.PROBE))
    applied = valid & (act == Act.DELTA)
    del valid

    # -- per event: the delta's level and new size (back from sorted order).
    e_buf = np.empty_like(o_size)
    e_buf[order] = o_size
    new_size = np.zeros(n, dtype=np.int64)
    new_size[d_at] = e_buf[n_s:]
    e_buf[order] = o_level
    del order, o_level
    level = np.full(n, -1, dtype=np.int64)
    level[d_at] = e_buf[n_s:]
    s_level = e_buf[:n_s].copy()
    del e_buf
    # (for applied deltas, sizes never go below 0: old size 0 <=> new size == delta)
    created = applied & (new_size == delta) & (delta > 0)
    removed = applied & (new_size == 0) & (delta < 0)

    # -- levels by group (span, side); a level's rank from the top of its group.
    level_group = level_key // max(n_prices, 1)
    group_count = np.bincount(level_group, minlength=2 * n_span + 2)
    group_start = np.cumsum(group_count) - group_count
    from_top = group_start[level_group] + group_count[level_group] - 1 - np.arange(len(level_price))
    s_row = np.searchsorted(snap_at, s_time_at)  # span of each snapshot entry
    level_price_x = np.append(level_price, np.int64(ABSENT))  # index -1: no level
    entries_to = np.zeros(n, dtype=np.int64)  # per event: entries with an index up to its own
    entries_to[d_at] = 1
    if n:
        entries_to[0] += n_s  # snapshot entries come first
    np.cumsum(entries_to, out=entries_to)

    cols: dict[str, pa.Array] = {"ok": pa.array(ok)}
    for side, name in ((0, "yes"), (1, "no")):
        on_side = is_yes if side == 0 else ~is_yes
        side_hit = applied & on_side
        # top N after every event that changes which levels of this side exist
        c_at = np.flatnonzero(is_snap | ((created | removed) & on_side))
        c_group = span[c_at] * 2 + side
        c_snap = is_snap[c_at]
        s_mine = s_yes_at == (side == 0)
        top = _top_levels(
            c_snap,
            np.append(from_top, 0)[level[c_at]],  # index -1 (snapshots): unused
            group_start[c_group] + group_count[c_group] - 1,
            (group_count[c_group] + 63) // 64,
            np.searchsorted(c_at, snap_at[s_row[s_mine]]),
            from_top[s_level[s_mine]],
            top_n,
        )
        # records: where the top-N set differs from the previous change's; a cell needs the
        # level's size looked up where its level differs from the previous record's (a level
        # that stays in its slot between records has every delta on it hit that slot)
        keep = c_snap.copy()
        for j in range(top_n):
            keep[1:] |= top[j, 1:] != top[j, :-1]
        rec_top = top[:, keep]  # slot x record
        rec_ev = c_at[keep]
        rec_snap = c_snap[keep]
        fresh = np.ones(rec_top.shape, dtype=np.bool_)
        fresh[:, 1:] = (rec_top[:, 1:] != rec_top[:, :-1]) | rec_snap[1:]
        look = fresh & (rec_top >= 0)
        rec_size = np.full(rec_top.shape, ABSENT, dtype=np.int64)
        # the level's latest entry at or before the record: entry index < bound
        bound = entries_to[rec_ev]
        at = np.broadcast_to(bound, rec_top.shape)[look]
        found = np.searchsorted(sorted_key, (level_key[rec_top[look]] << shift) | at)
        rec_size[look] = o_size[found - 1]
        # every event of this side (snapshots, applied deltas): the slot's size is the one at
        # the latest fresh record cell or hit on the slot's level, whichever is later
        on = is_snap | side_hit
        e_at = np.flatnonzero(on)
        e_rec = np.searchsorted(e_at, rec_ev)  # records are events of this side
        e_row = np.zeros(len(e_at), dtype=np.int64)
        e_row[e_rec[1:]] = 1
        np.cumsum(e_row, out=e_row)
        e_level = level[e_at]
        # the slot holding each event's level, if any: only those events and the records
        # change a slot's size, so the forward fills below run over just them
        e_slot = np.full(len(e_at), -1, dtype=np.int64)
        for j in range(top_n):
            e_slot[rec_top[j][e_row] == e_level] = j
        e_slot[e_rec] = top_n  # records: a slot is marked where its cell is fresh
        moves = e_slot >= 0
        k_at = e_at[moves]
        k_slot = e_slot[moves]
        del on, e_at, e_rec, e_row, e_level, e_slot, moves
        k = len(k_at)
        k_rec = np.searchsorted(k_at, rec_ev)
        k_idx = np.arange(k, dtype=np.int64)
        on = np.zeros(n, dtype=np.bool_)
        on[k_at] = True
        pos = np.cumsum(on) - 1  # latest of those events at or before each event
        row = np.zeros(n, dtype=np.int64)  # record row per event; row -1: "none yet"
        row[rec_ev[1:]] = 1
        np.cumsum(row, out=row)
        before = int(rec_ev[0]) if len(rec_ev) else n  # events before this side's first record
        row[:before] = -1
        prices = np.append(level_price_x[rec_top], np.full((top_n, 1), ABSENT), axis=1)
        val = np.append(new_size[k_at], np.int64(ABSENT))  # index -1: before any of them
        got = np.empty(k + 1, dtype=np.int64)
        got[k] = ABSENT
        sizes: list[I64] = []
        for j in range(top_n):
            mark = k_slot == j
            mark[k_rec] = fresh[j]
            last = np.where(mark, k_idx, np.int64(-1))
            np.maximum.accumulate(last, out=last)
            val[k_rec] = rec_size[j]  # every event here is at or after a (fresh) snapshot
            np.take(val, last, out=got[:k])
            sizes.append(got[pos])
        for j in range(top_n):
            gaps = bool((rec_top[j] < 0).any())
            cols[f"{name}_bid_price_{j + 1}"] = _null_where(prices[j][row], sizes[j], gaps, before)
            cols[f"{name}_bid_size_{j + 1}"] = _null_where(sizes[j], sizes[j], gaps, before)
        # depth: a running sum of this side's applied deltas, reset to the total at snapshots
        flow = np.where(side_hit, delta, 0)
        if n_span:
            grown = np.add.reduceat(flow, snap_at)  # per span, since its snapshot
            flow[snap_at] = tot[side][:n_span]
            flow[snap_at[1:]] -= tot[side][: n_span - 1] + grown[:-1]
        cols[f"{name}_depth"] = pa.array(np.cumsum(flow, out=flow))
    return pl.from_arrow(pa.table(cols)).select(_out_names(top_n))  # type: ignore[union-attr]


def _top_levels(
    c_snap: npt.NDArray[np.bool_],
    c_rank: I64,
    c_top: I64,
    c_words: I64,
    s_change: I64,
    s_rank: I64,
    top_n: int,
) -> I64:
    """Top-N level ids (slot x change, best first, -1: none) of one side after each change of
    its set of levels.

    Changes are a snapshot (whose levels are ``s_rank`` at change ``s_change``) or a level of
    rank ``c_rank`` (0 = highest price of its group) appearing or vanishing. Each group's alive
    set is a bitmask over ranks, 64 ranks per word (``c_words`` per change's group): appearing
    and vanishing both flip a bit, so the mask after a change is a running XOR from the span's
    snapshot. The top N are the lowest set bits; rank r maps back to level ``c_top - r``.
    """
    m = len(c_snap)
    top = np.full((top_n, m), -1, dtype=np.int64)
    if not m:
        return top
    count = np.zeros(m, dtype=np.int64)
    start = np.maximum.accumulate(np.where(c_snap, np.arange(m), 0))  # first change is a snapshot
    one = np.uint64(1)
    for w in range(int(c_words.max())):
        flip = np.zeros(m, dtype=np.uint64)
        sel = ~c_snap & (c_rank >> 6 == w)
        flip[sel] = one << (c_rank[sel] & 63).astype(np.uint64)
        ssel = s_rank >> 6 == w
        np.bitwise_or.at(flip, s_change[ssel], one << (s_rank[ssel] & 63).astype(np.uint64))
        run = np.bitwise_xor.accumulate(flip)
        mask = run ^ np.append(np.uint64(0), run)[start]
        if w == 0:  # every change takes its best levels from word 0 first: column k = k-th bit
            for k in range(top_n):
                low = mask & (~mask + one)  # lowest set bit
                if not low.any():
                    break
                top[k] = np.where(low != 0, c_top - _bit_index(low), np.int64(-1))
                count += low != 0
                mask ^= low
            continue
        rows = np.flatnonzero((c_words > w) & (count < top_n))
        mask = mask[rows]
        for _ in range(top_n):
            low = mask & (~mask + one)
            take = (low != 0) & (count[rows] < top_n)
            if not take.any():
                break
            r = rows[take]
            top[count[r], r] = c_top[r] - (_bit_index(low[take]) + 64 * w)
            count[r] += 1
            mask ^= low
    return top


def _bit_index(power_of_two: npt.NDArray[np.uint64]) -> I64:
    """log2 of powers of two (exact: a float64's exponent field; 0 gives a negative index)."""
    exponent = power_of_two.astype(np.float64).view(np.int64) >> 52
    return exponent - 1023
