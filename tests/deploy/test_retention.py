"""materialize.retention with real Parquet files and the real DuckDB target.

Segments come from the materialize test generator (the log contract) and, in one test, from the
recorder's own live-file + seal path, so both naming schemes are covered.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from materialize.cli import EXIT_USAGE
from materialize.loader import NoProgress, load, table_counts
from materialize.retention import COMPACTED_FROM_KEY, compact, expire, run
from materialize.segments_index import find_segments, sha256_file
from materialize.targets import DuckDBTarget
from recorder.segments import LiveFile, seal
from schemas.catalog import live_part_path, read_sealed, sealed_segments
from schemas.log import LOG_SCHEMA, SCHEMA_VERSION, SCHEMA_VERSION_KEY
from schemas.tables import (
    ALL_TABLES,
    DELTAS,
    GAPS,
    LOADED_SEGMENTS,
    PARTITION_KEYS,
    SNAPSHOTS,
    day_bounds_ns,
    day_partition_name,
)
from tests.materialize.multi_day import load_into, multi_day_log, partition_of_each_row, pg_rows
from tests.support.segments import (
    SESSION_A,
    SESSION_B,
    T0_NS,
    SessionLog,
    build_scenario,
    write_segments,
)

DAY_A = "2026-01-01"  # session A's three segments
LATER = dt.date(2026, 3, 1)


def warehouse(data_dir: Path) -> DuckDBTarget:
    t = DuckDBTarget(data_dir / "warehouse.duckdb")
    t.ensure_schema()
    return t


def load_all(data_dir: Path) -> dict[str, int]:
    t = warehouse(data_dir)
    try:
        summary = load(data_dir, t, progress=NoProgress())
        assert not summary.skipped, summary.skipped
        return {**table_counts(t, ALL_TABLES), "loaded_now": len(summary.loaded)}
    finally:
        t.close()


def session_files(data_dir: Path, session_id: int) -> list[Path]:
    return sorted(data_dir.glob(f"segments/date=*/session_id={session_id}/*.parquet"))


def records(paths: list[Path]) -> pa.Table:
    t = pa.concat_tables(pq.read_table(p) for p in paths)
    return t.sort_by([("session_id", "ascending"), ("record_seq", "ascending")])


def test_compacts_loaded_past_day_and_never_reloads(tmp_path: Path) -> None:
    sc = build_scenario(tmp_path)
    before_a = session_files(tmp_path, SESSION_A)
    assert len(before_a) == 3
    original_rows = records(before_a)
    counts = load_all(tmp_path)

    t = warehouse(tmp_path)
    try:
        report = compact(tmp_path, t, before="2026-02-01")
    finally:
        t.close()
    (new_rel, sources), *rest = report.compacted
    assert rest == [] and len(sources) == 3
    after_a = session_files(tmp_path, SESSION_A)
    assert [p.relative_to(tmp_path).as_posix() for p in after_a] == [new_rel]
    assert len(session_files(tmp_path, SESSION_B)) == 1  # a single segment: nothing to combine

    # same rows, same order (record order inside the file), same schema and version metadata
    new = pq.read_table(after_a[0])
    assert new.schema.equals(LOG_SCHEMA, check_metadata=False)
    assert new.equals(original_rows.select(LOG_SCHEMA.names))
    seq = new["record_seq"].to_pylist()
    assert seq == sorted(seq)
    meta = pq.read_metadata(after_a[0])
    assert meta.metadata[SCHEMA_VERSION_KEY] == SCHEMA_VERSION.encode()
    assert COMPACTED_FROM_KEY in meta.metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"

    # the compacted file's hash is in the manifest, so materialize loads nothing again
    t = warehouse(tmp_path)
    try:
        loaded = t.loaded_hashes()
        summary = load(tmp_path, t, progress=NoProgress())
        assert sha256_file(after_a[0]) in loaded
        assert summary.loaded == [] and summary.already_loaded == 2
        again = table_counts(t, ALL_TABLES)
    finally:
        t.close()
    assert again[LOADED_SEGMENTS] == counts[LOADED_SEGMENTS] + 1
    assert {k: v for k, v in again.items() if k != LOADED_SEGMENTS} == {
        k: v for k, v in counts.items() if k not in (LOADED_SEGMENTS, "loaded_now")
    }
    assert len(sc.paths) == 4

    # a second run has nothing left to do
    t = warehouse(tmp_path)
    try:
        assert compact(tmp_path, t, before="2026-02-01").compacted == []
    finally:
        t.close()


def test_unloaded_live_and_recent_segments_are_not_touched(tmp_path: Path) -> None:
    build_scenario(tmp_path)
    load_all(tmp_path)
    # an unloaded session on a past day, two segments
    c = SessionLog(42, start_ns=T0_NS + 3_600_000_000_000)
    c.session_start()
    for i in range(10):
        c.delta("KXC-M1", 1, i + 1, "yes", "0.5000", "1.00")
    unloaded = write_segments(tmp_path, c, [5])
    # session A still has an unsealed live part (a crashed run the next start will seal)
    live = live_part_path(tmp_path, SESSION_A, 9)
    live.parent.mkdir(parents=True)
    live.write_bytes(b"torn")
    snapshot = {p: sha256_file(p) for p in tmp_path.glob("segments/**/*.parquet")}

    t = warehouse(tmp_path)
    try:
        report = compact(tmp_path, t, before="2026-02-01")
        expired = expire(tmp_path, t, 30, today=LATER)
        recent = compact(tmp_path, t, before="2026-01-01")  # day A is not before it
    finally:
        t.close()
    assert report.compacted == [] and recent.compacted == []
    assert all(p.exists() for p in unloaded)
    for p in unloaded:
        assert report.left[p.relative_to(tmp_path).as_posix()] == "not loaded by materialize yet"
    for p in session_files(tmp_path, SESSION_A):
        why = report.left[p.relative_to(tmp_path).as_posix()]
        assert why == "session still has unsealed live data"
    # expiry removed only session B's loaded segment
    assert [Path(p).parts[2] for p in expired.deleted] == [f"session_id={SESSION_B}"]
    left = {p: sha256_file(p) for p in tmp_path.glob("segments/**/*.parquet")}
    assert left == {p: h for p, h in snapshot.items() if f"session_id={SESSION_B}" not in str(p)}
    assert live.read_bytes() == b"torn"


def test_crash_between_rename_and_delete_is_finished_next_run(tmp_path: Path) -> None:
    build_scenario(tmp_path)
    load_all(tmp_path)
    saved = tmp_path / "saved"
    originals = session_files(tmp_path, SESSION_A)
    saved.mkdir()
    for p in originals:
        shutil.copy2(p, saved / p.name)
    t = warehouse(tmp_path)
    try:
        compact(tmp_path, t, before="2026-02-01")
    finally:
        t.close()
    # simulate the crash: the originals are back next to the compacted file
    for p in originals:
        shutil.copy2(saved / p.name, p)
    t = warehouse(tmp_path)
    try:
        summary = load(tmp_path, t, progress=NoProgress())
        assert summary.loaded == []  # both the originals and the compacted file are loaded
        report = compact(tmp_path, t, before="2026-02-01")
    finally:
        t.close()
    assert sorted(report.finished) == sorted(p.relative_to(tmp_path).as_posix() for p in originals)
    assert len(session_files(tmp_path, SESSION_A)) == 1


def test_archive_keeps_hive_layout_and_content(tmp_path: Path) -> None:
    data, archive = tmp_path / "data", tmp_path / "archive"
    build_scenario(data)
    load_all(data)
    before = {
        p.relative_to(data).as_posix(): sha256_file(p) for p in data.glob("segments/**/*.parquet")
    }
    code = run(
        [
            *("--data-dir", str(data), "--no-compact"),
            *("--archive-older-than", "30", "--archive-dir", str(archive)),
        ],
        today=LATER,
    )
    assert code == 0
    assert list(data.glob("segments/**/*.parquet")) == []
    assert not any((data / "segments").iterdir())  # empty date=/session_id= dirs removed
    after = {
        p.relative_to(archive).as_posix(): sha256_file(p) for p in archive.glob("**/*.parquet")
    }
    assert after == before


def test_recorder_sealed_segments_compact_and_stay_listable(tmp_path: Path) -> None:
    """Segments named by recorder.segments.seal (part-NNNNN-SEQ) compact into a name that
    sealed_segments still sorts and read_sealed still reads, rows unchanged."""
    log = SessionLog(7, start_ns=T0_NS)
    log.session_start()
    for i in range(30):
        log.delta("KXR-M1", 1, i + 1, "no", "0.1234", "3.00")
    log.session_end()
    for part, (lo, hi) in enumerate([(0, 10), (10, 20), (20, len(log.records))], start=1):
        lf = LiveFile(live_part_path(tmp_path, 7, part))
        for b in log.table(lo, hi).to_batches():
            lf.write(b)
        lf.close()
        seal(lf.path, tmp_path)
    originals = list(sealed_segments(tmp_path))
    assert len(originals) == 3
    rows = read_sealed(originals)
    load_all(tmp_path)
    assert run(["--data-dir", str(tmp_path)], today=LATER) == 0
    (only,) = list(sealed_segments(tmp_path))
    assert only.name.startswith("part-00001-") and "-to-" in only.name
    assert read_sealed([only]).equals(rows)
    assert len(find_segments(tmp_path)) == 1


def test_cli_usage_and_missing_warehouse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        run(["--data-dir", str(tmp_path), "--archive-older-than", "3"])
    assert exc.value.code == 64
    with pytest.raises(SystemExit) as exc:
        run(["--delete-older-than", "3", "--archive-older-than", "3", "--archive-dir", "x"])
    assert exc.value.code == 64
    build_scenario(tmp_path)
    assert run(["--data-dir", str(tmp_path), "--delete-older-than", "1"], today=LATER) == 0
    assert "nothing is loaded yet" in capsys.readouterr().out
    assert len(list(tmp_path.glob("segments/**/*.parquet"))) == 4
    assert not (tmp_path / "warehouse.duckdb").exists()


def test_dry_run_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_scenario(tmp_path)
    load_all(tmp_path)
    before = sorted(tmp_path.glob("segments/**/*.parquet"))
    code = run(["--data-dir", str(tmp_path), "--delete-older-than", "1", "--dry-run"], today=LATER)
    assert code == 0
    out = capsys.readouterr().out
    assert "compacted 3 segment(s)" in out and "deleted" in out
    assert sorted(tmp_path.glob("segments/**/*.parquet")) == before


# ------------------------------------------------------------------------------------------------
# Old days out of the database: whole day partitions on PostgreSQL (--db-drop/--db-detach-...)
# ------------------------------------------------------------------------------------------------


def _days_after(rows: list[tuple[Any, ...]], key_index: int, cutoff_ns: int) -> list[Any]:
    return [r for r in rows if r[key_index] >= cutoff_ns]


def _load_multi_day(data_dir: Path, dsn: str, *, partitioned: bool) -> list[str]:
    """The multi-day log loaded into PostgreSQL; returns the retention arguments for it (without
    compaction, and without the expiry option under test)."""
    write_segments(data_dir, multi_day_log())
    summary, _ = load_into(data_dir, dsn, partition_by_day=partitioned)
    assert not summary.skipped
    return ["--data-dir", str(data_dir), "--pg", dsn, "--no-compact"]


KEY_INDEX = {DELTAS: 2, SNAPSHOTS: 2, GAPS: 2}  # recv_ns / detected_ns is the third column
MULTI_DAY_TODAY = dt.date(2026, 1, 4)  # the log runs 2026-01-01 .. 2026-01-04
CUT_DAYS = 1  # keep 2026-01-03 and later
CUTOFF_NS = day_bounds_ns(MULTI_DAY_TODAY - dt.timedelta(days=CUT_DAYS))[0]


@pytest.mark.postgres
@pytest.mark.parametrize("partitioned", [True, False], ids=["partitioned", "unpartitioned"])
def test_db_drop_older_than_removes_exactly_the_old_days(
    tmp_path: Path, pg_dsn: str, partitioned: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _load_multi_day(tmp_path, pg_dsn, partitioned=partitioned)
    before = {t: pg_rows(pg_dsn, t) for t in PARTITION_KEYS}
    files = sorted(p.name for p in tmp_path.rglob("*.parquet"))

    assert (
        run([*argv, "--db-drop-older-than", str(CUT_DAYS), "--dry-run"], today=MULTI_DAY_TODAY) == 0
    )
    assert {t: pg_rows(pg_dsn, t) for t in PARTITION_KEYS} == before
    capsys.readouterr()

    assert run([*argv, "--db-drop-older-than", str(CUT_DAYS)], today=MULTI_DAY_TODAY) == 0
    out = capsys.readouterr().out
    for table, rows in before.items():
        after = pg_rows(pg_dsn, table)
        assert after == _days_after(rows, KEY_INDEX[table], CUTOFF_NS), table
        assert len(after) < len(rows), f"{table}: the test data must have old rows"
    if partitioned:
        old = day_partition_name(DELTAS, dt.date(2026, 1, 1))
        assert f"dropped partition {old}" in out
        with psycopg.connect(pg_dsn) as con:
            assert con.execute("SELECT to_regclass(%s)", (old,)).fetchone() == (None,)
        left = {p for p in partition_of_each_row(pg_dsn, DELTAS).values()}
        assert left == {day_partition_name(DELTAS, dt.date(2026, 1, d)) for d in (3, 4)}
    else:
        assert "old row(s) from rl_orderbook_deltas" in out
    # files are another policy (--delete-older-than): untouched here
    assert sorted(p.name for p in tmp_path.rglob("*.parquet")) == files
    # and a second run has nothing left to remove
    assert run([*argv, "--db-drop-older-than", str(CUT_DAYS)], today=MULTI_DAY_TODAY) == 0
    assert "dropped partition" not in capsys.readouterr().out


@pytest.mark.postgres
def test_db_detach_keeps_the_old_days_as_tables_of_their_own(tmp_path: Path, pg_dsn: str) -> None:
    argv = _load_multi_day(tmp_path, pg_dsn, partitioned=True)
    before = pg_rows(pg_dsn, DELTAS)
    assert run([*argv, "--db-detach-older-than", str(CUT_DAYS)], today=MULTI_DAY_TODAY) == 0
    assert pg_rows(pg_dsn, DELTAS) == _days_after(before, 2, CUTOFF_NS)
    detached = [day_partition_name(DELTAS, dt.date(2026, 1, d)) for d in (1, 2)]
    with psycopg.connect(pg_dsn) as con:
        kept: list[tuple[Any, ...]] = []
        for name in detached:
            assert con.execute(
                "SELECT relkind, relispartition FROM pg_class WHERE relname = %s", (name,)
            ).fetchone() == ("r", False)
            kept += con.execute(f"SELECT * FROM {name}").fetchall()
    assert sorted(kept) == sorted(r for r in before if r[2] < CUTOFF_NS)


@pytest.mark.postgres
def test_db_detach_on_unpartitioned_tables_is_a_usage_error(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _load_multi_day(tmp_path, pg_dsn, partitioned=False)
    before = pg_rows(pg_dsn, DELTAS)
    assert run([*argv, "--db-detach-older-than", "1"], today=MULTI_DAY_TODAY) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "not partitioned by day" in err and "--db-drop-older-than" in err
    assert pg_rows(pg_dsn, DELTAS) == before


def test_db_drop_older_than_deletes_old_rows_from_the_duckdb_warehouse(tmp_path: Path) -> None:
    write_segments(tmp_path, multi_day_log())
    load_all(tmp_path)

    def keys() -> list[int]:
        con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
        try:
            return [r[0] for r in con.execute(f"SELECT recv_ns FROM {DELTAS}").fetchall()]
        finally:
            con.close()

    before = keys()
    argv = ["--data-dir", str(tmp_path), "--no-compact", "--db-drop-older-than", str(CUT_DAYS)]
    assert run(argv, today=MULTI_DAY_TODAY) == 0
    assert sorted(keys()) == sorted(k for k in before if k >= CUTOFF_NS) != sorted(before)
