"""PostgreSQL partitioned by receive day (``kalshi-materialize --pg-partition-by-day``).

Pure parts (the DDL rewrite, day arithmetic, partition bounds) get unit and property tests; the
rest runs against a real PostgreSQL: partitions are created ahead of the rows that need them,
loading stays exactly-once, a rolled-back segment leaves no partition the loader believes in, and
the tables hold exactly what an unpartitioned database holds.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from materialize.__main__ import main as materialize_main
from materialize.loader import NoProgress, load
from materialize.retention import partitions_before
from materialize.targets import PostgresTarget
from schemas import tables
from tests.materialize.multi_day import (
    SESSION,
    STEP_NS,
    load_into,
    multi_day_log,
    partition_of_each_row,
    pg_rows,
)
from tests.pg import fresh_database
from tests.support.segments import T0_NS, SessionLog, write_segments, write_table

# ------------------------------------------------------------------------------------------------
# Pure parts
# ------------------------------------------------------------------------------------------------


def test_partitioned_ddl_differs_only_in_the_big_tables() -> None:
    plain, parted = tables.ddl("postgres"), tables.partitioned_ddl()
    assert len(plain) == len(parted)
    changed = 0
    for a, b in zip(plain, parted, strict=True):
        table = next(
            (t for t in tables.PARTITION_KEYS if a.startswith(f"CREATE TABLE IF NOT EXISTS {t} (")),
            None,
        )
        if table is None:
            assert a == b
            continue
        key = tables.PARTITION_KEYS[table]
        changed += 1
        assert b.endswith(f") PARTITION BY RANGE ({key})")
        assert f"PRIMARY KEY (session_id, record_seq, {key})" in b
        assert f"    {key} " in b, f"{table}: the key must be one of its columns"
    assert changed == len(tables.PARTITION_KEYS) == 3


@given(st.integers(min_value=-(2**62), max_value=2**63 - 1))
def test_a_time_lies_in_the_bounds_of_its_day(ns: int) -> None:
    start, end = tables.day_bounds_ns(tables.day_of_ns(ns))
    assert start <= ns < end
    assert end - start == tables.DAY_NS
    assert start % tables.DAY_NS == 0


@given(st.dates(min_value=dt.date(1971, 1, 1), max_value=dt.date(2200, 1, 1)))
def test_day_bounds_are_utc_midnights(day: dt.date) -> None:
    start, end = tables.day_bounds_ns(day)
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    assert start == int(midnight.timestamp()) * 10**9
    assert (
        tables.day_of_ns(start) == day
        and tables.day_of_ns(end - 1) == day
        and tables.day_of_ns(end) != day
    )
    assert tables.day_partition_name(tables.DELTAS, day) == f"{tables.DELTAS}_p{day:%Y%m%d}"


bounds = st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1))


@given(bounds, bounds, st.booleans())
def test_range_bounds_parse_as_postgres_prints_them(
    lo: int | None, hi: int | None, quoted: bool
) -> None:
    def text(v: int | None, unbounded: str) -> str:
        if v is None:
            return unbounded
        return f"'{v}'" if quoted else str(v)

    expr = f"FOR VALUES FROM ({text(lo, 'MINVALUE')}) TO ({text(hi, 'MAXVALUE')})"
    assert tables.parse_range_bound(expr) == (lo, hi)


@pytest.mark.parametrize(
    "expr", ["DEFAULT", "FOR VALUES IN ('a')", "FOR VALUES FROM ('x') TO ('y')", ""]
)
def test_other_partition_bounds_are_not_day_ranges(expr: str) -> None:
    assert tables.parse_range_bound(expr) is None


parts = st.lists(
    st.tuples(st.text(min_size=1, max_size=5), bounds, bounds),
    max_size=12,
    unique_by=lambda p: p[0],
)


@given(parts, st.integers(min_value=-(2**62), max_value=2**62))
def test_partitions_before_splits_at_the_cutoff(
    partitions: list[tuple[str, int | None, int | None]], cutoff: int
) -> None:
    whole, straddling = partitions_before(partitions, cutoff)
    by_name = {name: (lo, hi) for name, lo, hi in partitions}
    assert not set(whole) & set(straddling)
    for name, (lo, hi) in by_name.items():
        before = hi is not None and hi <= cutoff
        after = lo is not None and lo >= cutoff and not before
        assert (name in whole) == before
        assert (name in straddling) == (not before and not after)


# ------------------------------------------------------------------------------------------------
# A real PostgreSQL
# ------------------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_partitioned_load_is_exactly_once_and_holds_what_an_unpartitioned_one_holds(
    tmp_path: Path, pg_dsn: str, pg_admin_dsn: str
) -> None:
    log = multi_day_log()
    n = len(log.records)
    # cuts inside days and one segment that spans midnight
    write_segments(tmp_path, log, [n // 4, n // 2 + 1, 3 * n // 4])
    days = {tables.day_of_ns(r["recv_ns"]) for r in log.records}
    assert len(days) >= 4

    summary, partitioned = load_into(tmp_path, pg_dsn, partition_by_day=True)
    assert not summary.skipped and len(summary.loaded) == 4
    assert partitioned == tables.PARTITION_KEYS

    for table in tables.PARTITION_KEYS:
        where = partition_of_each_row(pg_dsn, table)  # every row sits in its day's partition
        assert where, table
    with fresh_database(pg_admin_dsn) as plain_dsn:
        plain_summary, plain_parts = load_into(tmp_path, plain_dsn, partition_by_day=False)
        assert plain_parts == {}
        assert not plain_summary.skipped
        for table in tables.PARTITION_KEYS:
            assert pg_rows(pg_dsn, table) == pg_rows(plain_dsn, table), table
    assert len(pg_rows(pg_dsn, tables.DELTAS)) == log.expected["deltas"]
    assert len(pg_rows(pg_dsn, tables.SNAPSHOTS)) == log.expected["snapshots"]
    assert len(pg_rows(pg_dsn, tables.GAPS)) == log.expected["gaps"]

    # rerun, even without the flag: nothing loaded twice, the layout is read from the catalog
    before = {t: pg_rows(pg_dsn, t) for t in tables.PARTITION_KEYS}
    again, partitioned = load_into(tmp_path, pg_dsn, partition_by_day=False)
    assert again.loaded == [] and again.already_loaded == 4
    assert partitioned == tables.PARTITION_KEYS
    assert {t: pg_rows(pg_dsn, t) for t in tables.PARTITION_KEYS} == before

    # a later day arrives: its partitions are created before its rows are copied
    later = multi_day_log(SESSION + 1, start_ns=T0_NS + 10 * tables.DAY_NS)
    write_segments(tmp_path, later)
    third, _ = load_into(tmp_path, pg_dsn, partition_by_day=False)
    assert len(third.loaded) == 1 and not third.skipped
    new_day = tables.day_partition_name(tables.DELTAS, dt.date(2026, 1, 11))
    assert new_day in partition_of_each_row(pg_dsn, tables.DELTAS).values()


@pytest.mark.postgres
def test_a_rolled_back_segment_leaves_no_partition_behind_that_the_loader_trusts(
    tmp_path: Path, pg_dsn: str
) -> None:
    """A segment whose rows are rejected rolls back the partition created for it; the next
    segment of that day still finds (re-creates) its partition."""
    log = multi_day_log()
    n = len(log.records)
    write_segments(tmp_path, log, [n // 2])
    first, _ = load_into(tmp_path, pg_dsn, partition_by_day=True)
    assert len(first.loaded) == 2

    # Same records again plus one delta 30 days later, in a new file (new hash): the copy hits
    # the primary key and the whole segment, new day's partition included, is rolled back.
    bad = SessionLog(SESSION, start_ns=T0_NS, step_ns=STEP_NS)
    bad.records = [dict(r) for r in log.records[: n // 2]]
    late_ns = T0_NS + 30 * tables.DAY_NS
    rec = dict(log.records[0], record_seq=10_000, recv_ns=late_ns, msg_type="orderbook_delta")
    rec.update(
        kind="in", market_ticker="KXP-M1", side="yes", price=8500, delta=250, malformed=False
    )
    bad.records.append(rec)
    dup = tmp_path / "segments/date=2026-01-01" / f"session_id={SESSION}" / "part-9.parquet"
    write_table(dup, bad.table())

    target = PostgresTarget(pg_dsn)
    try:
        summary = load(tmp_path, target, progress=NoProgress())
        assert [s.relpath for s in summary.skipped] == [dup.relative_to(tmp_path).as_posix()]
        late_day = tables.day_partition_name(tables.DELTAS, tables.day_of_ns(late_ns))
        assert late_day not in {p for p, _, _ in target.day_partitions(tables.DELTAS)}

        # a good segment of that same late day, loaded by the same target object
        dup.unlink()
        good = SessionLog(SESSION + 5, start_ns=late_ns, step_ns=STEP_NS)
        good.session_start()
        good.delta("KXP-M1", 2, 1, "no", "0.5000", "1.00")
        write_segments(tmp_path, good)
        summary = load(tmp_path, target, progress=NoProgress())
        assert not summary.skipped and len(summary.loaded) == 1
        assert late_day in {p for p, _, _ in target.day_partitions(tables.DELTAS)}
    finally:
        target.close()
    assert (SESSION + 5, 2) in partition_of_each_row(pg_dsn, tables.DELTAS)


@pytest.mark.postgres
def test_the_flag_on_an_unpartitioned_database_is_a_clear_error(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    write_segments(tmp_path, multi_day_log())
    assert materialize_main(["--data-dir", str(tmp_path), "--pg", pg_dsn, "--no-training"]) == 0
    capsys.readouterr()
    code = materialize_main(
        ["--data-dir", str(tmp_path), "--pg", pg_dsn, "--no-training", "--pg-partition-by-day"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "already exist(s) unpartitioned" in err and "docs/scale-out.md" in err
    assert "\n" not in err.strip()


@pytest.mark.postgres
def test_cli_creates_a_partitioned_database(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    log = multi_day_log()
    write_segments(tmp_path, log)
    argv = ["--data-dir", str(tmp_path), "--pg", pg_dsn, "--no-training", "--pg-partition-by-day"]
    assert materialize_main(argv) == 0
    assert materialize_main(argv) == 0  # idempotent
    wanted = {
        tables.day_partition_name(tables.DELTAS, tables.day_of_ns(r["recv_ns"]))
        for r in log.records
        if r["msg_type"] == "orderbook_delta"
    }
    assert set(partition_of_each_row(pg_dsn, tables.DELTAS).values()) == wanted
    assert len(pg_rows(pg_dsn, tables.DELTAS)) == log.expected["deltas"]


def test_the_flag_without_postgresql_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    write_segments(tmp_path, multi_day_log())
    code = materialize_main(["--data-dir", str(tmp_path), "--pg-partition-by-day"])
    err = capsys.readouterr().err
    assert code == 2 and "needs PostgreSQL" in err
    assert not (tmp_path / "warehouse.duckdb").exists()
