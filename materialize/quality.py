"""Data-quality report per session and per market, rebuilt from the sealed log alone.

Why: before training on a market, an analyst wants to know how much of its life was really
captured and how clean the feed was. Everything here comes from the log's own records (every
command and decision is a record: ARCHITECTURE.md, Invariants): decisions for participation,
gaps, resyncs and reconnects; frames for message counts.

Per session: records, time span, frames in / commands out / decisions, malformed frames, holes in
``record_seq`` (proof of loss), connects, reconnects (connects beyond the first per connection
index), disconnects, gaps, resyncs, stale seqs, losses, anomalies, markets joined, and the
markets skipped at start because they were already open (``market_skipped`` decisions of reason
``already_open``): a market absent from a session is then either "skipped at start" (listed) or
"never seen".

Per market (per session): join reason, ``joined``..``left`` (left open: the session's last record),
life ``open``..``end`` (as the training builder defines it: created ``open_ts``, determination), the
**coverage of life** = overlap of [joined, left] with [open, end] divided by (end - open) (null
while the market is not determined), book frames (snapshots, deltas), lifecycle events, and the
gaps and resyncs whose decisions name the market.

**Incremental.** Everything is per session, so a session whose segment files (path, size, mtime)
are the same as in the previous report is copied from it, not read again: the nightly report
costs what changed, not all history. ``files_by_session`` in the JSON is that index.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from rich.console import Console
from rich.table import Table

from materialize.segments_index import list_segments
from materialize.training import NS
from schemas.catalog import readable_segments, session_of_path
from schemas.decisions import (
    Gap,
    MarketJoined,
    MarketSkipped,
    Resync,
    SkipReason,
    decision_or_none,
    ticker_of,
)
from schemas.log import Decision, Kind
from schemas.wire import DELTA_MSG, LIFECYCLE_MSG_TYPES, SNAPSHOT_MSG

REPORT_VERSION = 2
"""Bumped when a field is added, so a cached report of another shape is recomputed in full."""


@dataclass(slots=True)
class SessionQuality:
    session_id: int
    records: int = 0
    first_ns: int = 0
    last_ns: int = 0
    duration_s: float = 0.0
    frames_in: int = 0
    commands_out: int = 0
    decisions: int = 0
    malformed: int = 0
    record_seq_holes: int = 0
    connects: int = 0
    reconnects: int = 0
    disconnects: int = 0
    gaps: int = 0
    resyncs: int = 0
    stale_seqs: int = 0
    losses: int = 0
    anomalies: int = 0
    markets_joined: int = 0
    ended: bool = False
    markets_skipped: int = 0
    skipped_at_start: list[str] = field(default_factory=list)


@dataclass(slots=True)
class MarketQuality:
    session_id: int
    market_ticker: str
    join_reason: str = ""
    mid_lifecycle: bool = False
    joined_ns: int = 0
    left_ns: int | None = None
    open_ns: int | None = None
    end_ns: int | None = None
    coverage: float | None = None
    snapshots: int = 0
    deltas: int = 0
    lifecycle_events: int = 0
    gaps: int = 0
    resyncs: int = 0


@dataclass(slots=True)
class QualityReport:
    sessions: list[SessionQuality] = field(default_factory=list)
    markets: list[MarketQuality] = field(default_factory=list)
    skipped_segments: list[str] = field(default_factory=list)
    files_by_session: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    reused: set[int] = field(default_factory=set)
    """Sessions copied from the previous report (their files did not change)."""

    @property
    def reused_sessions(self) -> int:
        return len(self.reused)

    def changed(self) -> QualityReport:
        """Only the sessions (and their markets) computed in this run: the terminal summary."""
        return QualityReport(
            sessions=[s for s in self.sessions if s.session_id not in self.reused],
            markets=[m for m in self.markets if m.session_id not in self.reused],
            skipped_segments=self.skipped_segments,
        )

    def to_dict(self, *, shallow: bool = False) -> dict[str, Any]:
        """The JSON document; ``shallow`` keeps the dataclasses (for orjson, which encodes
        them itself, much faster than ``asdict``)."""
        conv: Any = (lambda x: x) if shallow else asdict
        return {
            "report_version": REPORT_VERSION,
            "sessions": [conv(s) for s in self.sessions],
            "markets": [conv(m) for m in self.markets],
            "skipped_segments": self.skipped_segments,
            "files_by_session": self.files_by_session,
        }


def coverage(joined: int, left: int, open_ns: int, end_ns: int) -> float:
    """Fraction of the life [open, end] inside the participation [joined, left]."""
    if end_ns <= open_ns:
        return 0.0
    overlap = min(left, end_ns) - max(joined, open_ns)
    return max(0, overlap) / (end_ns - open_ns)


def _files_by_session(data_dir: Path) -> dict[str, dict[str, list[int]]]:
    """``{session: {relpath: [size, mtime_ns]}}`` of the sealed files (a listing and stats)."""
    out: dict[str, dict[str, list[int]]] = {}
    for f in list_segments(data_dir):
        sid = session_of_path(f.path)
        out.setdefault(str(sid) if sid is not None else "?", {})[f.relpath] = [f.size, f.mtime_ns]
    return out


def _previous(out_path: Path) -> dict[str, Any] | None:
    try:
        data = orjson.loads(out_path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("report_version") != REPORT_VERSION:
        return None
    return data


def build_quality_report(data_dir: Path, out_path: Path) -> QualityReport:
    """Compute the report from ``data_dir``'s sealed segments and write it as JSON (sessions
    whose files did not change are taken from the previous report at ``out_path``)."""
    data_dir, out_path = Path(data_dir), Path(out_path)
    files_now = _files_by_session(data_dir)
    prev = _previous(out_path)
    reuse: set[int] = set()
    if prev is not None:
        before = prev.get("files_by_session", {})
        reuse = {int(k) for k, v in files_now.items() if k != "?" and before.get(k) == v}
    paths, skipped = readable_segments(data_dir, frozenset(reuse))
    files = [str(p) for p in paths]
    report = QualityReport(skipped_segments=skipped, files_by_session=files_now)
    if files:
        _fill(report, pl.scan_parquet(files, hive_partitioning=False))
    if prev is not None and reuse:
        report.reused = reuse
        report.sessions += [
            SessionQuality(**d) for d in prev["sessions"] if d["session_id"] in reuse
        ]
        report.markets += [MarketQuality(**d) for d in prev["markets"] if d["session_id"] in reuse]
        report.skipped_segments += [
            line
            for line in prev.get("skipped_segments", [])
            if session_of_path(Path(line.split(": ", 1)[0])) in reuse
        ]
        report.sessions.sort(key=lambda x: x.session_id)
        report.markets.sort(key=lambda m: (m.session_id, m.market_ticker))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    # orjson serialises the dataclasses natively (asdict() was most of a nightly run's cost).
    doc = report.to_dict(shallow=True)
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    tmp.replace(out_path)
    return report


def _fill(report: QualityReport, scan: pl.LazyFrame) -> None:
    kind = pl.col("kind")
    mt = pl.col("msg_type")
    per_session = (
        scan.group_by("session_id")
        .agg(
            pl.len().alias("records"),
            pl.col("recv_ns").min().alias("first_ns"),
            pl.col("recv_ns").max().alias("last_ns"),
            (pl.col("record_seq").max() - pl.col("record_seq").min() + 1 - pl.len()).alias("holes"),
            (kind == Kind.IN).sum().alias("frames_in"),
            (kind == Kind.OUT).sum().alias("commands_out"),
            (kind == Kind.DECISION).sum().alias("decisions"),
            pl.col("malformed").sum().alias("malformed"),
        )
        .collect()
        .sort("session_id")
    )
    book = (
        scan.filter((kind == Kind.IN) & mt.is_in([SNAPSHOT_MSG, DELTA_MSG, *LIFECYCLE_MSG_TYPES]))
        .group_by("session_id", "market_ticker")
        .agg(
            (mt == SNAPSHOT_MSG).sum().alias("snapshots"),
            (mt == DELTA_MSG).sum().alias("deltas"),
            mt.is_in(LIFECYCLE_MSG_TYPES).sum().alias("lifecycle"),
        )
        .collect()
    )
    counts = {(r["session_id"], r["market_ticker"]): r for r in book.iter_rows(named=True)}
    dec = (
        scan.filter((kind == Kind.DECISION) | mt.is_in(LIFECYCLE_MSG_TYPES))
        .select(
            "session_id",
            "record_seq",
            "recv_ns",
            "kind",
            "conn",
            "msg_type",
            "market_ticker",
            "raw",
            "event_type",
            "open_ts",
            "determination_ts",
        )
        .collect()
        .sort("session_id", "record_seq")
    )
    sessions: dict[int, SessionQuality] = {}
    for r in per_session.iter_rows(named=True):
        sessions[r["session_id"]] = SessionQuality(
            session_id=r["session_id"],
            records=r["records"],
            first_ns=r["first_ns"],
            last_ns=r["last_ns"],
            duration_s=(r["last_ns"] - r["first_ns"]) / NS,
            frames_in=r["frames_in"],
            commands_out=r["commands_out"],
            decisions=r["decisions"],
            malformed=r["malformed"],
            record_seq_holes=r["holes"],
        )
    markets: dict[tuple[int, str], MarketQuality] = {}
    conns_seen: dict[int, set[int | None]] = {}
    lifecycle: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in dec.iter_rows(named=True):
        s = sessions[r["session_id"]]
        name = r["msg_type"]
        if r["kind"] != Kind.DECISION:
            if r["market_ticker"] is not None:
                lifecycle.setdefault((r["session_id"], r["market_ticker"]), []).append(r)
            continue
        d = decision_or_none(name, r["raw"])
        if name == Decision.CONNECTED:
            s.connects += 1
            seen = conns_seen.setdefault(s.session_id, set())
            # conn is a column; logs written before that had it in the payload only
            conn = r["conn"] if r["conn"] is not None or d is None else d.extra.get("conn")
            if conn in seen:
                s.reconnects += 1
            seen.add(conn)
        elif name == Decision.DISCONNECTED:
            s.disconnects += 1
        elif name in (Decision.GAP, Decision.RESYNC):
            if name == Decision.GAP:
                s.gaps += 1
            else:
                s.resyncs += 1
            tickers = d.market_tickers if isinstance(d, Gap | Resync) else []
            for t in tickers if isinstance(tickers, list) else []:
                m = markets.get((s.session_id, t))
                if m is not None:
                    if name == Decision.GAP:
                        m.gaps += 1
                    else:
                        m.resyncs += 1
        elif name == Decision.STALE_SEQ:
            s.stale_seqs += 1
        elif name == Decision.LOSS:
            s.losses += 1
        elif name == Decision.ANOMALY:
            s.anomalies += 1
        elif name == Decision.SESSION_END:
            s.ended = True
        elif name == Decision.MARKET_SKIPPED:
            s.markets_skipped += 1
            ticker = ticker_of(d, r["market_ticker"])
            already_open = isinstance(d, MarketSkipped) and d.reason == SkipReason.ALREADY_OPEN
            if already_open and ticker is not None:
                s.skipped_at_start.append(ticker)
        elif name == Decision.MARKET_JOINED:
            ticker = ticker_of(d, r["market_ticker"])
            if ticker is not None and (s.session_id, ticker) not in markets:
                s.markets_joined += 1
                markets[(s.session_id, ticker)] = MarketQuality(
                    session_id=s.session_id,
                    market_ticker=ticker,
                    join_reason=str(d.reason) if isinstance(d, MarketJoined) else "",
                    mid_lifecycle=isinstance(d, MarketJoined) and bool(d.mid_lifecycle),
                    joined_ns=r["recv_ns"],
                )
        elif name == Decision.MARKET_LEFT:
            ticker = ticker_of(d, r["market_ticker"])
            m = markets.get((s.session_id, ticker)) if ticker is not None else None
            if m is not None and m.left_ns is None:
                m.left_ns = r["recv_ns"]
    for key, m in markets.items():
        events = lifecycle.get(key, [])
        c = counts.get(key)
        if c is not None:
            m.snapshots, m.deltas, m.lifecycle_events = c["snapshots"], c["deltas"], c["lifecycle"]
        created = next((e for e in events if e["event_type"] == "created"), None)
        if created is not None:
            m.open_ns = (
                created["open_ts"] * NS if created["open_ts"] is not None else created["recv_ns"]
            )
        det = next((e for e in events if e["event_type"] == "determined"), None)
        if det is not None:
            m.end_ns = (
                det["determination_ts"] * NS
                if det["determination_ts"] is not None
                else det["recv_ns"]
            )
        if m.open_ns is not None and m.end_ns is not None:
            left = m.left_ns if m.left_ns is not None else sessions[m.session_id].last_ns
            m.coverage = coverage(m.joined_ns, left, m.open_ns, m.end_ns)
    report.sessions = list(sessions.values())
    report.markets = sorted(markets.values(), key=lambda m: (m.session_id, m.market_ticker))


def _attention(m: MarketQuality) -> tuple[float, int, str]:
    """Sort key, most in need of a look first: unknown or low coverage, then gaps and resyncs."""
    return (-1.0 if m.coverage is None else m.coverage, -(m.gaps + m.resyncs), m.market_ticker)


def render(report: QualityReport, width: int = 160, max_markets: int | None = None) -> str:
    """The report as two plain-text tables (sessions, markets) for a terminal or a log.

    With ``max_markets``, a longer market list shows only that many, the worst first (least
    coverage, then most gaps and resyncs), and says how many more the JSON report holds: a
    terminal is read for what needs attention, not for thousands of healthy markets."""
    console = Console(file=StringIO(), width=width, force_terminal=False, color_system=None)
    st = Table(title="Sessions")
    cols = [
        ("session", "session_id"), ("records", "records"), ("hours", "duration_s"),
        ("in", "frames_in"), ("out", "commands_out"), ("decisions", "decisions"),
        ("malformed", "malformed"), ("holes", "record_seq_holes"), ("reconnects", "reconnects"),
        ("gaps", "gaps"), ("resyncs", "resyncs"), ("stale", "stale_seqs"), ("losses", "losses"),
        ("markets", "markets_joined"), ("skipped at start", "skipped_at_start"), ("ended", "ended"),
    ]  # fmt: skip
    for title, _ in cols:
        st.add_column(title, justify="right")
    for s in report.sessions:
        values = [getattr(s, a) for _, a in cols]
        values[2] = f"{s.duration_s / 3600:.2f}"
        values[-2] = len(s.skipped_at_start)
        st.add_row(*(str(v) for v in values))
    console.print(st)
    mt = Table(title="Markets")
    for title in ("session", "market", "join", "coverage", "snapshots", "deltas", "gaps",
                  "resyncs", "left"):  # fmt: skip
        mt.add_column(title, justify="right")
    markets = report.markets
    hidden = 0 if max_markets is None else max(0, len(markets) - max_markets)
    if hidden:
        markets = sorted(markets, key=_attention)[:max_markets]
    for m in markets:
        mt.add_row(
            str(m.session_id),
            m.market_ticker,
            m.join_reason + (" (mid)" if m.mid_lifecycle else ""),
            "-" if m.coverage is None else f"{100 * m.coverage:.1f}%",
            str(m.snapshots),
            str(m.deltas),
            str(m.gaps),
            str(m.resyncs),
            "open" if m.left_ns is None else "yes",
        )
    console.print(mt)
    if hidden:
        console.print(f"... and {hidden} more market(s) in the JSON report (the worst are shown)")
    if report.skipped_segments:
        console.print("Skipped segments:")
        for line in report.skipped_segments:
            console.print(f"  {line}")
    out = console.file
    assert isinstance(out, StringIO)
    return out.getvalue()
