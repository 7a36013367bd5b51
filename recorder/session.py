"""One recorder run = one session: its id, and the single place records get their total order.

Every record (frame in, command out, decision) goes through ``SessionLog`` so ``record_seq`` is
strictly increasing across connections, reconnects and segment files (one run, one session; raw
first; every command and decision a record: ARCHITECTURE.md, Invariants). It runs on
the event loop and only appends to the writer's in-memory columns: it never waits for the disk.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from recorder.log_columns import DeltaAppender
from recorder.protocol import DeltaFields, Frame
from schemas.log import Decision, Kind


def new_session_id() -> int:
    """Unique without a database: milliseconds since the epoch in the high bits, 20 random bits.

    Positive int64 until the year 2248; two processes started in the same millisecond collide with
    probability 2**-20.
    """
    return (time.time_ns() // 1_000_000) << 20 | secrets.randbits(20)


class RowSink(Protocol):
    def append(self, row: tuple[Any, ...]) -> None: ...


_NO_TYPED = (None,) * 11


RowObserver = Callable[[tuple[Any, ...]], None]
"""Sees every row right after the writer got it (the live tap, ``feed.tap``). It runs on the
event loop inside the recorder's hot path: it must be quick, must never block and must never
raise (``feed.tap`` guards itself)."""


class SessionLog:
    """Builds rows in ``schemas.log.LOG_COLUMNS`` order and hands them to the writer.

    ``observer`` (None by default) is a tee: it gets the very same row tuples the writer gets, so
    a live consumer and a replay of the written log see identical rows.
    """

    def __init__(self, session_id: int, sink: RowSink) -> None:
        self.session_id = session_id
        self.sink = sink
        self.record_seq = 0
        self.frames_in = 0
        self.malformed = 0
        self.commands_out = 0
        self.decisions: dict[str, int] = {}
        self.observer: RowObserver | None = None
        self._delta_sink: DeltaAppender | None = getattr(sink, "append_delta", None)

    def frame_in(self, conn: int, epoch: int, raw: bytes, f: Frame, recv_ns: int) -> None:
        self.record_seq += 1
        self.frames_in += 1
        if f.malformed:
            self.malformed += 1
        lc = f.lifecycle
        row = (
            self.session_id,
            self.record_seq,
            recv_ns,
            "in",
            conn,
            epoch,
            f.msg_type,
            f.sid,
            f.seq,
            f.cmd_id,
            f.market_ticker,
            f.malformed,
            raw,
            f.side,
            f.price,
            f.delta,
            f.ts_ms,
            f.event_type,
            lc.open_ts,
            lc.close_ts,
            lc.determination_ts,
            lc.settled_ts,
            lc.result,
            lc.settlement_value,
        )
        self.sink.append(row)
        if self.observer is not None:
            self.observer(row)

    def delta_in(self, conn: int, epoch: int, raw: bytes, d: DeltaFields, recv_ns: int) -> None:
        """``frame_in`` for a delta ``protocol.decode_delta`` read: the same row, built without a
        ``Frame`` (the hot path: most frames are deltas). A sink that takes deltas as columns
        gets the fields, and no row is built at all unless an observer wants one."""
        self.record_seq = record_seq = self.record_seq + 1
        self.frames_in += 1
        fast = self._delta_sink
        if fast is not None:
            fast(record_seq, recv_ns, conn, epoch, raw, d)
            if self.observer is None:
                return
        # indexing and literal Nones (no unpacking, no splat): ~20% less than frame_in's build
        row = (
            self.session_id, record_seq, recv_ns, "in", conn, epoch, "orderbook_delta",
            d[0], d[1], None, d[2], False, raw, d[3], d[4], d[5], d[6],
            None, None, None, None, None, None, None,
        )  # fmt: skip
        if fast is None:
            self.sink.append(row)
        if self.observer is not None:
            self.observer(row)

    def command_out(
        self, conn: int, epoch: int, cmd: str, cmd_id: int, raw: bytes, sid: int | None
    ) -> None:
        self.record_seq += 1
        self.commands_out += 1
        row = (
            self.session_id,
            self.record_seq,
            time.time_ns(),
            Kind.OUT.value,
            conn,
            epoch,
            cmd,
            sid,
            None,
            cmd_id,
            None,
            False,
            raw,
            *_NO_TYPED,
        )
        self.sink.append(row)
        if self.observer is not None:
            self.observer(row)

    def decide(
        self,
        decision: Decision,
        payload: dict[str, Any],
        *,
        conn: int | None = None,
        epoch: int | None = None,
        sid: int | None = None,
        market_ticker: str | None = None,
    ) -> None:
        self.record_seq += 1
        name = decision.value
        self.decisions[name] = self.decisions.get(name, 0) + 1
        row = (
            self.session_id,
            self.record_seq,
            time.time_ns(),
            Kind.DECISION.value,
            conn,
            epoch,
            name,
            sid,
            None,
            None,
            market_ticker,
            False,
            orjson.dumps(payload),
            *_NO_TYPED,
        )
        self.sink.append(row)
        if self.observer is not None:
            self.observer(row)
