"""Pending rows as columns (``recorder.log_columns``): the batches equal what the rows say.

The reference is ``recorder.segments.rows_to_batch`` over the same rows as tuples (one
``pa.array`` per column from Python values: independent of the numpy/dictionary route under
test). Pure: no files, no sockets.
"""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.log_columns import LogColumns
from recorder.segments import rows_to_batch
from schemas.log import LOG_SCHEMA

SESSION = 1_760_000_000_000_042
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(max_size=12)


def delta_row(
    seq: int, ns: int, conn: int, epoch: int, raw: bytes, d: tuple[Any, ...]
) -> tuple[Any, ...]:
    """The tuple ``SessionLog.delta_in`` builds for the same delta (LOG_COLUMNS order)."""
    return (
        (SESSION, seq, ns, "in", conn, epoch, "orderbook_delta", d[0], d[1], None, d[2], False)
        + (raw, d[3], d[4], d[5], d[6])
        + (None,) * 7
    )


deltas = st.tuples(
    INT64,  # recv_ns
    st.integers(0, 2**15 - 1),  # conn
    st.integers(0, 2**31 - 1),  # epoch
    st.binary(max_size=40),
    st.tuples(INT64, INT64, TEXT, st.sampled_from(["yes", "no"]), INT64, INT64, INT64),
)


def opt(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | s


whole_rows = st.tuples(
    st.integers(1, 2**62),  # session_id (may differ from the default)
    INT64,
    st.sampled_from(["in", "out", "decision"]),
    opt(st.integers(0, 2**15 - 1)),
    opt(st.integers(0, 2**31 - 1)),
    opt(TEXT),
    opt(INT64),
    opt(INT64),
    opt(INT64),
    opt(TEXT),
    st.booleans(),
    st.binary(max_size=40),
    opt(st.sampled_from(["yes", "no", "odd"])),
    *(opt(INT64) for _ in range(3)),  # price, delta, ts_ms
    opt(TEXT),  # event_type
    *(opt(INT64) for _ in range(4)),  # open/close/determination/settled ts
    opt(TEXT),  # result
    opt(INT64),  # settlement_value
)


def whole(seq: int, parts: tuple[Any, ...]) -> tuple[Any, ...]:
    """A full row from drawn parts, with ``record_seq`` inserted at its place."""
    return (parts[0], seq, *parts[1:])


@given(
    st.lists(st.tuples(st.booleans(), deltas, whole_rows), max_size=60),
    st.lists(st.integers(1, 25), min_size=1, max_size=10),
)
def test_batches_equal_the_rows(picks: list[Any], takes: list[int]) -> None:
    cols = LogColumns(SESSION)
    rows: list[tuple[Any, ...]] = []
    for seq, (is_delta, dl, wr) in enumerate(picks, start=1):
        if is_delta:
            cols.append_delta(seq, *dl)
            rows.append(delta_row(seq, *dl))
        else:
            row = whole(seq, wr)
            cols.append_row(row)
            rows.append(row)
    got: list[pa.RecordBatch] = []
    i = 0
    while len(cols):
        batch = cols.take(takes[i % len(takes)])
        i += 1
        assert batch is not None
        assert batch.schema == LOG_SCHEMA
        got.append(batch)
    assert cols.take(5) is None
    expected = rows_to_batch(rows)
    table = pa.Table.from_batches(got, schema=LOG_SCHEMA)
    assert table.equals(pa.Table.from_batches([expected]))


def test_a_row_of_the_wrong_width_is_refused() -> None:
    cols = LogColumns(SESSION)
    with pytest.raises(ValueError, match="24 columns"):
        cols.append_row((1, 2, 3))
    assert len(cols) == 0


def test_one_appender_one_taker_in_threads_lose_and_tear_nothing() -> None:
    """The lock-free claim: rows appended while another thread takes are all taken, whole and
    in order (every row's columns agree with each other)."""
    cols = LogColumns(SESSION)
    n = 60_000
    done = threading.Event()
    batches: list[pa.RecordBatch] = []

    def taker() -> None:
        while not done.is_set() or len(cols):
            b = cols.take(997)
            if b is not None:
                batches.append(b)

    t = threading.Thread(target=taker)
    t.start()
    for seq in range(1, n + 1):
        if seq % 101 == 0:
            cols.append_row(whole(seq, (SESSION, seq, "decision", None, None, "gap") + (None,) * 4
                                  + (False, b"{}") + (None,) * 11))  # fmt: skip
        else:
            cols.append_delta(
                seq, seq, 0, 1, str(seq).encode(), (2, seq, f"T{seq}", "yes", seq, -seq, seq)
            )
    done.set()
    t.join(30)
    assert not t.is_alive()
    table = pa.Table.from_batches(batches)
    assert table.num_rows == n
    d = table.to_pydict()
    assert d["record_seq"] == list(range(1, n + 1))
    for i, seq in enumerate(d["record_seq"]):
        if seq % 101 == 0:
            assert (d["msg_type"][i], d["raw"][i], d["sid"][i]) == ("gap", b"{}", None)
        else:
            assert (d["raw"][i], d["seq"][i], d["market_ticker"][i], d["delta"][i]) == (
                str(seq).encode(),
                seq,
                f"T{seq}",
                -seq,
            )
