"""Load sealed segments into the tables, exactly once per segment (materialize is exactly-once and
read-only towards the log: ARCHITECTURE.md, Invariants).

How exactly-once holds:

* a segment is named by the SHA-256 of its bytes (``segments_index``); the manifest
  ``rl_loaded_segments`` lists the hashes already loaded, and a run loads only the others;
* each segment is loaded in **one transaction** that first inserts its manifest row, then its
  rows: a crash, a killed process or a rejected row leaves nothing of it behind, and two loaders
  racing on the same segment serialise on the manifest's primary key;
* segments go in ``(session_id, first record_seq)`` order, so a later segment of a session can
  close what an earlier one opened: ``MARKET_LEFT`` sets ``left_at`` on the open participation row,
  ``SESSION_END`` sets ``ended_at``. A market still open stays ``left_at IS NULL`` until the
  segment holding its ``MARKET_LEFT`` is sealed and loaded by a later run, or its session is
  known dead: :func:`finalize` then closes it at the session's last record with
  ``leave_reason = 'crash'`` (a real leave sealed later still replaces that);
* only new files are opened: ``rl_loaded_segments`` also keeps each file's size and mtime, so a
  nightly run hashes only new or changed files (``segments_index.plan``); a file whose bytes
  changed under a path already loaded is reported and skipped, never loaded a second time.

After the segments, :func:`finalize` derives what no single segment can decide (restart flags,
crash ends of logs older than the crash end marker, crash-closed participation, each session's
completed markets and the settled rows' settlement values), idempotently.

Only ``segments/`` is read, never ``live/``. The mapping from log records to rows is
``schemas.mapping``'s SQL (the analyst views run the same text), run over each segment by an
in-memory DuckDB in :func:`transform`, a function of the segment alone, so it is tested without a
database.

Bad input never stops the run: an unreadable or corrupt file, an unknown schema version, or a
segment the database rejects (duplicate key, bad value) is reported with its path and reason and
skipped (or moved to ``DATA/quarantine/`` keeping its relative path), and the rest still loads.
Malformed frames inside a good segment are counted, not loaded into typed tables (their bytes stay
in the segment).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from materialize.segments_index import (
    KnownFile,
    SegmentRef,
    describe,
    list_segments,
    plan,
    sha256_file,
)
from materialize.targets import (
    AlreadyLoaded,
    ManifestRow,
    SegmentRejected,
    Target,
    TargetUnavailable,
    redact,
)
from schemas.catalog import version_problem
from schemas.decisions import EndReason
from schemas.log import LOG_SCHEMA, SCHEMA_VERSION_KEY, Decision, Kind
from schemas.mapping import (
    CARRY_SQL,
    DECISION_FAULTS_SQL,
    DECISION_SQL,
    GAP_DECISIONS,
    LAST_RECORD_SQL,
    RECORD_SQL,
    SESSION_DECISIONS,
    SESSION_LAST_RECORD,
    SESSION_LOG,
)
from schemas.tables import (
    COMPLETED_MARKETS,
    DELTAS,
    DISCOVERY_LIFECYCLE,
    DISCOVERY_REST,
    GAPS,
    LIFECYCLE_EVENTS,
    LOADED_SEGMENTS,
    PARTICIPATION,
    SESSIONS,
    SNAPSHOTS,
    arrow_schema,
)
from schemas.wire import DELTA_MSG, LIFECYCLE_MSG_TYPES, SNAPSHOT_MSG

COMPLETION_EVENTS = ("created", "determined", "settled")
CRASH: str = EndReason.CRASH.value
"""``session_end`` reason written for a killed session (the recorder's, declared in
``schemas.decisions``), and the leave reason materialize gives its open markets."""
QUARANTINE_DIR = "quarantine"


class BadSegment(Exception):
    """A segment that cannot be loaded as a whole; the message is the reason shown to the user."""


# ------------------------------------------------------------------------------------------------
# Pure mapping: log records -> table rows
# ------------------------------------------------------------------------------------------------


@dataclass
class Update:
    """A statement that changes a row loaded from an earlier segment."""

    what: str  # counter name when it matches nothing, e.g. "market_left_without_join"
    sql: str
    params: tuple[Any, ...]


@dataclass
class SegmentRows:
    """Everything one segment contributes: new rows per table, updates, and what was not loaded."""

    tables: dict[str, pa.Table]
    updates: list[Update]
    malformed: Counter[str]

    def row_counts(self) -> dict[str, int]:
        return {name: t.num_rows for name, t in self.tables.items()}


def _count(mask: pa.ChunkedArray | pa.Array) -> int:
    return pc.sum(mask.cast(pa.int64())).as_py() or 0


_MAPPERS = threading.local()


def _mapper() -> duckdb.DuckDBPyConnection:
    """This thread's in-memory DuckDB for the mapping (opening one costs more than mapping a
    small segment; a connection is not shared between threads)."""
    con: duckdb.DuckDBPyConnection | None = getattr(_MAPPERS, "con", None)
    if con is None:
        con = duckdb.connect(config={"threads": 1})
        con.execute("SET TimeZone = 'UTC'")
        _MAPPERS.con = con
    return con


def _record_rows(table: pa.Table, malformed: Counter[str]) -> dict[str, pa.Table]:
    """The per-record tables of one segment: ``schemas.mapping.RECORD_SQL`` run by an in-memory
    DuckDB over the segment's records (the views run the same text over every segment). A table
    none of whose records are in the segment is not queried (most segments hold no lifecycle or
    gap record, and planning the SQL costs more than the empty answer).

    What the mapping leaves out is counted here: unflagged frames without exact typed values,
    unparseable snapshots, lifecycle frames without ticker or type, gap decisions whose payload
    is not a JSON object. (Flagged frames are counted once, as ``flagged_frames``.)"""
    msg_type = table["msg_type"]
    clean = pc.and_(pc.equal(table["kind"], Kind.IN.value), pc.invert(table["malformed"]))
    is_lc = pc.is_in(msg_type, pa.array(LIFECYCLE_MSG_TYPES))
    is_gap = pc.and_(
        pc.equal(table["kind"], Kind.DECISION.value),
        pc.is_in(msg_type, pa.array([d.value for d in GAP_DECISIONS])),
    )
    masks = {
        DELTAS: pc.and_(clean, pc.equal(msg_type, DELTA_MSG)),
        SNAPSHOTS: pc.and_(clean, pc.equal(msg_type, SNAPSHOT_MSG)),
        LIFECYCLE_EVENTS: pc.and_(pc.equal(table["kind"], Kind.IN.value), is_lc),
        GAPS: is_gap,
    }
    candidates = {name: _count(mask) for name, mask in masks.items()}
    out = {name: arrow_schema(name).empty_table() for name in RECORD_SQL}
    con = _mapper()
    try:
        for name, sql in RECORD_SQL.items():
            if candidates[name]:
                # The few records the other statements can use (their WHERE still applies);
                # the deltas, nearly every record, are scanned in place (no copy of ``raw``).
                rows = table if name == DELTAS else table.filter(masks[name])
                con.register(SESSION_LOG, rows)
                out[name] = con.sql(sql).to_arrow_table().cast(arrow_schema(name))
    finally:
        with contextlib.suppress(duckdb.Error):
            con.unregister(SESSION_LOG)
    for msg, name in ((DELTA_MSG, DELTAS), (SNAPSHOT_MSG, SNAPSHOTS)):
        if n := candidates[name] - out[name].num_rows:
            malformed[msg] += n
    ok = pc.and_(pc.is_valid(table["event_type"]), pc.is_valid(table["market_ticker"]))
    if n := _count(pc.and_(pc.and_(clean, is_lc), pc.invert(ok))):
        malformed["lifecycle"] += n
    if candidates[GAPS]:
        kept = Counter(out[GAPS]["kind"].to_pylist())
        for item in table.filter(is_gap)["msg_type"].value_counts().to_pylist():
            if n := item["counts"] - kept[item["values"]]:
                malformed[f"decision:{item['values']}"] += n
    return out


_SET_ENDED = f"UPDATE {SESSIONS} SET ended_at = %s, end_reason = %s WHERE session_id = %s"
_ADD_RECOVERED = (
    f"UPDATE {SESSIONS} SET recovered_from = array_cat(recovered_from, %s) WHERE session_id = %s"
)
# The open row of that market in that session; if a bug left several open, close the latest one
# that started before the leave. A row closed as ``crash`` by inference (see ``finalize``) counts
# as open: a real leave sealed later is the truth and replaces the inference.
_OPEN = f"(left_at IS NULL OR leave_reason = '{CRASH}')"
_CLOSE_PARTICIPATION = (
    f"UPDATE {PARTICIPATION} SET left_at = %s, leave_reason = %s "
    f"WHERE session_id = %s AND market_ticker = %s AND {_OPEN} AND joined_at = ("
    f"SELECT max(joined_at) FROM {PARTICIPATION} "
    f"WHERE session_id = %s AND market_ticker = %s AND {_OPEN} AND joined_at <= %s)"
)
_LAST_RECORD = (
    f"UPDATE {SESSIONS} SET last_record_at = %s "
    "WHERE session_id = %s AND (last_record_at IS NULL OR last_record_at < %s)"
)


_READS = {
    SESSIONS: {Decision.SESSION_START.value},
    PARTICIPATION: {Decision.MARKET_JOINED.value, Decision.MARKET_LEFT.value},
}
"""The decisions whose rows ``DECISION_SQL`` opens per table (without them, no rows)."""


def _decision_rows(
    table: pa.Table, malformed: Counter[str]
) -> tuple[pa.Table, pa.Table, list[Update]]:
    """Sessions and participation of one segment: ``schemas.mapping.DECISION_SQL`` run over the
    segment (the views run the same text over the whole log), and as updates what the segment
    says of rows an earlier segment opened (``CARRY_SQL``): a session's end, recoveries and last
    record, a market's leave. Decisions the mapping cannot use are counted as malformed."""
    is_dec = pc.and_(
        pc.equal(table["kind"], Kind.DECISION.value),
        pc.is_in(table["msg_type"], pa.array([d.value for d in SESSION_DECISIONS])),
    )
    decisions = table.filter(is_dec)  # a few records: the statements below scan only these
    con = _mapper()
    try:
        con.register(SESSION_LOG, table)
        con.register(SESSION_LAST_RECORD, con.sql(LAST_RECORD_SQL).to_arrow_table())
        con.register(SESSION_LOG, decisions)
        # Planning a statement costs more than mapping a small segment: a statement none of
        # whose decisions are in the segment is not run (its answer is empty).
        present = set(decisions["msg_type"].unique().to_pylist())
        sessions, parts = (
            con.sql(DECISION_SQL[name]).to_arrow_table().cast(arrow_schema(name))
            if present & _READS[name]
            else arrow_schema(name).empty_table()
            for name in (SESSIONS, PARTICIPATION)
        )
        carried = con.sql(CARRY_SQL[SESSIONS]).to_arrow_table().to_pylist()
        leaves = []
        if present & _READS[PARTICIPATION]:
            leaves = con.sql(CARRY_SQL[PARTICIPATION]).to_arrow_table().to_pylist()
        if present:
            for name, n in con.sql(DECISION_FAULTS_SQL).fetchall():
                malformed[f"decision:{name}"] += n
    finally:
        for relation in (SESSION_LOG, SESSION_LAST_RECORD):
            with contextlib.suppress(duckdb.Error):
                con.unregister(relation)
    # Recovered-appends go first, so that neither they nor the ends depend on the other's order.
    updates = [
        Update("recovered_without_start", _ADD_RECOVERED, (s["recovered_from"], s["session_id"]))
        for s in carried
        if s["recovered_from"]
    ]
    for lv in leaves:
        at, sid, ticker = lv["left_at"], lv["session_id"], lv["market_ticker"]
        closing = (at, lv["leave_reason"], sid, ticker, sid, ticker, at)
        updates.append(Update("market_left_without_join", _CLOSE_PARTICIPATION, closing))
    for s in carried:
        if s["ended"]:
            ending = (s["ended_at"], s["end_reason"], s["session_id"])
            updates.append(Update("session_end_without_start", _SET_ENDED, ending))
    for s in carried:
        if (at := s["last_record_at"]) is not None:
            last = (at, s["session_id"], at)
            updates.append(Update("last_record_without_start", _LAST_RECORD, last))
    return sessions, parts, updates


def transform(table: pa.Table) -> SegmentRows:
    """Map one segment's log records (``LOG_SCHEMA``) to table rows and updates."""
    malformed: Counter[str] = Counter()
    flagged = pc.and_(pc.equal(table["kind"], Kind.IN.value), table["malformed"])
    malformed["flagged_frames"] += _count(flagged)
    sessions, parts, updates = _decision_rows(table, malformed)
    records = _record_rows(table, malformed)
    tables = {
        SESSIONS: sessions,
        LIFECYCLE_EVENTS: records[LIFECYCLE_EVENTS],
        PARTICIPATION: parts,
        SNAPSHOTS: records[SNAPSHOTS],
        DELTAS: records[DELTAS],
        GAPS: records[GAPS],
    }
    return SegmentRows(tables=tables, updates=updates, malformed=+malformed)


# ------------------------------------------------------------------------------------------------
# Reading a segment
# ------------------------------------------------------------------------------------------------


def read_segment(ref: SegmentRef) -> tuple[pa.Table, str]:
    """The segment's records as ``LOG_SCHEMA`` and its schema version, or :class:`BadSegment`."""
    if ref.footer_error is not None:
        raise BadSegment(f"unreadable Parquet: {ref.footer_error}")
    try:
        data = ref.path.read_bytes()
    except OSError as exc:
        raise BadSegment(f"cannot read file: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise BadSegment("file changed while materialize was running (sealed files are immutable)")
    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise BadSegment(f"unreadable Parquet: {type(exc).__name__}: {exc}") from exc
    raw_version = (table.schema.metadata or {}).get(SCHEMA_VERSION_KEY)
    problem = version_problem(raw_version)
    if problem is not None:
        raise BadSegment(problem)
    version = (raw_version or b"").decode(errors="replace")
    for fld in LOG_SCHEMA:
        if fld.name not in table.column_names:
            raise BadSegment(f"schema mismatch: column {fld.name!r} is missing")
        have = table.schema.field(fld.name).type
        if have != fld.type:
            raise BadSegment(f"schema mismatch: column {fld.name!r} is {have}, expected {fld.type}")
    table = table.select(list(LOG_SCHEMA.names)).combine_chunks()
    for fld in LOG_SCHEMA:
        if not fld.nullable and table[fld.name].null_count:
            raise BadSegment(f"column {fld.name!r} has nulls but the schema forbids them")
    return table, version


# ------------------------------------------------------------------------------------------------
# Progress
# ------------------------------------------------------------------------------------------------


class Progress(Protocol):
    """Where the loader reports as it goes (a rich bar on a terminal, log lines otherwise)."""

    def start(self, segments: int, records: int) -> None: ...
    def loaded(self, relpath: str, records: int, rows: int, seconds: float) -> None: ...
    def skipped(self, relpath: str, reason: str) -> None: ...
    def finish(self) -> None: ...


class LogProgress:
    """One plain line per segment on stderr: cron mail and journald stay readable."""

    def __init__(self, stream: Any = None):
        self.stream = stream if stream is not None else sys.stderr

    def _say(self, text: str) -> None:
        print(f"materialize: {text}", file=self.stream, flush=True)

    def start(self, segments: int, records: int) -> None:
        self._say(f"{segments} new segment(s), {records} log records to load")

    def loaded(self, relpath: str, records: int, rows: int, seconds: float) -> None:
        rate = rows / seconds if seconds > 0 else float("inf")
        self._say(f"loaded {relpath}: {rows} rows in {seconds:.2f}s ({rate:,.0f} rows/s)")

    def skipped(self, relpath: str, reason: str) -> None:
        self._say(f"SKIPPED {relpath}: {reason}")

    def finish(self) -> None:
        pass


class RichProgress:
    """A progress bar over log records with the table-rows/s rate, for interactive runs."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichBar

        self.console = Console(stderr=True)
        self.bar = RichBar(
            TextColumn("[bold]materialize"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("records"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.task: Any = None
        self.rows = 0
        self.t0 = time.perf_counter()

    def start(self, segments: int, records: int) -> None:
        self.t0 = time.perf_counter()
        self.bar.start()
        self.task = self.bar.add_task("load", total=max(records, 1), rate="")

    def loaded(self, relpath: str, records: int, rows: int, seconds: float) -> None:
        self.rows += rows
        elapsed = time.perf_counter() - self.t0
        rate = f"{self.rows / elapsed:,.0f} rows/s" if elapsed > 0 else ""
        self.bar.update(self.task, advance=records, rate=rate)

    def skipped(self, relpath: str, reason: str) -> None:
        self.bar.console.print(f"[red]SKIPPED[/red] {relpath}: {reason}")

    def finish(self) -> None:
        self.bar.stop()


def default_progress() -> Progress:
    """Rich bar when stderr is a terminal, plain lines otherwise (cron, systemd, CI)."""
    return RichProgress() if sys.stderr.isatty() else LogProgress()


class NoProgress:
    """Silent reporter (library use, tests)."""

    def start(self, segments: int, records: int) -> None:
        pass

    def loaded(self, relpath: str, records: int, rows: int, seconds: float) -> None:
        pass

    def skipped(self, relpath: str, reason: str) -> None:
        pass

    def finish(self) -> None:
        pass


# ------------------------------------------------------------------------------------------------
# The load
# ------------------------------------------------------------------------------------------------


@dataclass
class SkippedSegment:
    """A segment that was not loaded, why, and where it went if quarantined."""

    relpath: str
    reason: str
    moved_to: str | None = None


@dataclass
class LoadSummary:
    """What a run did; printed by the CLI and asserted by the tests."""

    target: str
    segments_found: int = 0
    already_loaded: int = 0
    loaded: list[str] = field(default_factory=list)
    skipped: list[SkippedSegment] = field(default_factory=list)
    records: int = 0
    rows: Counter[str] = field(default_factory=Counter)
    updates: Counter[str] = field(default_factory=Counter)
    unmatched: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)
    derived: Counter[str] = field(default_factory=Counter)
    """Rows changed by :func:`finalize` (crash-closed participation, restart flags, ...)."""
    touched_markets: set[str] = field(default_factory=set)
    """Markets with created/determined/settled events in the segments loaded now."""
    hashed: int = 0
    """Files opened and hashed this run (new or changed size/mtime); the rest were skipped by the
    cheap (path, size, mtime) index."""
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def rows_per_s(self) -> float:
        return self.total_rows / self.seconds if self.seconds > 0 else 0.0


def quarantine(data_dir: Path, ref: SegmentRef) -> Path:
    """Move a bad segment to ``DATA/quarantine/<its relative path>`` so later runs stop retrying."""
    dest = data_dir / QUARANTINE_DIR / ref.relpath
    dest.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while dest.exists():  # never overwrite an earlier quarantined file of the same name
        dest = dest.with_name(f"{ref.path.stem}.{n}{ref.path.suffix}")
        n += 1
    shutil.move(str(ref.path), str(dest))
    return dest


def _load_one(
    target: Target,
    ref: SegmentRef,
    table: pa.Table,
    version: str,
    rows: SegmentRows,
    summary: LoadSummary,
) -> None:
    unmatched: Counter[str] = Counter()
    applied: Counter[str] = Counter()
    with target.transaction():
        seg = ManifestRow(
            ref.sha256, ref.relpath, ref.session_id, table.num_rows, version, ref.size, ref.mtime_ns
        )
        target.claim_segment(seg)
        for upd in rows.updates:
            if target.execute(upd.sql, upd.params) == 0:
                unmatched[upd.what] += 1
            else:
                applied[upd.what.split("_without_")[0]] += 1
        for name, data in rows.tables.items():
            target.insert_arrow(name, data)
    summary.unmatched.update(unmatched)
    summary.updates.update(applied)


def load(
    data_dir: Path,
    target: Target,
    *,
    move_bad: bool = False,
    progress: Progress | None = None,
) -> LoadSummary:
    """Load every sealed segment of ``data_dir`` not yet in the manifest; see the module doc.

    Raises :class:`TargetUnavailable` if the database goes away mid-run (the segment in flight
    is rolled back by the server; segments committed before it stay, each complete).
    """
    progress = progress or NoProgress()
    summary = LoadSummary(target=target.description)
    t0 = time.perf_counter()
    try:
        target.ensure_schema()
        pending = _pending(data_dir, target, summary, progress)
        progress.start(len(pending), sum(r.num_rows or 0 for r in pending))
        # Reading and mapping the next segment (Parquet decode, Arrow compute: GIL released)
        # overlaps with the COPY of the current one, which waits on the server.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="materialize-read") as pool:
            try:
                ahead = pool.submit(_prepare, pending[0]) if pending else None
                for i, ref in enumerate(pending):
                    assert ahead is not None
                    prepared, ahead = ahead, None
                    if i + 1 < len(pending):
                        ahead = pool.submit(_prepare, pending[i + 1])
                    _process(data_dir, target, ref, prepared, summary, progress, move_bad)
            finally:
                if ahead is not None:
                    ahead.cancel()
                progress.finish()
        summary.derived.update(finalize(target, summary.touched_markets))
    except psycopg.OperationalError as exc:
        dsn = getattr(target, "dsn", None)
        msg = " ".join(str(exc).split())
        raise TargetUnavailable(
            f"lost the database ({target.description}): {redact(msg, dsn)}"
        ) from None
    summary.seconds = time.perf_counter() - t0
    return summary


def _known_files(target: Target) -> tuple[dict[str, KnownFile], set[str]]:
    """The manifest as the cheap index: path -> (hash, size, mtime), and every loaded hash."""
    rows = target.fetch(
        f"SELECT path, content_sha256, size, mtime_ns FROM {LOADED_SEGMENTS} ORDER BY loaded_at",
        (),
    )
    known = {path: KnownFile(sha, size, mtime) for path, sha, size, mtime in rows}
    return known, {r[1] for r in rows}


_RESTAT = f"UPDATE {LOADED_SEGMENTS} SET size = %s, mtime_ns = %s WHERE content_sha256 = %s"


def _pending(
    data_dir: Path, target: Target, summary: LoadSummary, progress: Progress
) -> list[SegmentRef]:
    """Segments to load now, in load order. Only new files, and known paths whose size or mtime
    changed, are opened (hashed, footer read): the cost follows what is new, not all history."""
    known, done = _known_files(target)
    stats = list_segments(data_dir)
    summary.segments_found = len(stats)
    work = plan(stats, known)
    summary.already_loaded += work.unchanged
    summary.hashed = len(work.new) + len(work.rehash)
    restat: list[tuple[int, int, str]] = []
    for st in work.rehash:
        digest = sha256_file(st.path)
        was = known[st.relpath].sha256
        if digest == was:  # same bytes (copied back, touched, or recorded without size/mtime)
            restat.append((st.size, st.mtime_ns, digest))
            summary.already_loaded += 1
        else:
            reason = changed_reason(was, digest)
            summary.skipped.append(SkippedSegment(st.relpath, reason))
            progress.skipped(st.relpath, reason)
    if restat:
        with target.transaction():
            for params in restat:
                target.execute(_RESTAT, params)
    pending: list[SegmentRef] = []
    seen: set[str] = set()
    for st in work.new:
        ref = describe(st)
        if ref.sha256 in done or ref.sha256 in seen:
            summary.already_loaded += 1  # a loaded file under another name (copy, rename)
        else:
            seen.add(ref.sha256)
            pending.append(ref)
    pending.sort(key=lambda r: r.order_key)
    return pending


def changed_reason(loaded_sha256: str, sha256: str) -> str:
    """Why a file under a loaded path is refused (a sealed segment never changes)."""
    return (
        f"changed after it was loaded (sha256 {sha256[:12]}..., loaded as {loaded_sha256[:12]}...):"
        " sealed segments are immutable; restore the original, or move this file out of segments/"
    )


def _prepare(ref: SegmentRef) -> tuple[pa.Table, str, SegmentRows, float]:
    """Read and map one segment (runs in the read-ahead thread; no database access)."""
    t = time.perf_counter()
    table, version = read_segment(ref)
    return table, version, transform(table), time.perf_counter() - t


def _process(
    data_dir: Path,
    target: Target,
    ref: SegmentRef,
    prepared: Future[tuple[pa.Table, str, SegmentRows, float]],
    summary: LoadSummary,
    progress: Progress,
    move_bad: bool,
) -> None:
    try:
        table, version, rows, read_s = prepared.result()
        t = time.perf_counter()
        _load_one(target, ref, table, version, rows, summary)
    except AlreadyLoaded:
        summary.already_loaded += 1  # a concurrent run committed it first
        return
    except (BadSegment, SegmentRejected) as exc:
        reason = str(exc) if isinstance(exc, BadSegment) else f"rejected by the database: {exc}"
        skipped = SkippedSegment(ref.relpath, reason)
        if move_bad:
            try:
                dest = quarantine(data_dir, ref)
                skipped.moved_to = dest.relative_to(data_dir).as_posix()
            except OSError as move_exc:
                skipped.reason += f" (could not move to quarantine: {move_exc})"
        summary.skipped.append(skipped)
        progress.skipped(ref.relpath, skipped.reason)
        return
    counts = rows.row_counts()
    lc = rows.tables[LIFECYCLE_EVENTS]
    summary.touched_markets.update(
        lc.filter(pc.is_in(lc["event_type"], pa.array(COMPLETION_EVENTS)))["market_ticker"]
        .unique()
        .to_pylist()
    )
    summary.rows.update(counts)
    summary.malformed.update(rows.malformed)
    summary.records += table.num_rows
    summary.loaded.append(ref.relpath)
    seconds = read_s + time.perf_counter() - t
    progress.loaded(ref.relpath, table.num_rows, sum(counts.values()), seconds)


# ------------------------------------------------------------------------------------------------
# Derived facts that span segments and sessions (idempotent, after each run's loads)
# ------------------------------------------------------------------------------------------------

_CLOSE_CRASHED = (
    f"UPDATE {PARTICIPATION} SET leave_reason = '{CRASH}', left_at = GREATEST(joined_at, "
    f"(SELECT coalesce(s.last_record_at, s.ended_at) FROM {SESSIONS} s "
    f"WHERE s.session_id = {PARTICIPATION}.session_id)) "
    f"WHERE left_at IS NULL AND session_id IN "
    f"(SELECT session_id FROM {SESSIONS} WHERE end_reason = '{CRASH}')"
)
_OLD_VOCABULARY = (
    f"UPDATE {SESSIONS} SET exchange_env = environment, "
    "environment = CASE WHEN lifecycle_mode THEN %s ELSE %s END, restart_source = 'derived' "
    "WHERE environment IS NULL OR environment NOT IN (%s, %s)"
)
_SET_RESTART = (
    f"UPDATE {SESSIONS} SET restarted = %s, previous_session_id = %s, "
    "previous_session_ended = %s, previous_end_reason = %s WHERE session_id = %s"
)
_SET_CRASH_END = (
    f"UPDATE {SESSIONS} SET ended_at = %s, end_reason = '{CRASH}' "
    "WHERE session_id = %s AND ended_at IS NULL"
)
_IN_CHUNK = 500
_IN_MARKS = ", ".join(["%s"] * _IN_CHUNK)
"""``IN`` placeholders for one chunk of tickers; short chunks are padded with NULLs (which match
nothing), so the statement text is one constant."""


def _ended_as(end_reason: str | None) -> str:
    if end_reason is None:
        return "unknown"
    return CRASH if end_reason == CRASH else "clean"


def derive_restarts(sessions: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Crash ends and restart flags for sessions recorded before the recorder wrote them (pure).

    ``sessions``: rows with session_id, started_at, ended_at, end_reason, host, shard,
    recovered_from, restart_source. Returns per session the columns to set: ``ended_at`` /
    ``end_reason`` for a session another one recovered but that has no end (a kill before the
    crash end marker existed), and for ``restart_source == "derived"`` sessions ``restarted``,
    ``previous_session_id``, ``previous_session_ended``, ``previous_end_reason``. The previous
    session is the one this session recovered, else the latest earlier session of the same host
    and shard (one data directory per host and shard is how the recorder is deployed).
    """
    by_id = {s["session_id"]: dict(s) for s in sessions}
    changes: dict[int, dict[str, Any]] = {}
    for s in sorted(by_id.values(), key=lambda r: (r["started_at"], r["session_id"])):
        for name in s.get("recovered_from") or []:
            dead = by_id.get(int(name)) if name.lstrip("-").isdigit() else None
            if dead is None or dead is s or dead["ended_at"] is not None:
                continue
            dead["ended_at"], dead["end_reason"] = s["started_at"], CRASH
            changes.setdefault(dead["session_id"], {}).update(
                ended_at=s["started_at"], end_reason=CRASH
            )
    ordered = sorted(by_id.values(), key=lambda r: (r["started_at"], r["session_id"]))
    for i, s in enumerate(ordered):
        if s.get("restart_source") != "derived":
            continue
        recovered = [int(x) for x in (s.get("recovered_from") or []) if x.lstrip("-").isdigit()]
        prev = next((by_id[x] for x in reversed(recovered) if x in by_id), None)
        if prev is None:
            earlier = [o for o in ordered[:i] if (o["host"], o["shard"]) == (s["host"], s["shard"])]
            prev = earlier[-1] if earlier else None
        if prev is None:
            want: dict[str, Any] = {
                "restarted": bool(recovered),
                "previous_session_id": None,
                "previous_session_ended": CRASH if recovered else None,
                "previous_end_reason": None,
            }
        else:
            ended = CRASH if prev["session_id"] in recovered else _ended_as(prev["end_reason"])
            want = {
                "restarted": True,
                "previous_session_id": prev["session_id"],
                "previous_session_ended": ended,
                "previous_end_reason": prev["end_reason"],
            }
        if any(s.get(k) != v for k, v in want.items()):
            changes.setdefault(s["session_id"], {}).update(want)
    return changes


@dataclass(frozen=True, slots=True)
class LifecycleFact:
    """One created/determined/settled lifecycle row of a market (what completion needs)."""

    session_id: int
    record_seq: int
    event_type: str
    determination_ts: int | None
    settled_ts: int | None
    result: str | None
    settlement_price: Decimal | None
    created_at: datetime


def completed_markets(ticker: str, facts: list[LifecycleFact]) -> list[dict[str, Any]]:
    """Rows of ``rl_session_completed_markets`` for one market (pure).

    A session completed a market when it recorded the market's ``created`` and then its
    ``determined``; the ``settled`` may come later in the same session or in a later one (it
    often follows hours after, across restarts). The result and settlement value follow the
    *last* determination (a dispute can amend it), else the ``settled`` event's own value.
    """
    facts = sorted(facts, key=lambda f: (f.session_id, f.record_seq))
    dets = [f for f in facts if f.event_type == "determined"]
    out: list[dict[str, Any]] = []
    if not dets:
        return out
    last_det = dets[-1]
    priced = [f for f in dets if f.settlement_price is not None]
    first_created: dict[int, LifecycleFact] = {}
    for f in facts:
        if f.event_type == "created":
            first_created.setdefault(f.session_id, f)  # a duplicate created changes nothing
    for sid, created in first_created.items():
        det = next(
            (f for f in dets if f.session_id == sid and f.record_seq > created.record_seq), None
        )
        if det is None:
            continue
        after = (sid, det.record_seq)
        settled = next(
            (
                f
                for f in facts
                if f.event_type == "settled" and (f.session_id, f.record_seq) > after
            ),
            None,
        )
        if settled is None:
            continue
        value = priced[-1].settlement_price if priced else settled.settlement_price
        out.append(
            {
                "session_id": sid,
                "market_ticker": ticker,
                "created_at": created.created_at,
                "determined_at": det.created_at,
                "settled_at": settled.created_at,
                "determination_ts": last_det.determination_ts,
                "settled_ts": settled.settled_ts,
                "result": last_det.result,
                "settlement_price": value,
                "settled_session_id": settled.session_id,
            }
        )
    return out


def _refresh_completion(target: Target, tickers: Sequence[str], done: Counter[str]) -> None:
    """Completed markets and the settled rows' settlement value, for these markets only."""
    for lo in range(0, len(tickers), _IN_CHUNK):
        chunk = list(tickers[lo : lo + _IN_CHUNK])
        params: list[str | None] = [*chunk, *[None] * (_IN_CHUNK - len(chunk))]
        rows = target.fetch(
            "SELECT market_ticker, session_id, record_seq, event_type, determination_ts, "
            f"settled_ts, result, settlement_price, created_at FROM {LIFECYCLE_EVENTS} "
            f"WHERE market_ticker IN ({_IN_MARKS}) "
            "AND event_type IN ('created', 'determined', 'settled')",
            params,
        )
        facts: dict[str, list[LifecycleFact]] = {}
        for t, *rest in rows:
            facts.setdefault(t, []).append(LifecycleFact(*rest))
        completed: list[dict[str, Any]] = []
        for ticker, fs in facts.items():
            completed += completed_markets(ticker, fs)
            priced = [
                f
                for f in sorted(fs, key=lambda f: (f.session_id, f.record_seq))
                if f.event_type == "determined" and f.settlement_price is not None
            ]
            for f in fs:
                if f.event_type == "settled" and f.settlement_price is None and priced:
                    done["settlement_price_from_determined"] += target.execute(
                        f"UPDATE {LIFECYCLE_EVENTS} SET settlement_price = %s "
                        "WHERE session_id = %s AND record_seq = %s",
                        (priced[-1].settlement_price, f.session_id, f.record_seq),
                    )
        target.execute(
            f"DELETE FROM {COMPLETED_MARKETS} WHERE market_ticker IN ({_IN_MARKS})", params
        )
        target.insert_arrow(
            COMPLETED_MARKETS,
            pa.Table.from_pylist(completed, schema=arrow_schema(COMPLETED_MARKETS)),
        )
        done["completed_markets"] += len(completed)


def finalize(target: Target, touched_markets: set[str]) -> Counter[str]:
    """Facts no single segment can decide, made true after a run's loads (one transaction,
    idempotent, cost independent of history: the sessions table has one row per recorder run,
    the open-participation scan uses ``idx_participation_active`` and completion is refreshed
    only for markets with new created/determined/settled events).

    * sessions loaded before issue 12 get the specification's vocabulary;
    * a session another one recovered gets a ``crash`` end if it has none (logs older than the
      crash end marker), and restart flags are derived where the recorder did not write them;
    * every participation of a crashed session still open is closed at the session's last
      record, ``leave_reason = 'crash'`` (a real leave sealed later replaces it);
    * completed markets and settled rows' settlement values are refreshed for touched markets.
    """
    done: Counter[str] = Counter()
    with target.transaction():
        done["sessions_vocabulary"] += target.execute(
            _OLD_VOCABULARY,
            (DISCOVERY_LIFECYCLE, DISCOVERY_REST, DISCOVERY_LIFECYCLE, DISCOVERY_REST),
        )
        cols = (
            "session_id",
            "started_at",
            "ended_at",
            "end_reason",
            "host",
            "shard",
            "recovered_from",
            "restart_source",
            "restarted",
            "previous_session_id",
            "previous_session_ended",
            "previous_end_reason",
        )
        rows = target.fetch(f"SELECT {', '.join(cols)} FROM {SESSIONS}", ())
        sessions = [dict(zip(cols, r, strict=True)) for r in rows]
        for session_id, change in derive_restarts(sessions).items():
            if "end_reason" in change:
                done["crash_end_inferred"] += target.execute(
                    _SET_CRASH_END, (change["ended_at"], session_id)
                )
            if "restarted" in change:
                done["restart_derived"] += target.execute(
                    _SET_RESTART,
                    (
                        change["restarted"],
                        change["previous_session_id"],
                        change["previous_session_ended"],
                        change["previous_end_reason"],
                        session_id,
                    ),
                )
        done["participation_closed_by_crash"] += target.execute(_CLOSE_CRASHED, ())
        _refresh_completion(target, sorted(touched_markets), done)
    return +done


def table_counts(target: Target, names: Sequence[str]) -> dict[str, int]:
    """Row counts per table (for the summary and the tests)."""
    return {name: target.count(name) for name in names}
