"""Session-log rows built the way ``SessionLog`` writes them, for the tap's state tests."""

from __future__ import annotations

from typing import Any

import orjson

from schemas.log import LOG_COLUMNS
from schemas.wire import format_price, format_size, snapshot_msg

_IDX = {n: i for i, n in enumerate(LOG_COLUMNS)}


class Log:
    """Builds session-log rows the way ``SessionLog`` does."""

    def __init__(self) -> None:
        self.rs = 0
        self.rows: list[tuple[Any, ...]] = []

    def add(self, kind: str, msg_type: str, raw: Any, **cols: Any) -> tuple[Any, ...]:
        self.rs += 1
        row: list[Any] = [None] * len(LOG_COLUMNS)
        row[_IDX["session_id"]] = 7
        row[_IDX["record_seq"]] = self.rs
        row[_IDX["recv_ns"]] = self.rs * 1000
        row[_IDX["kind"]] = kind
        row[_IDX["msg_type"]] = msg_type
        row[_IDX["malformed"]] = False
        row[_IDX["raw"]] = raw if isinstance(raw, bytes) else orjson.dumps(raw)
        for k, v in cols.items():
            row[_IDX[k]] = v
        self.rows.append(tuple(row))
        return self.rows[-1]

    def joined(self, t: str) -> None:
        self.add("decision", "market_joined", {"market_ticker": t, "reason": "created"})

    def snapshot(self, t: str, sid: int, seq: int, yes: dict[int, int], no: dict[int, int]) -> None:
        msg = snapshot_msg(t, "mid", yes, no)
        body = {"type": "orderbook_snapshot", "sid": sid, "seq": seq, "msg": msg}
        self.add(
            "in", "orderbook_snapshot", body, conn=0, epoch=1, sid=sid, seq=seq, market_ticker=t
        )

    def delta(self, t: str, sid: int, seq: int, side: str, price: int, delta: int) -> None:
        msg = {
            "market_ticker": t,
            "price_dollars": format_price(price),
            "delta_fp": format_size(delta),
            "side": side,
            "ts_ms": seq,
        }
        body = {"type": "orderbook_delta", "sid": sid, "seq": seq, "msg": msg}
        self.add(
            "in", "orderbook_delta", body, conn=0, epoch=1, sid=sid, seq=seq, market_ticker=t,
            side=side, price=price, delta=delta, ts_ms=seq,
        )  # fmt: skip
