"""A tiny hand-built session log for the training and quality tests (independent of any other
fixture generator): records with the real ``LOG_SCHEMA`` (metadata included), written as sealed
segments in the hive layout ``segments/date=.../session_id=N/part-K.parquet``."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.log import LOG_SCHEMA, Decision, Kind
from schemas.units import PRICE_SCALE, SIZE_SCALE

NS = 1_000_000_000


def dollars(micros: int) -> str:
    return f"{Decimal(micros) / PRICE_SCALE:.6f}"


def contracts(centi: int) -> str:
    return f"{Decimal(centi) / SIZE_SCALE:.2f}"


class SessionLog:
    """Append records in order; ``t`` is the receive clock in seconds (settable per record)."""

    def __init__(self, session_id: int = 1, t0_s: int = 1_800_000_000) -> None:
        self.session_id = session_id
        self.rows: list[dict[str, Any]] = []
        self.t_ns = t0_s * NS
        self.conn = 0
        self.epoch = 1
        self.seqs: dict[int, int] = {}

    # ------------------------------------------------------------------ generic
    def add(self, kind: str, msg_type: str | None, raw: bytes, **cols: Any) -> int:
        row: dict[str, Any] = {name: None for name in LOG_SCHEMA.names}
        row.update(
            session_id=self.session_id,
            record_seq=len(self.rows) + 1,
            recv_ns=self.t_ns,
            kind=kind,
            msg_type=msg_type,
            malformed=False,
            raw=raw,
        )
        row.update(cols)
        self.rows.append(row)
        self.t_ns += 1000  # records never share a receive time
        return int(row["record_seq"])

    def at(self, t_s: float) -> SessionLog:
        self.t_ns = round(t_s * NS)
        return self

    def decide(self, name: str, body: dict[str, Any], **cols: Any) -> int:
        return self.add(Kind.DECISION, name, orjson.dumps(body), **cols)

    # ------------------------------------------------------------------ decisions
    def session_start(self) -> int:
        return self.decide(Decision.SESSION_START, {"lifecycle_mode": True})

    def session_end(self) -> int:
        return self.decide(Decision.SESSION_END, {"reason": "signal"})

    def connected(self) -> int:
        return self.decide(
            Decision.CONNECTED,
            {"conn": self.conn, "epoch": self.epoch},
            conn=self.conn,
            epoch=self.epoch,
        )

    def disconnected(self) -> int:
        return self.decide(
            Decision.DISCONNECTED,
            {"conn": self.conn, "epoch": self.epoch, "reason": "test"},
            conn=self.conn,
            epoch=self.epoch,
        )

    def reconnect(self) -> None:
        self.disconnected()
        self.epoch += 1
        self.seqs = {}
        self.connected()

    def joined(self, ticker: str, reason: str = "created", mid: bool = False) -> int:
        return self.decide(
            Decision.MARKET_JOINED,
            {"market_ticker": ticker, "reason": reason, "mid_lifecycle": mid},
            market_ticker=ticker,
        )

    def left(self, ticker: str, reason: str = "determined") -> int:
        return self.decide(
            Decision.MARKET_LEFT,
            {"market_ticker": ticker, "reason": reason},
            market_ticker=ticker,
        )

    def gap(self, sid: int, expected: int, got: int, tickers: list[str]) -> int:
        return self.decide(
            Decision.GAP,
            {
                "conn": self.conn,
                "epoch": self.epoch,
                "sid": sid,
                "expected": expected,
                "got": got,
                "market_tickers": tickers,
            },
            conn=self.conn,
            epoch=self.epoch,
            sid=sid,
        )

    def resync(self, sid: int, tickers: list[str]) -> int:
        return self.decide(
            Decision.RESYNC,
            {
                "conn": self.conn,
                "epoch": self.epoch,
                "sid": sid,
                "market_tickers": tickers,
                "method": "get_snapshot",
            },
            conn=self.conn,
            epoch=self.epoch,
            sid=sid,
        )

    # ------------------------------------------------------------------ frames
    def lifecycle(self, ticker: str, event_type: str, **fields: Any) -> int:
        msg: dict[str, Any] = {"market_ticker": ticker, "event_type": event_type, **fields}
        cols = {k: v for k, v in fields.items() if k in LOG_SCHEMA.names}
        if "settlement_value" in fields:
            msg["settlement_value"] = dollars(fields["settlement_value"])
        raw = orjson.dumps({"type": "market_lifecycle_v2", "sid": 1, "msg": msg})
        return self.add(
            Kind.IN,
            "market_lifecycle_v2",
            raw,
            conn=self.conn,
            epoch=self.epoch,
            sid=1,
            market_ticker=ticker,
            event_type=event_type,
            **cols,
        )

    def _next_seq(self, sid: int, skip: int = 0) -> int:
        seq = self.seqs.get(sid, 0) + 1 + skip
        self.seqs[sid] = seq
        return seq

    def snapshot(
        self, ticker: str, yes: dict[int, int], no: dict[int, int], sid: int = 2, skip: int = 0
    ) -> int:
        seq = self._next_seq(sid, skip)
        msg: dict[str, Any] = {"market_ticker": ticker, "market_id": "m-" + ticker}
        if yes:
            msg["yes_dollars_fp"] = [[dollars(p), contracts(s)] for p, s in sorted(yes.items())]
        if no:
            msg["no_dollars_fp"] = [[dollars(p), contracts(s)] for p, s in sorted(no.items())]
        raw = orjson.dumps({"type": "orderbook_snapshot", "sid": sid, "seq": seq, "msg": msg})
        return self.add(
            Kind.IN,
            "orderbook_snapshot",
            raw,
            conn=self.conn,
            epoch=self.epoch,
            sid=sid,
            seq=seq,
            market_ticker=ticker,
        )

    def delta(
        self,
        ticker: str,
        side: str,
        price: int,
        delta: int,
        sid: int = 2,
        skip: int = 0,
        seq: int | None = None,
    ) -> int:
        if seq is None:
            seq = self._next_seq(sid, skip)
        ts_ms = self.t_ns // 1_000_000
        msg = {
            "market_ticker": ticker,
            "price_dollars": dollars(price),
            "delta_fp": contracts(delta),
            "side": side,
            "ts_ms": ts_ms,
        }
        raw = orjson.dumps({"type": "orderbook_delta", "sid": sid, "seq": seq, "msg": msg})
        return self.add(
            Kind.IN,
            "orderbook_delta",
            raw,
            conn=self.conn,
            epoch=self.epoch,
            sid=sid,
            seq=seq,
            market_ticker=ticker,
            side=side,
            price=price,
            delta=delta,
            ts_ms=ts_ms,
        )

    def malformed(self) -> int:
        return self.add(
            Kind.IN, None, b"{not json", conn=self.conn, epoch=self.epoch, malformed=True
        )

    # ------------------------------------------------------------------ output
    def write(
        self,
        data_dir: Path,
        parts: int = 1,
        date: str = "2027-01-15",
        *,
        lo: int = 0,
        hi: int | None = None,
        first_part: int = 0,
    ) -> list[Path]:
        """Seal records ``lo..hi`` (list indices) as ``parts`` segment files, in record order."""
        out = data_dir / "segments" / f"date={date}" / f"session_id={self.session_id}"
        out.mkdir(parents=True, exist_ok=True)
        rows = self.rows[lo:hi]
        paths: list[Path] = []
        step = max(1, -(-len(rows) // parts))
        for k, start in enumerate(range(0, len(rows), step)):
            table = pa.Table.from_pylist(rows[start : start + step], schema=LOG_SCHEMA)
            path = out / f"part-{first_part + k:05d}.parquet"
            pq.write_table(table, path, compression="zstd")
            paths.append(path)
        return paths
