"""Rows the recorder has logged but the writer has not taken yet, kept as columns (issue 16).

Why columns: turning Python row tuples into Arrow arrays cost the writer's hand-off thread ~1.2 µs
per row *while holding the GIL*, time the reader waited for. Here the common row, an
``orderbook_delta`` frame, is appended straight into typed buffers (``array('q')`` for the
integers, lists for the strings and the raw bytes), and ``take`` builds the Arrow arrays from those
buffers in bulk: ~0.3 µs per row, mostly numpy and Arrow copying memory.

Every other row (commands, decisions, other frames: a few per thousand) is appended whole
(``append_row``): placeholders go into the buffers so positions stay aligned, and the tuple is
patched into its row when the batch is built. So one ``LogColumns`` holds every record in order.

Thread safety without a lock: one thread appends (the event loop), one thread takes (the writer's
hand-off). Each buffer operation (append, slice, ``del buf[:k]``) is a single call under the GIL,
and each counter has a single writer: ``appended`` is bumped by the appender only *after* all of a
row's buffers have it, ``taken`` only by the taker, so the taker never sees half a row.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from recorder.protocol import DeltaFields
from schemas.log import LOG_SCHEMA, Kind

DELTA_MSG_TYPE = "orderbook_delta"

# Positions in LOG_COLUMNS (schemas.log) of the columns a delta row fills.
_INT_COLUMNS = ("record_seq", "recv_ns", "conn", "epoch", "sid", "seq", "price", "delta", "ts_ms")
_INT_POS = tuple(LOG_SCHEMA.names.index(c) for c in _INT_COLUMNS)
_TICKER, _RAW, _SIDE = (LOG_SCHEMA.names.index(c) for c in ("market_ticker", "raw", "side"))
_SESSION, _KIND, _MSG_TYPE, _MALFORMED = (
    LOG_SCHEMA.names.index(c) for c in ("session_id", "kind", "msg_type", "malformed")
)
_CONSTANT_NULL = tuple(
    i
    for i, name in enumerate(LOG_SCHEMA.names)
    if i not in (*_INT_POS, _TICKER, _RAW, _SIDE, _SESSION, _KIND, _MSG_TYPE, _MALFORMED)
)
"""Columns a delta row leaves null (cmd_id and the lifecycle columns)."""
_ROW_WIDTH = len(LOG_SCHEMA)

DeltaAppender = Callable[
    [int, int, int, int, bytes, tuple[int, int, str, str, int, int, int]], None
]


class LogColumns:
    """Pending log rows of one session, as columns; see the module docstring."""

    def __init__(self, session_id: int) -> None:
        self.session_id = session_id
        self._ints = tuple(array("q") for _ in _INT_COLUMNS)
        self._tickers: list[str | None] = []
        self._raws: list[bytes] = []
        self._sides: list[str | None] = []
        self._whole: deque[tuple[int, tuple[Any, ...]]] = deque()  # (position, row)
        self.appended = 0
        """Rows appended so far (written by the appending thread only)."""
        self.taken = 0
        """Rows taken so far (written by the taking thread only)."""
        self.refusal: Exception | None = None
        """Set, appending raises it (the writer has stopped or failed: accepting rows that can
        no longer be written would be silent loss)."""
        self.append_delta = self._delta_appender()
        """``(record_seq, recv_ns, conn, epoch, raw, fields)``: one ``orderbook_delta`` frame,
        ``fields`` being ``recorder.protocol.DeltaFields``
        ``(sid, seq, market_ticker, side, price, delta, ts_ms)``."""

    def _delta_appender(self) -> DeltaAppender:
        # A closure over bound ``append`` methods: the hot path, ~0.1 µs less per row than a
        # method looking each buffer up.
        a_rs, a_ns, a_conn, a_epoch, a_sid, a_seq, a_price, a_delta, a_ts = (
            buf.append for buf in self._ints
        )
        a_ticker = self._tickers.append
        a_side = self._sides.append
        a_raw = self._raws.append
        cols = self

        def append_delta(
            record_seq: int,
            recv_ns: int,
            conn: int,
            epoch: int,
            raw: bytes,
            d: DeltaFields,
        ) -> None:
            if cols.refusal is not None:
                raise cols.refusal
            a_rs(record_seq)
            a_ns(recv_ns)
            a_conn(conn)
            a_epoch(epoch)
            a_sid(d[0])
            a_seq(d[1])
            a_ticker(d[2])
            a_side(d[3])
            a_price(d[4])
            a_delta(d[5])
            a_ts(d[6])
            a_raw(raw)
            cols.appended += 1  # last: the row is complete

        return append_delta

    def __len__(self) -> int:
        return self.appended - self.taken

    def append_row(self, row: Sequence[Any]) -> None:
        """Any row, in ``LOG_COLUMNS`` order (the rare kinds; also what tests write)."""
        if self.refusal is not None:
            raise self.refusal
        if len(row) != _ROW_WIDTH:
            raise ValueError(f"a log row has {_ROW_WIDTH} columns, not {len(row)}")
        for buf in self._ints:
            buf.append(0)  # placeholder: the whole row is patched in by take()
        self._tickers.append(row[_TICKER])
        self._sides.append(row[_SIDE])
        self._raws.append(row[_RAW])
        self._whole.append((self.appended, tuple(row)))
        self.appended += 1

    append = append_row  # so a LogColumns is a ``recorder.session.RowSink`` too

    def take(self, max_rows: int) -> pa.RecordBatch | None:
        """Up to ``max_rows`` of the oldest pending rows as one ``LOG_SCHEMA`` batch (None if
        there are none). Called by one thread only."""
        start = self.taken
        n = min(self.appended - start, max_rows)
        if n <= 0:
            return None
        ints = []
        for buf in self._ints:
            ints.append(np.frombuffer(buf[:n], dtype=np.int64))  # a copy's view, writable
            del buf[:n]
        tickers = self._tickers[:n]
        del self._tickers[:n]
        sides = self._sides[:n]
        del self._sides[:n]
        raws = self._raws[:n]
        del self._raws[:n]
        whole: list[tuple[int, tuple[Any, ...]]] = []
        end = start + n
        while self._whole and self._whole[0][0] < end:
            pos, row = self._whole.popleft()
            whole.append((pos - start, row))
        self.taken = end
        return _build(n, self.session_id, ints, tickers, sides, raws, whole)


def _build(
    n: int,
    session_id: int,
    ints: list[np.ndarray],
    tickers: list[str | None],
    sides: list[str | None],
    raws: list[bytes],
    whole: list[tuple[int, tuple[Any, ...]]],
) -> pa.RecordBatch:
    """The batch: delta-row defaults everywhere, then each whole row patched in."""
    columns: list[pa.Array | None] = [None] * _ROW_WIDTH
    fields = LOG_SCHEMA
    for values, pos in zip(ints, _INT_POS, strict=True):
        mask, present = _split(n, whole, pos)
        for i, v in present:
            values[i] = v
        columns[pos] = pa.array(values, type=fields[pos].type, mask=mask)
    columns[_TICKER] = pa.array(tickers, type=pa.string())
    columns[_SIDE] = pa.array(sides, type=pa.string())
    columns[_RAW] = pa.array(raws, type=pa.binary())

    session = np.full(n, session_id, dtype=np.int64)
    malformed = np.zeros(n, dtype=bool)
    for i, row in whole:
        session[i] = row[_SESSION]
        malformed[i] = row[_MALFORMED]
    columns[_SESSION] = pa.array(session, type=pa.int64())
    columns[_MALFORMED] = pa.array(malformed, type=pa.bool_())
    columns[_KIND] = _strings(n, Kind.IN.value, whole, _KIND)
    columns[_MSG_TYPE] = _strings(n, DELTA_MSG_TYPE, whole, _MSG_TYPE)
    for pos in _CONSTANT_NULL:
        _, present = _split(n, whole, pos)
        if not present:
            columns[pos] = pa.nulls(n, type=fields[pos].type)
        else:
            col: list[Any] = [None] * n
            for i, v in present:
                col[i] = v
            columns[pos] = pa.array(col, type=fields[pos].type)
    return pa.RecordBatch.from_arrays(columns, schema=LOG_SCHEMA)


def _split(
    n: int, whole: list[tuple[int, tuple[Any, ...]]], pos: int
) -> tuple[np.ndarray | None, list[tuple[int, Any]]]:
    """Of the whole rows' values in column ``pos``: a null mask over the batch (None when none is
    null) and the ``(row, value)`` pairs that are not null."""
    mask = None
    present = []
    for i, row in whole:
        v = row[pos]
        if v is None:
            if mask is None:
                mask = np.zeros(n, dtype=bool)
            mask[i] = True
        else:
            present.append((i, v))
    return mask, present


def _strings(n: int, default: str, whole: list[tuple[int, tuple[Any, ...]]], pos: int) -> pa.Array:
    """A string column that is ``default`` except in the whole rows: a dictionary ``take``
    (vectorised) instead of ``n`` Python strings."""
    mask, present = _split(n, whole, pos)
    words = [default]
    index = {default: 0}
    codes = np.zeros(n, dtype=np.int32)
    for i, v in present:
        code = index.get(v)
        if code is None:
            code = index[v] = len(words)
            words.append(v)
        codes[i] = code
    return pa.array(words, type=pa.string()).take(pa.array(codes, mask=mask))
