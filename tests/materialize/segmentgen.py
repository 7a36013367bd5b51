"""Build realistic sealed segments for materialize tests and benchmarks, without the recorder.

Why our own builder: the loader must be tested against the *contract* (``schemas.log``), not
against whatever the recorder's writer happens to do today. ``SessionLog`` appends records the way
the recorder would (frames in with their typed columns, commands out, decisions with their JSON
payloads, one strictly increasing ``record_seq``) and keeps a ground truth of what the tables
should contain; :func:`write_segments` seals a log into hive-partitioned Parquet files with the
schema-version metadata, split wherever the test wants.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.log import LOG_SCHEMA, SCHEMA_VERSION_KEY, SEGMENTS_DIR, Decision, Kind
from schemas.units import parse_price, parse_size

T0_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass
class ExpectedParticipation:
    session_id: int
    market_ticker: str
    joined_ns: int
    join_reason: str
    mid_lifecycle: bool
    late_by_ms: int | None
    left_ns: int | None = None
    leave_reason: str | None = None


@dataclass
class SessionLog:
    """One recorder run's log, record by record, with the expected table contents alongside."""

    session_id: int
    start_ns: int = T0_NS
    step_ns: int = 1_000_000  # 1 ms between records
    records: list[dict[str, Any]] = field(default_factory=list)
    participation: list[ExpectedParticipation] = field(default_factory=list)
    expected: dict[str, int] = field(
        default_factory=lambda: {
            "deltas": 0,
            "snapshots": 0,
            "lifecycle": 0,
            "gaps": 0,
            "malformed": 0,
        }
    )
    lifecycle_seqs: dict[str, list[int]] = field(default_factory=dict)
    ended: tuple[int, str] | None = None
    started: dict[str, Any] | None = None

    @property
    def now_ns(self) -> int:
        return self.start_ns + len(self.records) * self.step_ns

    def add(self, kind: Kind, msg_type: str | None, raw: bytes, **cols: Any) -> dict[str, Any]:
        rec: dict[str, Any] = {name: None for name in LOG_SCHEMA.names}
        rec.update(
            session_id=self.session_id,
            record_seq=len(self.records) + 1,
            recv_ns=self.now_ns,
            kind=kind.value,
            msg_type=msg_type,
            malformed=False,
            raw=raw,
        )
        rec.update(cols)
        self.records.append(rec)
        return rec

    # -- decisions ------------------------------------------------------------------------------
    def decision(self, name: Decision, payload: dict[str, Any], **cols: Any) -> dict[str, Any]:
        return self.add(Kind.DECISION, name.value, _dumps(payload), **cols)

    def session_start(
        self, *, lifecycle_mode: bool = True, shard: str = "0/1", **fields: Any
    ) -> None:
        """The pre-issue-12 payload (``environment`` = the exchange); ``fields`` override or add
        keys, e.g. the new ``environment``, ``exchange_env`` and ``previous_session``."""
        payload = {
            "environment": "demo",
            "lifecycle_mode": lifecycle_mode,
            "version": "0.1.0",
            "host": "vm-1",
            "shard": shard,
            "ws_url": "wss://demo-api.kalshi.co/trade-api/ws/v2",
            "config": {"markets_per_sub": 500, "flush_ms": 100},
            **fields,
        }
        rec = self.decision(Decision.SESSION_START, payload)
        self.started = {"recv_ns": rec["recv_ns"], **payload}

    def session_end(self, reason: str = "signal") -> None:
        rec = self.decision(Decision.SESSION_END, {"reason": reason})
        self.ended = (rec["recv_ns"], reason)

    def recovered(self, sessions: list[int], files: list[str]) -> None:
        self.decision(Decision.RECOVERED, {"files": files, "rows": 10, "sessions": sessions})

    def connected(self, conn: int = 0, epoch: int = 1) -> None:
        self.decision(
            Decision.CONNECTED, {"conn": conn, "epoch": epoch, "url": "wss://x"}, conn=conn
        )

    def join(
        self,
        ticker: str,
        reason: str = "created",
        *,
        mid_lifecycle: bool = False,
        late_by_ms: int | None = None,
    ) -> None:
        payload: dict[str, Any] = {
            "market_ticker": ticker,
            "reason": reason,
            "mid_lifecycle": mid_lifecycle,
        }
        if late_by_ms is not None:
            payload["late_by_ms"] = late_by_ms
        rec = self.decision(Decision.MARKET_JOINED, payload, market_ticker=ticker)
        self.participation.append(
            ExpectedParticipation(
                self.session_id, ticker, rec["recv_ns"], reason, mid_lifecycle, late_by_ms
            )
        )

    def leave(self, ticker: str, reason: str = "determined") -> None:
        rec = self.decision(
            Decision.MARKET_LEFT, {"market_ticker": ticker, "reason": reason}, market_ticker=ticker
        )
        for p in reversed(self.participation):
            if p.market_ticker == ticker and p.left_ns is None:
                p.left_ns, p.leave_reason = rec["recv_ns"], reason
                break

    def gap(self, sid: int, expected: int, got: int, tickers: list[str]) -> None:
        payload = {
            "conn": 0,
            "epoch": 1,
            "sid": sid,
            "expected": expected,
            "got": got,
            "market_tickers": tickers,
        }
        self.decision(Decision.GAP, payload, conn=0, epoch=1, sid=sid)
        self.expected["gaps"] += 1

    def stale(self, sid: int, last: int, got: int) -> None:
        payload = {"conn": 0, "epoch": 1, "sid": sid, "last": last, "got": got}
        self.decision(Decision.STALE_SEQ, payload, conn=0, epoch=1, sid=sid)
        self.expected["gaps"] += 1

    def loss(self, detail: str) -> None:
        self.decision(Decision.LOSS, {"detail": detail})
        self.expected["gaps"] += 1

    # -- frames and commands --------------------------------------------------------------------
    def command(self, cmd_id: int, cmd: str, params: dict[str, Any]) -> None:
        raw = _dumps({"id": cmd_id, "cmd": cmd, "params": params})
        self.add(Kind.OUT, cmd, raw, conn=0, epoch=1, cmd_id=cmd_id)

    def ok(self, cmd_id: int, sid: int, seq: int) -> None:
        raw = _dumps({"id": cmd_id, "type": "ok", "sid": sid, "seq": seq, "msg": {}})
        self.add(Kind.IN, "ok", raw, conn=0, epoch=1, sid=sid, seq=seq, cmd_id=cmd_id)

    def lifecycle(
        self,
        ticker: str,
        event_type: str,
        *,
        msg_type: str = "market_lifecycle_v2",
        **fields: Any,
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {"market_ticker": ticker, "event_type": event_type, **fields}
        raw = _dumps({"type": msg_type, "sid": 1, "msg": msg})
        typed = {k: fields.get(k) for k in ("open_ts", "close_ts", "determination_ts")}
        typed["settled_ts"] = fields.get("settled_ts")
        typed["result"] = fields.get("result")
        sv = fields.get("settlement_value")
        typed["settlement_value"] = parse_price(sv) if sv is not None else None
        rec = self.add(
            Kind.IN,
            msg_type,
            raw,
            conn=0,
            epoch=1,
            sid=1,
            market_ticker=ticker,
            event_type=event_type,
            **typed,
        )
        self.expected["lifecycle"] += 1
        self.lifecycle_seqs.setdefault(ticker, []).append(rec["record_seq"])
        return rec

    def snapshot(
        self,
        ticker: str,
        sid: int,
        seq: int,
        yes: list[list[str]] | None,
        no: list[list[str]] | None,
    ) -> None:
        msg: dict[str, Any] = {"market_ticker": ticker, "market_id": f"id-{ticker}"}
        if yes is not None:  # an absent side key is an empty side
            msg["yes_dollars_fp"] = yes
        if no is not None:
            msg["no_dollars_fp"] = no
        raw = _dumps({"type": "orderbook_snapshot", "sid": sid, "seq": seq, "msg": msg})
        self.add(
            Kind.IN,
            "orderbook_snapshot",
            raw,
            conn=0,
            epoch=1,
            sid=sid,
            seq=seq,
            market_ticker=ticker,
        )
        self.expected["snapshots"] += 1

    def delta(self, ticker: str, sid: int, seq: int, side: str, price: str, delta: str) -> None:
        ts_ms = self.now_ns // 1_000_000 - 3
        msg = {
            "market_ticker": ticker,
            "market_id": f"id-{ticker}",
            "price_dollars": price,
            "delta_fp": delta,
            "side": side,
            "ts_ms": ts_ms,
        }
        raw = _dumps({"type": "orderbook_delta", "sid": sid, "seq": seq, "msg": msg})
        self.add(
            Kind.IN,
            "orderbook_delta",
            raw,
            conn=0,
            epoch=1,
            sid=sid,
            seq=seq,
            market_ticker=ticker,
            side=side,
            price=parse_price(price),
            delta=parse_size(delta),
            ts_ms=ts_ms,
        )
        self.expected["deltas"] += 1

    def malformed_frame(self, raw: bytes, msg_type: str | None = None) -> None:
        self.add(Kind.IN, msg_type, raw, conn=0, epoch=1, malformed=True)
        self.expected["malformed"] += 1

    def table(self, start: int = 0, stop: int | None = None) -> pa.Table:
        return pa.Table.from_pylist(self.records[start:stop], schema=LOG_SCHEMA)


def segment_path(data_dir: Path, session_id: int, first_ns: int, first_seq: int) -> Path:
    day = datetime.fromtimestamp(first_ns / 1e9, tz=UTC).strftime("%Y-%m-%d")
    return (
        data_dir
        / SEGMENTS_DIR
        / f"date={day}"
        / f"session_id={session_id}"
        / f"part-{first_seq:012d}.parquet"
    )


def write_table(path: Path, table: pa.Table, *, version: bytes | None = None) -> Path:
    """Seal one segment: zstd Parquet with the schema-version metadata, atomically renamed."""
    if version is not None:
        meta = dict(table.schema.metadata or {})
        meta[SCHEMA_VERSION_KEY] = version
        table = table.replace_schema_metadata(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.rename(path)
    return path


def write_segments(data_dir: Path, log: SessionLog, splits: list[int] | None = None) -> list[Path]:
    """Seal ``log`` as segments cut before each record index in ``splits``."""
    cuts = [0, *(splits or []), len(log.records)]
    paths = []
    for lo, hi in itertools.pairwise(cuts):
        if hi <= lo:
            continue
        first = log.records[lo]
        path = segment_path(data_dir, log.session_id, first["recv_ns"], first["record_seq"])
        paths.append(write_table(path, log.table(lo, hi)))
    return paths


# ------------------------------------------------------------------------------------------------
# A realistic scenario: two sessions, several segments, every record kind the loader maps.
# ------------------------------------------------------------------------------------------------

SESSION_A = 1_767_225_600_123_0001
SESSION_B = 1_767_312_000_456_0002


@dataclass
class Scenario:
    logs: list[SessionLog]
    paths: list[Path]

    def total(self, key: str) -> int:
        return sum(log.expected[key] for log in self.logs)

    @property
    def participation(self) -> list[ExpectedParticipation]:
        return [p for log in self.logs for p in log.participation]


def build_scenario(data_dir: Path) -> Scenario:
    """Session A: 3 segments, M2's leave and the session end only in the last one.

    Session B: a later run that recovered A's leftovers, adopted a market mid-lifecycle and is
    still running (no end, market still open).
    """
    a = SessionLog(SESSION_A)
    a.session_start()
    a.connected()
    a.command(1, "subscribe", {"channels": ["market_lifecycle_v2"]})
    a.lifecycle("KXA-M1", "created", open_ts=1_767_225_600, close_ts=1_767_230_000)
    a.join("KXA-M1")
    a.command(2, "subscribe", {"channels": ["orderbook_delta"], "market_tickers": ["KXA-M1"]})
    a.snapshot(
        "KXA-M1",
        2,
        1,
        yes=[["0.4500", "100.00"], ["0.0085", "2.50"], ["0.0800", "300.00"]],
        no=[["0.5000", "10.67"]],
    )
    for i in range(40):
        a.delta(
            "KXA-M1", 2, 2 + i, "yes" if i % 2 else "no", "0.0085", "2.50" if i % 3 else "-1.25"
        )
    a.lifecycle("KXA-M2", "created", open_ts=1_767_225_700, close_ts=1_767_240_000)
    a.join("KXA-M2", late_by_ms=1500, reason="late")
    a.command(3, "update_subscription", {"sids": [2], "market_tickers": ["KXA-M2"]})
    a.ok(3, 2, 42)
    a.snapshot("KXA-M2", 2, 43, yes=None, no=[["0.9915", "1.00"]])  # yes side key absent
    a.delta("KXA-M2", 2, 44, "yes", "0.0100", "5.00")
    cut1 = len(a.records)
    a.gap(2, 45, 47, ["KXA-M1", "KXA-M2"])
    a.delta("KXA-M1", 2, 47, "yes", "0.4500", "-100.00")
    a.stale(2, 47, 46)
    a.snapshot("KXA-M1", 2, 48, yes=[["0.0800", "300.00"]], no=[])
    a.malformed_frame(b'{"type":"orderbook_delta","sid":2,"seq":49,"msg":{"price_dollars":', None)
    a.lifecycle("KXA-M1", "close_date_updated", close_ts=1_767_229_000)
    a.lifecycle("KXA-M1", "brand_new_event_type", detail="exchange added this")
    a.lifecycle(
        "KXA-M1",
        "determined",
        result="yes",
        determination_ts=1_767_229_500,
        settlement_value="1.0000",
    )
    a.leave("KXA-M1")
    cut2 = len(a.records)
    a.lifecycle("KXA-M1", "settled", settled_ts=1_767_233_100)
    a.lifecycle(
        "KXA-M2",
        "determined",
        result="no",
        determination_ts=1_767_239_000,
        settlement_value="0.0085",
    )
    a.leave("KXA-M2")
    a.loss("exchange error 25")
    a.session_end("signal")

    b = SessionLog(SESSION_B, start_ns=T0_NS + 86_400_000_000_000)
    b.recovered([SESSION_A], ["live/session_id=1/part-x.arrows"])
    b.session_start(lifecycle_mode=True, shard="1/2")
    b.lifecycle(
        "KXB-M3",
        "created",
        open_ts=1_767_312_000,
        close_ts=1_767_400_000,
        msg_type="market_lifecycle_v2",
    )
    b.join("KXB-M3", "adopted", mid_lifecycle=True)
    b.snapshot("KXB-M3", 5, 1, yes=[["0.2000", "1.00"]], no=[["0.7000", "0.01"]])
    b.delta("KXB-M3", 5, 2, "no", "0.7000", "0.99")
    b.lifecycle("KXMVE-M4", "created", msg_type="multivariate_market_lifecycle", open_ts=1)

    paths = write_segments(data_dir, a, [cut1, cut2]) + write_segments(data_dir, b)
    return Scenario([a, b], paths)


# ------------------------------------------------------------------------------------------------
# Bulk deltas (benchmarks, crash tests): vectorised so millions of rows build in seconds.
# ------------------------------------------------------------------------------------------------


def bulk_delta_table(session_id: int, first_seq: int, n: int, markets: int = 100) -> pa.Table:
    """``n`` orderbook_delta records with realistic raw bytes and typed columns."""
    rng = random.Random(first_seq)
    seqs = list(range(first_seq, first_seq + n))
    recv = [T0_NS + s * 50_000 for s in seqs]
    tickers = [f"KXBENCH-26JAN01-M{rng.randrange(markets):04d}" for _ in seqs]
    ticks = [rng.randrange(1, 10_000) for _ in seqs]
    sizes = [rng.randrange(1, 50_000) * rng.choice((1, -1)) for _ in seqs]
    sides = [rng.choice(("yes", "no")) for _ in seqs]
    ts_ms = [r // 1_000_000 for r in recv]
    raws = [
        b'{"type":"orderbook_delta","sid":2,"seq":%d,"msg":{"market_ticker":"%s","price_dollars":'
        b'"0.%04d","delta_fp":"%s%d.%02d","side":"%s","ts_ms":%d}}'
        % (s, t.encode(), p, b"-" if d < 0 else b"", abs(d) // 100, abs(d) % 100, sd.encode(), ms)
        for s, t, p, d, sd, ms in zip(seqs, tickers, ticks, sizes, sides, ts_ms, strict=True)
    ]
    null64 = pa.nulls(n, pa.int64())
    null_str = pa.nulls(n, pa.string())
    cols = {
        "session_id": pa.array([session_id] * n, pa.int64()),
        "record_seq": pa.array(seqs, pa.int64()),
        "recv_ns": pa.array(recv, pa.int64()),
        "kind": pa.array(["in"] * n, pa.string()),
        "conn": pa.array([0] * n, pa.int16()),
        "epoch": pa.array([1] * n, pa.int32()),
        "msg_type": pa.array(["orderbook_delta"] * n, pa.string()),
        "sid": pa.array([2] * n, pa.int64()),
        "seq": pa.array(seqs, pa.int64()),
        "cmd_id": null64,
        "market_ticker": pa.array(tickers, pa.string()),
        "malformed": pa.array([False] * n, pa.bool_()),
        "raw": pa.array(raws, pa.binary()),
        "side": pa.array(sides, pa.string()),
        "price": pa.array([t * 100 for t in ticks], pa.int64()),
        "delta": pa.array(sizes, pa.int64()),
        "ts_ms": pa.array(ts_ms, pa.int64()),
        "event_type": null_str,
        "open_ts": null64,
        "close_ts": null64,
        "determination_ts": null64,
        "settled_ts": null64,
        "result": null_str,
        "settlement_value": null64,
    }
    return pa.Table.from_pydict(cols, schema=LOG_SCHEMA)


def write_bulk_deltas(
    data_dir: Path, n_rows: int, rows_per_segment: int, session_id: int = 7_000_000_001
) -> list[Path]:
    """Seal ``n_rows`` deltas of one session as segments of ``rows_per_segment`` records."""
    paths = []
    for first in range(1, n_rows + 1, rows_per_segment):
        n = min(rows_per_segment, n_rows - first + 1)
        table = bulk_delta_table(session_id, first, n)
        path = segment_path(data_dir, session_id, T0_NS, first)
        paths.append(write_table(path, table))
    return paths
