"""``python -m materialize.retention`` / ``kalshi-retention``: keep the data directory small.

Two jobs, run after the nightly materialize (``deploy/systemd/kalshi-materialize.service``):

* **compact** past days: the small sealed segments of one ``date=/session_id=`` directory are
  rewritten into a few large Parquet files (same ``LOG_SCHEMA``, same schema-version metadata,
  the archive's encoding ``schemas.catalog.DEFAULT_PARQUET``: zstd 9 where the recorder seals at
  3, ``recorder.segments.SEAL_PARQUET``; rows in record order), so a day is a few files instead of
  one per roll;
* **expire** old days: segments of days older than N days are deleted (``--delete-older-than``)
  or moved, keeping the hive layout, under ``--archive-dir`` (``--archive-older-than``).

What it never touches:

* ``live/`` and any session that still has a live part there (a running recorder, or a crashed
  one whose leftovers the next start will seal: re-sealing recreates the original segment name, so
  compacting that session now could duplicate rows);
* a segment whose SHA-256 is not in the target's ``rl_loaded_segments`` (DuckDB
  ``DATA/warehouse.duckdb`` by default, PostgreSQL with ``--pg DSN``): unloaded data stays as it
  is until materialize has loaded it;
* today's (UTC) segments, and anything on or after ``--compact-before``.

Why the compacted file is recorded as loaded, before it becomes visible: materialize keys segments
by content hash, and the compacted file has a new hash. If it appeared in ``segments/`` unrecorded,
the next materialize would load its rows a second time (the sessions' rows are already there: the
load would be rejected as a duplicate and reported, or worse, duplicate rows in tables without a
key). So each compaction is: write the new file under a hidden temporary name and fsync it; insert
its hash into ``rl_loaded_segments`` (committed); atomically rename it into place; then delete the
originals. Every crash point is safe: before the commit nothing happened; between the commit and
the rename the manifest holds a hash of a file not yet present (harmless; the next run writes the
same file and finds the hash already recorded); between the rename and the deletes the originals
and the compacted file coexist, both recorded as loaded (materialize loads neither) — the next run
finds the compacted file's ``kalshi_recorder.compacted_from`` metadata and finishes the deletes.
The originals' manifest rows stay: if a backup copy of an original reappears it is still not
loaded twice.

Exit status: 0 done; 1 an I/O error stopped the run (what was done stays done); 2 the database is
unreachable; 64 bad command line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from materialize.cli import (
    EXIT_DATABASE,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    fail,
    refuse_data_dir,
    store_of,
    store_parser,
)
from materialize.segments_index import SegmentRef, find_segments, sha256_file
from materialize.targets import (
    AlreadyLoaded,
    ManifestRow,
    PostgresTarget,
    Target,
    TargetUnavailable,
    open_target,
    redact,
)
from schemas.catalog import DEFAULT_PARQUET, ParquetOptions, fsync_dir, sessions
from schemas.log import LOG_SCHEMA, SCHEMA_VERSION, SCHEMA_VERSION_KEY, SEGMENTS_DIR
from schemas.tables import PARTITION_KEYS, day_bounds_ns

log = logging.getLogger("materialize.retention")

COMPACTED_FROM_KEY = b"kalshi_recorder.compacted_from"
"""Parquet metadata of a compacted file: JSON list of ``{name, sha256, rows}`` of its sources."""

DEFAULT_TARGET_BYTES = 256 * 2**20
"""Aim for files of about the recorder's ``roll_bytes``: a row group is 256 Ki rows, DuckDB and
Spark parallelise per row group, and a day becomes a handful of files."""

_TMP_SUFFIX = ".compact.tmp"
_TO_SUFFIX = re.compile(r"-to-\d+$")


@dataclass
class RetentionReport:
    """What one run did (and what it left alone, with the reason)."""

    compacted: list[tuple[str, list[str]]] = field(default_factory=list)  # new file, sources
    finished: list[str] = field(default_factory=list)  # originals deleted after a crash
    deleted: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    left: dict[str, str] = field(default_factory=dict)  # relpath -> reason not touched
    dropped_partitions: list[str] = field(default_factory=list)
    detached_partitions: list[str] = field(default_factory=list)
    deleted_rows: dict[str, int] = field(default_factory=dict)  # unpartitioned table -> rows

    def lines(self) -> list[str]:
        out = [f"compacted {len(srcs)} segment(s) -> {new}" for new, srcs in self.compacted]
        out += [f"finished an interrupted compaction: deleted {p}" for p in self.finished]
        out += [f"deleted {p}" for p in self.deleted]
        out += [f"archived {p}" for p in self.archived]
        out += [f"dropped partition {p}" for p in self.dropped_partitions]
        out += [
            f"detached partition {p} (now a table of its own)" for p in self.detached_partitions
        ]
        out += [f"deleted {n} old row(s) from {t}" for t, n in sorted(self.deleted_rows.items())]
        reasons: dict[str, int] = {}
        for why in self.left.values():
            reasons[why] = reasons.get(why, 0) + 1
        out += [f"left {n} segment(s): {why}" for why, n in sorted(reasons.items())]
        return out


# --------------------------------------------------------------------------------- helpers


def _date_of(ref: SegmentRef) -> str | None:
    """``YYYY-MM-DD`` of the hive ``date=`` directory, or None if the path is not hive-shaped."""
    name = ref.path.parent.parent.name
    return name.split("=", 1)[1] if name.startswith("date=") else None


def live_sessions(data_dir: Path) -> set[int]:
    """Sessions with an unsealed live part: never compacted, deleted or archived."""
    return {f.session_id for f in sessions(data_dir).values() if f.live}


def _loaded_hashes(target: Target) -> set[str]:
    target.ensure_schema()
    return target.loaded_hashes()


def _compacted_name(first: Path, last_seq: int) -> str:
    # keeps "part-<int>" in front: schemas.catalog.sealed_segments sorts on name.split("-")[1]
    stem = _TO_SUFFIX.sub("", first.stem)
    return f"{stem}-to-{last_seq}.parquet"


def _remove_empty_dirs(path: Path, stop: Path) -> None:
    while path != stop and path.is_dir():
        try:
            path.rmdir()
        except OSError:
            return
        fsync_dir(path.parent)
        path = path.parent


# --------------------------------------------------------------------------------- compaction


def _eligible(
    ref: SegmentRef, loaded: set[str], live: set[int], before: str, target_bytes: int
) -> str | None:
    """None if ``ref`` may be compacted, else the reason it is left alone."""
    date = _date_of(ref)
    if date is None:
        return "not in a date= directory"
    if date >= before:
        return f"day not before {before}"
    if ref.session_id is not None and ref.session_id in live:
        return "session still has unsealed live data"
    if ref.sha256 not in loaded:
        return "not loaded by materialize yet"
    if ref.footer_error is not None or ref.first_record_seq is None:
        return "unreadable footer"
    if ref.schema_version != SCHEMA_VERSION:
        return f"schema version {ref.schema_version!r} (this build writes {SCHEMA_VERSION})"
    if ref.size >= target_bytes:
        return "already large"
    return None


def _bins(refs: Sequence[SegmentRef], target_bytes: int) -> list[list[SegmentRef]]:
    """Consecutive segments grouped up to ``target_bytes``; only groups of two or more."""
    out: list[list[SegmentRef]] = []
    cur: list[SegmentRef] = []
    size = 0
    for ref in refs:
        if cur and size + ref.size > target_bytes:
            out.append(cur)
            cur, size = [], 0
        cur.append(ref)
        size += ref.size
    if cur:
        out.append(cur)
    return [b for b in out if len(b) >= 2]


def _read_verified(ref: SegmentRef) -> pa.Table:
    data = ref.path.read_bytes()
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise ValueError(f"{ref.relpath} changed since it was hashed (sealed files are immutable)")
    table = pq.read_table(pa.BufferReader(data))
    if not table.schema.equals(LOG_SCHEMA, check_metadata=False):
        raise ValueError(f"{ref.relpath}: columns differ from LOG_SCHEMA")
    return table


def _write_compacted(
    sources: Sequence[SegmentRef], tmp: Path, options: ParquetOptions
) -> tuple[int, int]:
    """Write the sources' rows, in record order, to ``tmp``; returns ``(rows, last record_seq)``."""
    tables = [_read_verified(r) for r in sources]
    table = pa.concat_tables(tables).combine_chunks()
    seq = table["record_seq"]
    sid = table["session_id"]
    if table.num_rows > 1:
        same_session = pc.all(pc.equal(sid, sid[0])).as_py()
        increasing = pc.all(pc.greater(seq.slice(1), seq.slice(0, table.num_rows - 1))).as_py()
        if not (same_session and increasing):
            raise ValueError("sources overlap or mix sessions; not combining them")
    meta = dict(tables[0].schema.metadata or {})
    meta[SCHEMA_VERSION_KEY] = SCHEMA_VERSION.encode()
    meta[COMPACTED_FROM_KEY] = json.dumps(
        [{"name": r.path.name, "sha256": r.sha256, "rows": r.num_rows} for r in sources]
    ).encode()
    schema = LOG_SCHEMA.with_metadata(meta)
    table = table.replace_schema_metadata(meta)
    group = options.row_group_rows
    with pq.ParquetWriter(tmp, schema, **options.writer_kwargs()) as pw:
        for start in range(0, table.num_rows, group):
            chunk = table.slice(start, group)
            pw.write_table(chunk, row_group_size=chunk.num_rows)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    return table.num_rows, int(seq[-1].as_py())


def finish_interrupted(data_dir: Path, loaded: set[str], report: RetentionReport) -> None:
    """Delete originals left next to a compacted file by a crash between rename and delete."""
    root = Path(data_dir) / SEGMENTS_DIR
    for stale in root.glob(f"date=*/session_id=*/.*{_TMP_SUFFIX}"):
        stale.unlink()  # a write that never got renamed: its sources are all still in place
    for path in sorted(root.glob("date=*/session_id=*/*-to-*.parquet")):
        try:
            kv = pq.read_metadata(path).metadata or {}
        except (OSError, pa.ArrowException):
            continue
        if COMPACTED_FROM_KEY not in kv:
            continue
        if sha256_file(path) not in loaded:
            continue  # not ours to trust: leave everything for a person to look at
        for src in json.loads(kv[COMPACTED_FROM_KEY]):
            original = path.parent / src["name"]
            if original.is_file() and sha256_file(original) == src["sha256"]:
                original.unlink()
                fsync_dir(path.parent)
                report.finished.append(original.relative_to(data_dir).as_posix())


def compact(
    data_dir: Path,
    target: Target,
    before: str,
    *,
    target_bytes: int = DEFAULT_TARGET_BYTES,
    options: ParquetOptions = DEFAULT_PARQUET,
    dry_run: bool = False,
    report: RetentionReport | None = None,
) -> RetentionReport:
    """Compact loaded, sealed segments of days before ``before`` (``YYYY-MM-DD``, UTC)."""
    data_dir = Path(data_dir)
    report = report if report is not None else RetentionReport()
    loaded = _loaded_hashes(target)
    if not dry_run:
        finish_interrupted(data_dir, loaded, report)
    live = live_sessions(data_dir)
    refs = find_segments(data_dir)
    by_dir: dict[Path, list[SegmentRef]] = {}
    for ref in refs:
        by_dir.setdefault(ref.path.parent, []).append(ref)
    for directory, group in sorted(by_dir.items()):
        group.sort(key=lambda r: (r.first_record_seq is None, r.first_record_seq or 0, r.relpath))
        runs: list[list[SegmentRef]] = [[]]
        for ref in group:
            why = _eligible(ref, loaded, live, before, target_bytes)
            if why is None:
                runs[-1].append(ref)
            else:
                if why not in ("already large",) and not why.startswith("day not before"):
                    report.left[ref.relpath] = why
                runs.append([])  # a gap in eligibility breaks the run: outputs stay contiguous
        for sources in itertools.chain.from_iterable(_bins(r, target_bytes) for r in runs):
            _compact_one(data_dir, directory, sources, target, options, dry_run, report)
    return report


def _compact_one(
    data_dir: Path,
    directory: Path,
    sources: Sequence[SegmentRef],
    target: Target,
    options: ParquetOptions,
    dry_run: bool,
    report: RetentionReport,
) -> None:
    names = [r.relpath for r in sources]
    if dry_run:
        report.compacted.append((f"{directory.relative_to(data_dir).as_posix()}/(dry run)", names))
        return
    tmp = directory / f".compacting-{sources[0].path.stem}{_TMP_SUFFIX}"
    try:
        rows, last_seq = _write_compacted(sources, tmp, options)
    except (ValueError, OSError, pa.ArrowException) as exc:
        tmp.unlink(missing_ok=True)
        for r in sources:
            report.left[r.relpath] = f"not compacted: {exc}"
        return
    final = directory / _compacted_name(sources[0].path, last_seq)
    relpath = final.relative_to(data_dir).as_posix()
    digest = sha256_file(tmp)
    # Recorded as loaded *before* it is visible in segments/: materialize never sees it unloaded.
    try:
        with target.transaction():
            seg = ManifestRow(digest, relpath, sources[0].session_id, rows, SCHEMA_VERSION)
            target.claim_segment(seg)
    except AlreadyLoaded:
        pass  # an earlier run committed this very file and crashed before the rename
    os.replace(tmp, final)
    fsync_dir(directory)
    for r in sources:
        if r.path != final:
            r.path.unlink()
    fsync_dir(directory)
    report.compacted.append((relpath, names))


# --------------------------------------------------------------------------------- expiry


def old_before(older_than_days: int, today: dt.date | None = None) -> dt.date:
    """The first UTC day that is not "older than N days": files (:func:`expire`) and database
    rows (:func:`expire_db`) of days before it go, by the same cut. ``today`` defaults to the
    current UTC date."""
    return (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=older_than_days)


def expire(
    data_dir: Path,
    target: Target,
    older_than_days: int,
    *,
    archive_dir: Path | None = None,
    today: dt.date | None = None,
    dry_run: bool = False,
    report: RetentionReport | None = None,
) -> RetentionReport:
    """Delete (or move under ``archive_dir``) loaded segments of days older than N days."""
    data_dir = Path(data_dir)
    report = report if report is not None else RetentionReport()
    cutoff = old_before(older_than_days, today).isoformat()
    loaded = _loaded_hashes(target)
    live = live_sessions(data_dir)
    root = data_dir / SEGMENTS_DIR
    for ref in find_segments(data_dir):
        date = _date_of(ref)
        if date is None or date >= cutoff:
            continue
        if ref.session_id is not None and ref.session_id in live:
            report.left[ref.relpath] = "session still has unsealed live data"
            continue
        if ref.sha256 not in loaded:
            report.left[ref.relpath] = "not loaded by materialize yet"
            continue
        if dry_run:
            (report.archived if archive_dir else report.deleted).append(ref.relpath)
            continue
        if archive_dir is not None:
            _archive(ref, Path(archive_dir))
            report.archived.append(ref.relpath)
        else:
            ref.path.unlink()
            fsync_dir(ref.path.parent)
            report.deleted.append(ref.relpath)
        _remove_empty_dirs(ref.path.parent, root)
    return report


def _archive(ref: SegmentRef, archive_dir: Path) -> None:
    """Copy (fsync, atomic rename) under ``archive_dir/<relpath>``, then delete the original."""
    dest = archive_dir / ref.relpath
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not (dest.is_file() and sha256_file(dest) == ref.sha256):
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(ref.path, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if sha256_file(tmp) != ref.sha256:
            tmp.unlink()
            raise OSError(f"copy of {ref.relpath} to {dest} does not match; original kept")
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    ref.path.unlink()
    fsync_dir(ref.path.parent)


# --------------------------------------------------------------------------------- database days


class NotPartitioned(Exception):
    """Detaching needs the tables partitioned by day; the message says what to do."""


def partitions_before(
    parts: Iterable[tuple[str, int | None, int | None]], cutoff_ns: int
) -> tuple[list[str], list[str]]:
    """``(whole, straddling)``: partitions ``(name, start, end)`` (``None`` = unbounded) that
    lie entirely before ``cutoff_ns``, and those that hold time on both sides of it (kept whole:
    dropping part of a partition would be a DELETE, not a constant-time drop)."""
    whole: list[str] = []
    straddling: list[str] = []
    for name, start, end in parts:
        if end is not None and end <= cutoff_ns:
            whole.append(name)
        elif start is None or start < cutoff_ns:
            straddling.append(name)
    return whole, straddling


def expire_db(
    target: Target,
    older_than_days: int,
    *,
    detach: bool = False,
    today: dt.date | None = None,
    dry_run: bool = False,
    report: RetentionReport | None = None,
    schema_ready: bool = False,
) -> RetentionReport:
    """Remove the big tables' rows (deltas, snapshots, gaps) of receive days older than N days.

    Tables partitioned by day (``kalshi-materialize --pg-partition-by-day``) lose whole day
    partitions: ``DROP TABLE`` of the partition (or ``DETACH PARTITION`` with ``detach``, leaving
    ``<table>_pYYYYMMDD`` as a table of its own to dump or move), in constant time whatever the
    rows. Unpartitioned tables (PostgreSQL or DuckDB) get a ``DELETE``, whose time grows with the
    rows. The same cut as the files: a day is old when it is before ``today - N days`` (UTC).
    Sessions, participation, lifecycle events and the manifest are never touched.
    ``schema_ready``: ``target.ensure_schema()`` was already called (the benchmark times only
    the removal).
    """
    report = report if report is not None else RetentionReport()
    cutoff_day = old_before(older_than_days, today)
    cutoff_ns = day_bounds_ns(cutoff_day)[0]
    if not schema_ready:
        target.ensure_schema()
    partitioned = target.partitioned_tables() if isinstance(target, PostgresTarget) else {}
    if detach:
        plain = [t for t in PARTITION_KEYS if t not in partitioned]
        if plain:
            raise NotPartitioned(
                f"{', '.join(plain)} not partitioned by day in {target.description}: detaching "
                "needs tables created with kalshi-materialize --pg-partition-by-day; use "
                "--db-drop-older-than to delete the old rows instead"
            )
    for table, key in PARTITION_KEYS.items():
        if isinstance(target, PostgresTarget) and table in partitioned:
            _drop_partitions(target, table, cutoff_ns, cutoff_day, detach, dry_run, report)
            continue
        if dry_run:
            report.deleted_rows[table] = _count_before(target, table, key, cutoff_ns)
            continue
        with target.transaction():
            n = target.execute(f"DELETE FROM {table} WHERE {key} < %s", (cutoff_ns,))
        report.deleted_rows[table] = n
    return report


def _count_before(target: Target, table: str, key: str, cutoff_ns: int) -> int:
    if isinstance(target, PostgresTarget):
        row = target.con.execute(
            f"SELECT count(*) FROM {table} WHERE {key} < %s", (cutoff_ns,)
        ).fetchone()
    else:
        con = getattr(target, "con")  # noqa: B009 - DuckDBTarget
        row = con.execute(f"SELECT count(*) FROM {table} WHERE {key} < ?", [cutoff_ns]).fetchone()
    return int(row[0]) if row else 0


def _drop_partitions(
    target: PostgresTarget,
    table: str,
    cutoff_ns: int,
    cutoff_day: dt.date,
    detach: bool,
    dry_run: bool,
    report: RetentionReport,
) -> None:
    from psycopg import sql

    whole, straddling = partitions_before(target.day_partitions(table), cutoff_ns)
    for name in straddling:
        report.left[name] = f"partition holds days on or after {cutoff_day}: kept whole"
    for name in whole:
        if not dry_run:
            if detach:
                stmt = sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(
                    sql.Identifier(table), sql.Identifier(name)
                )
            else:
                stmt = sql.SQL("DROP TABLE {}").format(sql.Identifier(name))
            with target.transaction():
                target.con.execute(stmt)
        (report.detached_partitions if detach else report.dropped_partitions).append(name)


# --------------------------------------------------------------------------------- CLI


def _day(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def _days(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: need a whole number of days >= 1")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = store_parser(
        "kalshi-retention",
        "Compact the sealed segments of past days and delete or archive old days. Only segments "
        "recorded as loaded in rl_loaded_segments are touched; never live/.",
        pg_flags=("--pg", "--dsn"),
        pg_help="PostgreSQL DSN holding rl_loaded_segments (default: $DATABASE_URL; "
        "without one: DATA/warehouse.duckdb)",
    )
    p.add_argument(
        "--compact-before",
        type=_day,
        default=None,
        help="compact days before this UTC date (default: today, i.e. every past day)",
    )
    p.add_argument("--no-compact", action="store_true", help="only delete/archive")
    p.add_argument(
        "--target-bytes",
        type=int,
        default=DEFAULT_TARGET_BYTES,
        help="approximate size of a compacted file (default 256 MiB)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--delete-older-than", type=_days, metavar="N", help="delete days older")
    mode.add_argument(
        "--archive-older-than", type=_days, metavar="N", help="move days older to --archive-dir"
    )
    p.add_argument("--archive-dir", type=Path, help="archive root (hive layout is kept)")
    db = p.add_mutually_exclusive_group()
    db.add_argument(
        "--db-drop-older-than",
        type=_days,
        metavar="N",
        help="also remove deltas, snapshots and gaps of receive days older than N days from the "
        "database: whole day partitions are dropped (constant time) when the tables are "
        "partitioned by day, otherwise the rows are deleted",
    )
    db.add_argument(
        "--db-detach-older-than",
        type=_days,
        metavar="N",
        help="like --db-drop-older-than but detach the day partitions (kept as tables of their "
        "own, e.g. rl_orderbook_deltas_p20260101, to dump and drop later); needs partitioned "
        "tables",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would be done")
    return p


def run(argv: Sequence[str] | None = None, *, today: dt.date | None = None) -> int:
    """The CLI; ``today`` is for tests (default: the current UTC date)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.archive_older_than is not None and args.archive_dir is None:
        parser.error("--archive-older-than needs --archive-dir")
    if args.archive_dir is not None and args.archive_older_than is None:
        parser.error("--archive-dir is only used with --archive-older-than")
    data_dir: Path = args.data_dir
    if (refused := refuse_data_dir("retention", data_dir)) is not None:
        return refused
    today = today or dt.datetime.now(dt.UTC).date()
    dsn, duck = store_of(args)
    if dsn is None and not duck.exists():
        print(f"retention: {duck} does not exist: nothing is loaded yet, nothing to do")
        return EXIT_OK
    try:
        target = open_target(dsn, duck)
    except TargetUnavailable as exc:
        return fail("retention", exc, EXIT_DATABASE)
    report = RetentionReport()
    # the steps asked for, in this order; each then runs with the same dry_run and report
    steps: list[Callable[..., RetentionReport]] = []
    if not args.no_compact:
        before = args.compact_before or today.isoformat()
        before = min(before, today.isoformat())  # never today: it is still being written
        steps.append(partial(compact, data_dir, target, before, target_bytes=args.target_bytes))
    if (days := args.delete_older_than or args.archive_older_than) is not None:
        archive_dir = args.archive_dir
        steps.append(partial(expire, data_dir, target, days, archive_dir=archive_dir, today=today))
    if (db_days := args.db_drop_older_than or args.db_detach_older_than) is not None:
        detach = args.db_detach_older_than is not None
        steps.append(partial(expire_db, target, db_days, detach=detach, today=today))
    try:
        for step in steps:
            step(dry_run=args.dry_run, report=report)
    except NotPartitioned as exc:
        return fail("retention", exc, EXIT_USAGE)
    except TargetUnavailable as exc:
        return fail("retention", exc, EXIT_DATABASE)
    except OSError as exc:
        _print(report.lines())
        return fail("retention", f"stopped: {redact(str(exc), dsn)}", EXIT_FAILED)
    finally:
        target.close()
    _print(report.lines() or ["nothing to do"])
    return EXIT_OK


def _print(lines: Iterable[str]) -> None:
    for line in lines:
        print(f"retention: {line}")


def main() -> None:
    """Console-script entry point (``kalshi-retention``)."""
    sys.exit(run())


if __name__ == "__main__":
    main()
