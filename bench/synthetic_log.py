"""Synthetic session logs sealed as real segments, without the recorder: the one segment builder of
the tests (``tests/support/segments.py`` re-exports it) and of the benchmarks.

Why our own builder: materialize and training must be tested against the *contract*
(``schemas.log``, ``schemas.catalog``), not against whatever the recorder's writer does today.
:class:`SessionLog` appends records the way the recorder would (frames in with their typed
columns, commands out, decisions with their JSON payloads, one strictly increasing
``record_seq``) and keeps a ground truth of what the tables should hold; :func:`write_segments`
seals a log into hive-partitioned Parquet with the schema-version metadata, split wherever the
caller wants. It lives in ``bench/`` because ``bench/`` must not import ``tests/``.

Two ways to write book frames: :meth:`SessionLog.snapshot` / :meth:`SessionLog.delta` take the
exact wire text and an explicit ``seq`` (loader tests: what arrives is what is stored);
:meth:`SessionLog.book_snapshot` / :meth:`SessionLog.book_delta` take exact integers and number
the sid's seq themselves, ``skip`` leaving a gap (training tests: books and gaps).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.catalog import utc_date
from schemas.log import LOG_SCHEMA, SCHEMA_VERSION_KEY, SEGMENTS_DIR, Decision, Kind
from schemas.units import PRICE_SCALE, SIZE_SCALE, parse_price, parse_size
from schemas.wire import DELTA_MSG, LIFECYCLE_CHANNEL, SNAPSHOT_MSG

NS = 1_000_000_000
T0_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z

Pairs = list[list[str]]
"""Snapshot levels as the wire has them: ``[["0.4500", "100.00"], ...]``."""


def dollars(micros: int) -> str:
    """Micro-dollars -> an exact dollar string (6 decimals)."""
    return f"{Decimal(micros) / PRICE_SCALE:.6f}"


def contracts(centi: int) -> str:
    """Centi-contracts -> an exact count string (2 decimals)."""
    return f"{Decimal(centi) / SIZE_SCALE:.2f}"


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
    """One recorder run's log, record by record, with the expected table contents alongside.

    Receive times start at ``start_ns`` and advance ``step_ns`` per record; :meth:`at` moves the
    clock (records never share a receive time). Every method returns the record's ``record_seq``.
    """

    session_id: int = 1
    start_ns: int = T0_NS
    step_ns: int = 1_000_000  # 1 ms between records
    conn: int = 0
    epoch: int = 1
    records: list[dict[str, Any]] = field(default_factory=list)
    participation: list[ExpectedParticipation] = field(default_factory=list)
    expected: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("deltas", "snapshots", "lifecycle", "gaps", "malformed"), 0
        )
    )
    lifecycle_seqs: dict[str, list[int]] = field(default_factory=dict)
    seqs: dict[int, int] = field(default_factory=dict)
    """Last seq numbered per sid by ``book_*``."""
    ended: tuple[int, str] | None = None
    started: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.now_ns = self.start_ns
        """Receive time of the next record."""

    def at(self, t_s: float) -> SessionLog:
        """Receive the next record at ``t_s`` seconds since the epoch."""
        self.now_ns = round(t_s * NS)
        return self

    def add(self, kind: Kind, msg_type: str | None, raw: bytes, **cols: Any) -> int:
        rec: dict[str, Any] = dict.fromkeys(LOG_SCHEMA.names)
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
        self.now_ns += self.step_ns
        return int(rec["record_seq"])

    def _on_conn(self, **cols: Any) -> dict[str, Any]:
        return {"conn": self.conn, "epoch": self.epoch, **cols}

    # -- decisions ------------------------------------------------------------------------------
    def decision(self, name: Decision, payload: dict[str, Any], **cols: Any) -> int:
        return self.add(Kind.DECISION, name.value, orjson.dumps(payload), **cols)

    def session_start(
        self, *, lifecycle_mode: bool = True, shard: str = "0/1", **fields: Any
    ) -> int:
        """The payload of older recorders (``environment`` = the exchange, before it named the
        discovery mode and ``exchange_env`` the exchange), so loaders keep reading old logs;
        ``fields`` override or add keys, e.g. today's ``environment``, ``exchange_env`` and
        ``previous_session`` (``schemas.decisions.SessionStart``)."""
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
        self.started = {"recv_ns": self.now_ns, **payload}
        return self.decision(Decision.SESSION_START, payload)

    def session_end(self, reason: str = "signal") -> int:
        self.ended = (self.now_ns, reason)
        return self.decision(Decision.SESSION_END, {"reason": reason})

    def recovered(self, sessions: list[int], files: list[str]) -> int:
        return self.decision(Decision.RECOVERED, {"files": files, "rows": 10, "sessions": sessions})

    def connected(self) -> int:
        body = {"conn": self.conn, "epoch": self.epoch, "url": "wss://x"}
        return self.decision(Decision.CONNECTED, body, **self._on_conn())

    def disconnected(self) -> int:
        body = {"conn": self.conn, "epoch": self.epoch, "reason": "test"}
        return self.decision(Decision.DISCONNECTED, body, **self._on_conn())

    def reconnect(self) -> None:
        """A dropped connection: the next epoch, seqs numbered afresh."""
        self.disconnected()
        self.epoch += 1
        self.seqs = {}
        self.connected()

    def join(
        self,
        ticker: str,
        reason: str = "created",
        *,
        mid_lifecycle: bool = False,
        late_by_ms: int | None = None,
    ) -> int:
        payload: dict[str, Any] = {
            "market_ticker": ticker,
            "reason": reason,
            "mid_lifecycle": mid_lifecycle,
        }
        if late_by_ms is not None:
            payload["late_by_ms"] = late_by_ms
        self.participation.append(
            ExpectedParticipation(
                self.session_id, ticker, self.now_ns, reason, mid_lifecycle, late_by_ms
            )
        )
        return self.decision(Decision.MARKET_JOINED, payload, market_ticker=ticker)

    def leave(self, ticker: str, reason: str = "determined") -> int:
        for p in reversed(self.participation):
            if p.market_ticker == ticker and p.left_ns is None:
                p.left_ns, p.leave_reason = self.now_ns, reason
                break
        body = {"market_ticker": ticker, "reason": reason}
        return self.decision(Decision.MARKET_LEFT, body, market_ticker=ticker)

    def gap(self, sid: int, expected: int, got: int, tickers: list[str]) -> int:
        self.expected["gaps"] += 1
        payload = self._on_conn(sid=sid, expected=expected, got=got, market_tickers=tickers)
        return self.decision(Decision.GAP, payload, **self._on_conn(sid=sid))

    def stale(self, sid: int, last: int, got: int) -> int:
        self.expected["gaps"] += 1
        payload = self._on_conn(sid=sid, last=last, got=got)
        return self.decision(Decision.STALE_SEQ, payload, **self._on_conn(sid=sid))

    def loss(self, detail: str) -> int:
        self.expected["gaps"] += 1
        return self.decision(Decision.LOSS, {"detail": detail})

    def resync(self, sid: int, tickers: list[str]) -> int:
        payload = self._on_conn(sid=sid, market_tickers=tickers, method="get_snapshot")
        return self.decision(Decision.RESYNC, payload, **self._on_conn(sid=sid))

    # -- frames and commands --------------------------------------------------------------------
    def command(self, cmd_id: int, cmd: str, params: dict[str, Any]) -> int:
        raw = orjson.dumps({"id": cmd_id, "cmd": cmd, "params": params})
        return self.add(Kind.OUT, cmd, raw, **self._on_conn(cmd_id=cmd_id))

    def ok(self, cmd_id: int, sid: int, seq: int) -> int:
        raw = orjson.dumps({"id": cmd_id, "type": "ok", "sid": sid, "seq": seq, "msg": {}})
        return self.add(Kind.IN, "ok", raw, **self._on_conn(sid=sid, seq=seq, cmd_id=cmd_id))

    def lifecycle(
        self, ticker: str, event_type: str, *, msg_type: str = LIFECYCLE_CHANNEL, **fields: Any
    ) -> int:
        """A lifecycle notice; ``settlement_value`` as the wire's dollar string or as exact
        micro-dollars (an int)."""
        msg: dict[str, Any] = {"market_ticker": ticker, "event_type": event_type, **fields}
        typed = {
            k: fields.get(k) for k in ("open_ts", "close_ts", "determination_ts", "settled_ts")
        }
        typed["result"] = fields.get("result")
        sv = fields.get("settlement_value")
        if isinstance(sv, int):
            msg["settlement_value"] = dollars(sv)
        typed["settlement_value"] = parse_price(sv) if isinstance(sv, str) else sv
        raw = orjson.dumps({"type": msg_type, "sid": 1, "msg": msg})
        self.expected["lifecycle"] += 1
        seq = self.add(
            Kind.IN,
            msg_type,
            raw,
            **self._on_conn(sid=1, market_ticker=ticker, event_type=event_type, **typed),
        )
        self.lifecycle_seqs.setdefault(ticker, []).append(seq)
        return seq

    def snapshot(self, ticker: str, sid: int, seq: int, yes: Pairs | None, no: Pairs | None) -> int:
        """A snapshot as the wire has it; a side of None is an absent key (an empty side)."""
        msg: dict[str, Any] = {"market_ticker": ticker, "market_id": f"id-{ticker}"}
        if yes is not None:
            msg["yes_dollars_fp"] = yes
        if no is not None:
            msg["no_dollars_fp"] = no
        raw = orjson.dumps({"type": SNAPSHOT_MSG, "sid": sid, "seq": seq, "msg": msg})
        self.expected["snapshots"] += 1
        return self.add(
            Kind.IN, SNAPSHOT_MSG, raw, **self._on_conn(sid=sid, seq=seq, market_ticker=ticker)
        )

    def delta(self, ticker: str, sid: int, seq: int, side: str, price: str, delta: str) -> int:
        """A delta as the wire has it (dollar and count strings)."""
        ts_ms = self.now_ns // 1_000_000 - 3
        msg = {
            "market_ticker": ticker,
            "market_id": f"id-{ticker}",
            "price_dollars": price,
            "delta_fp": delta,
            "side": side,
            "ts_ms": ts_ms,
        }
        raw = orjson.dumps({"type": DELTA_MSG, "sid": sid, "seq": seq, "msg": msg})
        self.expected["deltas"] += 1
        typed = {"side": side, "price": parse_price(price), "delta": parse_size(delta)}
        return self.add(
            Kind.IN,
            DELTA_MSG,
            raw,
            **self._on_conn(sid=sid, seq=seq, market_ticker=ticker, ts_ms=ts_ms, **typed),
        )

    def next_seq(self, sid: int, skip: int = 0) -> int:
        """The sid's next seq (``skip`` values left out: a gap)."""
        seq = self.seqs.get(sid, 0) + 1 + skip
        self.seqs[sid] = seq
        return seq

    def book_snapshot(
        self, ticker: str, yes: dict[int, int], no: dict[int, int], sid: int = 2, skip: int = 0
    ) -> int:
        """A snapshot of exact levels ``{micro-dollars: centi-contracts}`` (empty side: absent)."""

        def pairs(levels: dict[int, int]) -> Pairs | None:
            return [[dollars(p), contracts(s)] for p, s in sorted(levels.items())] or None

        return self.snapshot(ticker, sid, self.next_seq(sid, skip), pairs(yes), pairs(no))

    def book_delta(
        self,
        ticker: str,
        side: str,
        price: int,
        delta: int,
        sid: int = 2,
        skip: int = 0,
        seq: int | None = None,
    ) -> int:
        """A delta of exact integers (micro-dollars, centi-contracts); ``seq`` numbered unless
        given (an old one: a stale frame)."""
        seq = self.next_seq(sid, skip) if seq is None else seq
        return self.delta(ticker, sid, seq, side, dollars(price), contracts(delta))

    def malformed_frame(self, raw: bytes = b"{not json", msg_type: str | None = None) -> int:
        self.expected["malformed"] += 1
        return self.add(Kind.IN, msg_type, raw, **self._on_conn(malformed=True))

    # -- output ---------------------------------------------------------------------------------
    def table(self, start: int = 0, stop: int | None = None) -> pa.Table:
        return pa.Table.from_pylist(self.records[start:stop], schema=LOG_SCHEMA)

    def write(
        self,
        data_dir: Path,
        parts: int = 1,
        *,
        lo: int = 0,
        hi: int | None = None,
        date: str | None = None,
    ) -> list[Path]:
        """Seal records ``lo..hi`` (list indices) as ``parts`` segments of about equal size;
        ``date``: the ``date=`` directory (default: the day of each segment's first record)."""
        hi = len(self.records) if hi is None else hi
        step = max(1, -(-(hi - lo) // parts))
        cuts = list(range(lo, hi, step))[1:]
        return write_segments(data_dir, self, cuts, lo=lo, hi=hi, date=date)


def segment_path(
    data_dir: Path, session_id: int, first_ns: int, first_seq: int, date: str | None = None
) -> Path:
    """Where a segment starting with that record is sealed (the catalog's layout)."""
    return (
        data_dir
        / SEGMENTS_DIR
        / f"date={date or utc_date(first_ns)}"
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
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.rename(path)
    return path


def write_segments(
    data_dir: Path,
    log: SessionLog,
    splits: list[int] | None = None,
    *,
    lo: int = 0,
    hi: int | None = None,
    date: str | None = None,
) -> list[Path]:
    """Seal ``log.records[lo:hi]`` as segments cut before each record index in ``splits``."""
    cuts = [lo, *(splits or []), len(log.records) if hi is None else hi]
    paths = []
    for a, b in itertools.pairwise(cuts):
        if b <= a:
            continue
        first = log.records[a]
        path = segment_path(data_dir, log.session_id, first["recv_ns"], first["record_seq"], date)
        paths.append(write_table(path, log.table(a, b)))
    return paths


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
        "msg_type": pa.array([DELTA_MSG] * n, pa.string()),
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
