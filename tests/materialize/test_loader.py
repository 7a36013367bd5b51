"""Materialize loading: exactly once, exact values, bad input skipped, on PostgreSQL and DuckDB."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from materialize.__main__ import EXIT_SKIPPED, main
from materialize.cli import EXIT_DATABASE
from materialize.loader import LogProgress, load, table_counts, transform
from materialize.targets import (
    PGCOPY_HEADER,
    PGCOPY_TRAILER,
    DuckDBTarget,
    encode_pgcopy,
    redact,
)
from schemas import tables
from schemas.log import LOG_SCHEMA
from tests.materialize.warehouse import (
    DUCKDB,
    POSTGRES,
    POSTGRES_ROWS,
    MakeTarget,
    Target,
    targets,
)
from tests.support.segments import (
    SESSION_A,
    SESSION_B,
    Scenario,
    build_scenario,
    segment_path,
    write_bulk_deltas,
    write_table,
)
from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
BULK_SESSION = 7_000_000_001
ORDER = {t.name: ", ".join(t.primary_key) for t in tables.TABLES}
"""Each table dumped in its primary key's order."""

make_target = pytest.fixture(params=[DUCKDB, POSTGRES, POSTGRES_ROWS], name="make_target")(targets)
"""A factory for a target (re-openable, as a second nightly run would)."""


def dump(target: Target, table: str) -> list[tuple[Any, ...]]:
    cols = "*" if table != tables.LOADED_SEGMENTS else "content_sha256, path, session_id, rows"
    sql = f"SELECT {cols} FROM {table} ORDER BY {ORDER[table]}"
    return [tuple(r) for r in target.con.execute(sql).fetchall()]


def dump_all(target: Target) -> dict[str, list[tuple[Any, ...]]]:
    return {t: dump(target, t) for t in tables.ALL_TABLES}


def expected_counts(sc: Scenario) -> dict[str, int]:
    return {
        tables.SESSIONS: 2,
        tables.LIFECYCLE_EVENTS: sc.total("lifecycle"),
        tables.PARTICIPATION: len(sc.participation),
        tables.SNAPSHOTS: sc.total("snapshots"),
        tables.DELTAS: sc.total("deltas"),
        tables.GAPS: sc.total("gaps"),
        tables.LOADED_SEGMENTS: len(sc.paths),
        tables.COMPLETED_MARKETS: 1,  # KXA-M1: created, determined and settled in session A
    }


def test_counts_equal_segment_contents(tmp_path: Path, make_target: MakeTarget) -> None:
    sc = build_scenario(tmp_path)
    target = make_target(tmp_path)
    summary = load(tmp_path, target)
    assert not summary.skipped
    assert len(summary.loaded) == len(sc.paths) == 4
    assert table_counts(target, tables.ALL_TABLES) == expected_counts(sc)
    assert summary.records == sum(len(log.records) for log in sc.logs)
    assert summary.malformed["flagged_frames"] == sc.total("malformed")
    # Undocumented event types are stored verbatim and flagged, never dropped.
    rows = dump(target, tables.LIFECYCLE_EVENTS)
    undocumented = [r for r in rows if r[3] == "brand_new_event_type"]
    assert len(undocumented) == 1 and undocumented[0][4] is False
    assert {r[2] for r in rows} >= {"KXMVE-M4"}  # multivariate lifecycle is loaded too


def test_second_run_changes_nothing(tmp_path: Path, make_target: MakeTarget) -> None:
    build_scenario(tmp_path)
    first = make_target(tmp_path)
    load(tmp_path, first)
    before = dump_all(first)
    first.close()
    again = make_target(tmp_path)
    summary = load(tmp_path, again)
    assert summary.loaded == [] and summary.already_loaded == 4 and summary.total_rows == 0
    assert dump_all(again) == before


def test_exact_prices_and_sizes_survive(tmp_path: Path, make_target: MakeTarget) -> None:
    build_scenario(tmp_path)
    target = make_target(tmp_path)
    load(tmp_path, target)
    snaps = dump(target, tables.SNAPSHOTS)
    first = snaps[0]
    # yes levels sorted by price: 0.0085 x 2.50, 0.08 x 300, 0.45 x 100; no: 0.50 x 10.67
    assert list(first[8]) == [8_500, 80_000, 450_000]
    assert list(first[9]) == [250, 30_000, 10_000]
    assert list(first[10]) == [500_000] and list(first[11]) == [1_067]
    assert list(snaps[1][8]) == [] and list(snaps[1][10]) == [991_500]  # yes key absent
    deltas = dump(target, tables.DELTAS)
    assert {(r[9], r[10]) for r in deltas if r[7] == "KXA-M1" and r[9] == 8_500} == {
        (8_500, 250),
        (8_500, -125),
    }
    by_ticker = {r[2]: r[11] for r in dump(target, tables.LIFECYCLE_EVENTS) if r[3] == "determined"}
    assert by_ticker == {"KXA-M1": Decimal("1"), "KXA-M2": Decimal("0.0085")}
    assert str(by_ticker["KXA-M2"]) == "0.008500"


def test_sessions_and_participation_match_decisions(
    tmp_path: Path, make_target: MakeTarget
) -> None:
    sc = build_scenario(tmp_path)
    last_of_a = sc.paths[2]
    hidden = tmp_path / "later.parquet"
    shutil.move(last_of_a, hidden)  # session A's last segment is not sealed yet
    target = make_target(tmp_path)
    load(tmp_path, target)
    part = {r[1]: r for r in dump(target, tables.PARTICIPATION)}
    assert part["KXA-M1"][3] is not None and part["KXA-M1"][5] == "determined"
    # Session B recovered A and A's end is not loaded: A is taken as crashed, so KXA-M2 is not
    # left open for ever; it is closed at A's last loaded record, as a crash.
    sessions = {r[0]: r for r in dump(target, tables.SESSIONS)}
    assert sessions[SESSION_A][3] == "crash"
    assert part["KXA-M2"][5] == "crash" and part["KXA-M2"][3] == sessions[SESSION_A][17]

    shutil.move(hidden, last_of_a)  # sealed later: the real leave and end replace the inference
    summary = load(tmp_path, make_target(tmp_path))
    assert summary.updates == {"market_left": 1, "session_end": 1, "last_record": 1}
    assert not summary.unmatched
    target = make_target(tmp_path)
    rows = dump(target, tables.PARTICIPATION)
    assert len(rows) == len(sc.participation)
    for exp in sc.participation:
        (row,) = [r for r in rows if r[0] == exp.session_id and r[1] == exp.market_ticker]
        assert row[2].timestamp() * 1e9 == pytest.approx(exp.joined_ns, abs=1_000)
        if exp.left_ns is None:
            assert row[3] is None
        else:
            assert row[3].timestamp() * 1e9 == pytest.approx(exp.left_ns, abs=1_000)
        assert (row[4], row[5], row[6], row[7]) == (
            exp.join_reason,
            exp.leave_reason,
            exp.mid_lifecycle,
            exp.late_by_ms,
        )
    sessions = {r[0]: r for r in dump(target, tables.SESSIONS)}
    a, _b = sc.logs
    assert a.ended is not None and a.started is not None
    sa = sessions[SESSION_A]
    assert sa[1].timestamp() * 1e9 == pytest.approx(a.started["recv_ns"], abs=1_000)
    assert sa[2].timestamp() * 1e9 == pytest.approx(a.ended[0], abs=1_000)
    assert (sa[3], sa[4], sa[5], sa[6], sa[7], sa[8], sa[11]) == (
        "signal",
        True,
        "lifecycle_discovery",  # an old-style payload: environment was the exchange
        "vm-1",
        "0/1",
        "0.1.0",
        "demo",
    )
    sb = sessions[SESSION_B]
    assert sb[2] is None and sb[7] == "1/2" and list(sb[10]) == [str(SESSION_A)]
    gaps = {r[9]: r for r in dump(target, tables.GAPS)}
    assert set(gaps) == {"gap", "stale_seq", "loss"}
    assert gaps["gap"][6:8] == (45, 47) and list(gaps["gap"][8]) == ["KXA-M1", "KXA-M2"]
    assert gaps["stale_seq"][6:8] == (48, 46)


def test_corrupt_and_unknown_version_are_skipped(tmp_path: Path, make_target: MakeTarget) -> None:
    sc = build_scenario(tmp_path)
    corrupt = tmp_path / "segments/date=2026-01-03/session_id=42/part-000000000001.parquet"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"PAR1 this is not a parquet file")
    truncated = segment_path(tmp_path, 43, 1_767_225_600_000_000_000, 1)
    truncated.parent.mkdir(parents=True)
    truncated.write_bytes(sc.paths[0].read_bytes()[:-100])  # a footer torn off
    future = segment_path(tmp_path, 44, 1_767_225_600_000_000_000, 1)
    write_table(future, sc.logs[0].table(0, 3), version=b"99")
    target = make_target(tmp_path)
    summary = load(tmp_path, target)
    reasons = {s.relpath.split("/")[2]: s.reason for s in summary.skipped}
    assert set(reasons) == {"session_id=42", "session_id=43", "session_id=44"}
    assert "unreadable Parquet" in reasons["session_id=42"]
    assert "unreadable Parquet" in reasons["session_id=43"]
    assert "unknown schema version '99'" in reasons["session_id=44"]
    assert table_counts(target, tables.ALL_TABLES) == expected_counts(sc)
    assert corrupt.exists()  # default: skip and report, leave the file


def test_constraint_violation_rolls_back_only_that_segment(
    tmp_path: Path, make_target: MakeTarget
) -> None:
    sc = build_scenario(tmp_path)
    # Same records as session B's segment under a different name and compression: new content
    # hash, same primary keys -> the database rejects it as a whole.
    dup = tmp_path / "segments/date=2026-01-02/session_id=17673120004560002/part-dup.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(sc.paths[3]), dup, compression="snappy")
    target = make_target(tmp_path)
    summary = load(tmp_path, target, progress=LogProgress())
    assert [s.relpath for s in summary.skipped] == [dup.relative_to(tmp_path).as_posix()]
    assert "rejected by the database" in summary.skipped[0].reason
    assert table_counts(target, tables.ALL_TABLES) == expected_counts(sc)


def test_quarantine_moves_bad_segment_keeping_relative_path(tmp_path: Path) -> None:
    build_scenario(tmp_path)
    bad = tmp_path / "segments/date=2026-01-03/session_id=42/part-000000000001.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"garbage")
    code = main(["--data-dir", str(tmp_path), "--no-training", "--quarantine"])
    assert code == EXIT_SKIPPED
    assert not bad.exists()
    assert (
        tmp_path / "quarantine/segments/date=2026-01-03/session_id=42/part-000000000001.parquet"
    ).exists()
    assert main(["--data-dir", str(tmp_path), "--no-training"]) == 0  # nothing left to skip


class Boom(Exception):
    pass


def test_failure_inside_a_segment_transaction_then_rerun_is_exactly_once(
    tmp_path: Path, make_target: MakeTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = build_scenario(tmp_path)
    target = make_target(tmp_path)
    cls = type(target)
    real = cls.insert_arrow
    calls = {"n": 0}

    def failing(self: Any, name: str, data: pa.Table) -> None:
        real(self, name, data)
        # second segment: some of its rows are already written inside the transaction
        if name == tables.DELTAS and data.num_rows and data["record_seq"][0].as_py() > 50:
            calls["n"] += 1
            raise Boom("simulated crash mid-load")

    monkeypatch.setattr(cls, "insert_arrow", failing)
    with pytest.raises(Boom):
        load(tmp_path, target)
    assert calls["n"] == 1
    assert target.count(tables.LOADED_SEGMENTS) == 1  # only the first segment committed
    first = expected_deltas_in(sc, 0)
    assert target.count(tables.DELTAS) == first
    monkeypatch.setattr(cls, "insert_arrow", real)
    summary = load(tmp_path, target)
    assert len(summary.loaded) == 3 and summary.already_loaded == 1
    assert table_counts(target, tables.ALL_TABLES) == expected_counts(sc)


def expected_deltas_in(sc: Scenario, index: int) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(sc.paths[index])
    return int(pc.sum(pc.equal(t["msg_type"], "orderbook_delta").cast(pa.int64())).as_py())


def _spawn_loader(data_dir: Path, dsn: str | None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "materialize", "--data-dir", str(data_dir), "--no-training"]
    if dsn is not None:
        cmd += ["--pg", dsn]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stdout_line(proc: subprocess.Popen[bytes], seconds: float) -> str:
    """The child's next stdout line, or fail at the deadline (a hung child is a failure)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], seconds)
    assert ready, f"no output from the child within {seconds}s"
    return proc.stdout.readline().decode().strip()


def _copies(mon: psycopg.Connection[Any], *, waiting: bool) -> int:
    """Backends of other clients running a COPY into the deltas (``waiting``: for a lock)."""
    row = mon.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
        "AND query LIKE %s AND (NOT %s OR wait_event_type = 'Lock')",
        (f"COPY {tables.DELTAS}%", waiting),
    ).fetchone()
    return int(row[0]) if row else 0


_HOLD_KEY = 0x6B616C7368690099
_HOLD_AT_ROW = f"""
CREATE FUNCTION test_hold_at_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.record_seq = %s THEN PERFORM pg_advisory_xact_lock_shared({_HOLD_KEY}); END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_hold_at_row BEFORE INSERT ON {tables.DELTAS}
    FOR EACH ROW EXECUTE FUNCTION test_hold_at_row();
"""


@pytest.mark.postgres
@pytest.mark.slow
def test_kill_mid_copy_then_rerun_is_exactly_once(tmp_path: Path, pg_dsn: str) -> None:
    """A loader killed in the middle of a segment's COPY leaves that segment out entirely.

    Mid-COPY by construction, not by timing: a row trigger makes the COPY of the second segment's
    *last* record wait for an advisory lock the test holds, so the rows before it are written and
    the server shows the COPY waiting; the test kills the loader then."""
    write_bulk_deltas(tmp_path, 400_000, 100_000, session_id=BULK_SESSION)
    with psycopg.connect(pg_dsn, autocommit=True) as mon:
        for stmt in tables.ddl("postgres"):
            mon.execute(stmt)
        mon.execute(_HOLD_AT_ROW % 200_000)
        mon.execute("SELECT pg_advisory_lock(%s)", (_HOLD_KEY,))
        proc = _spawn_loader(tmp_path, pg_dsn)
        try:
            wait_for(
                lambda: proc.poll() is not None or _copies(mon, waiting=True) > 0,
                "the loader's COPY to wait at the held row",
                120,
            )
            assert proc.poll() is None, "the loader ended without reaching the held row"
            assert mon.execute(f"SELECT count(*) FROM {tables.LOADED_SEGMENTS}").fetchone() == (1,)
        finally:
            proc.kill()
            proc.wait(30)
        mon.execute("SELECT pg_advisory_unlock(%s)", (_HOLD_KEY,))
        # Its backend runs again, finds the client gone and rolls the segment back.
        wait_for(lambda: _copies(mon, waiting=False) == 0, "the dead COPY to end")
        assert mon.execute(f"SELECT count(*) FROM {tables.LOADED_SEGMENTS}").fetchone() == (1,)
        assert mon.execute(f"SELECT count(*) FROM {tables.DELTAS}").fetchone() == (100_000,)
        mon.execute(f"DROP TRIGGER test_hold_at_row ON {tables.DELTAS}")
    rerun = _spawn_loader(tmp_path, pg_dsn)
    _out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()
    with psycopg.connect(pg_dsn) as con:
        assert con.execute(f"SELECT count(*) FROM {tables.DELTAS}").fetchone() == (400_000,)
        assert con.execute(
            f"SELECT count(DISTINCT (session_id, record_seq)) FROM {tables.DELTAS}"
        ).fetchone() == (400_000,)
        assert con.execute(f"SELECT count(*) FROM {tables.LOADED_SEGMENTS}").fetchone() == (4,)


@pytest.mark.slow
def test_kill_duckdb_loader_then_rerun_is_exactly_once(tmp_path: Path) -> None:
    """A loader killed inside a segment's transaction (rows written, manifest row claimed,
    nothing committed) leaves that segment out; the rerun loads every segment once.

    Mid-load by construction: the real loader and target in a child that stops once the third
    segment's rows are in (``tests/support/blocking_loader.py``) and says so; the kill comes
    then. Had the load finished first, the child would say ``finished`` and the warehouse would
    hold six segments: both are checked."""
    write_bulk_deltas(tmp_path, 300_000, 50_000, session_id=BULK_SESSION)
    cmd = [sys.executable, "-m", "tests.support.blocking_loader", str(tmp_path), "3"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = _stdout_line(proc, 120)
    finally:
        proc.kill()
        proc.wait(30)
    assert line == "blocked 100001", line  # inside the third segment (records 100001..150000)
    t = DuckDBTarget(tmp_path / "warehouse.duckdb")
    assert (t.count(tables.LOADED_SEGMENTS), t.count(tables.DELTAS)) == (2, 100_000)
    t.close()
    rerun = _spawn_loader(tmp_path, None)
    _out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()
    t = DuckDBTarget(tmp_path / "warehouse.duckdb")
    assert t.count(tables.DELTAS) == 300_000 and t.count(tables.LOADED_SEGMENTS) == 6
    row = t.con.execute(
        f"SELECT count(DISTINCT (session_id, record_seq)) FROM {tables.DELTAS}"
    ).fetchone()
    assert row == (300_000,)
    t.close()


def test_live_dir_is_never_read(tmp_path: Path, make_target: MakeTarget) -> None:
    sc = build_scenario(tmp_path)
    live = tmp_path / "live" / "segments" / "date=2026-01-01" / "session_id=1"
    live.mkdir(parents=True)
    shutil.copy(sc.paths[0], live / "part-000000000001.parquet")
    (tmp_path / "live" / "session_id=1.arrows").write_bytes(b"in progress")
    opened: list[str] = []
    live_prefix = str(tmp_path / "live")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and args and str(args[0]).startswith(live_prefix):
            opened.append(str(args[0]))

    sys.addaudithook(hook)
    target = make_target(tmp_path)
    load(tmp_path, target)
    assert opened == []
    assert table_counts(target, tables.ALL_TABLES) == expected_counts(sc)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://kalshi:s3cr3t-pw@127.0.0.1:1/kalshi",
        "host=127.0.0.1 port=1 user=kalshi password=s3cr3t-pw dbname=kalshi",
    ],
)
def test_unreachable_database_exits_2_without_password(
    tmp_path: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    build_scenario(tmp_path)
    code = main(["--data-dir", str(tmp_path), "--pg", dsn, "--no-training"])
    out, err = capsys.readouterr()
    assert code == EXIT_DATABASE
    assert "s3cr3t-pw" not in out + err
    assert "cannot connect" in err and "127.0.0.1" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "warehouse.duckdb").exists()  # no silent fallback


def test_redact_covers_dsn_shapes() -> None:
    assert redact("postgresql://u:pw123@h/db") == "postgresql://u:***@h/db"
    assert redact("host=h password=pw123 user=u") == "host=h password=*** user=u"
    assert redact("host=h password='p w' user=u") == "host=h password=*** user=u"
    assert redact("postgres://u@h/db?password=pw123&x=1") == "postgres://u@h/db?password=***&x=1"
    assert redact("error near pw123", "postgresql://u:pw123@h/db") == "error near ***"


def test_cli_default_duckdb_prints_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    build_scenario(tmp_path)
    assert main(["--data-dir", str(tmp_path), "--no-training"]) == 0
    out, err = capsys.readouterr()
    assert "rl_orderbook_deltas" in out and "rows/s" in out and "segments loaded now" in out
    assert "loaded segments/" in err  # plain log lines when stderr is not a terminal
    assert (tmp_path / "warehouse.duckdb").exists()
    assert main(["--data-dir", str(tmp_path), "--no-training"]) == 0


def test_cli_bad_usage_is_not_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--no-such-flag"])
    assert exc.value.code == 64


def test_transform_skips_unparseable_snapshot_and_untyped_delta() -> None:
    sc_rows = [
        {
            **{n: None for n in LOG_SCHEMA.names},
            "session_id": 1,
            "record_seq": 1,
            "recv_ns": 1,
            "kind": "in",
            "msg_type": "orderbook_snapshot",
            "market_ticker": "X",
            "malformed": False,
            "raw": b'{"type":"orderbook_snapshot","msg":{"yes_dollars_fp":[["0.5"]]}}',
        },
        {
            **{n: None for n in LOG_SCHEMA.names},
            "session_id": 1,
            "record_seq": 2,
            "recv_ns": 2,
            "kind": "in",
            "msg_type": "orderbook_delta",
            "market_ticker": "X",
            "side": "yes",
            "malformed": False,
            "raw": b"{}",  # price too precise: typed column left null by the recorder
        },
    ]
    rows = transform(pa.Table.from_pylist(sc_rows, schema=LOG_SCHEMA))
    assert rows.row_counts()[tables.SNAPSHOTS] == 0 and rows.row_counts()[tables.DELTAS] == 0
    assert rows.malformed == {"orderbook_snapshot": 1, "orderbook_delta": 1}


@pytest.mark.postgres
def test_pgcopy_encoder_handles_nulls_and_text(pg_dsn: str) -> None:
    t = pa.table(
        {
            "a": pa.array([1, None, -(2**63)], pa.int64()),
            "b": pa.array(["é-ü", None, ""], pa.string()),
            "c": pa.array([None, 7, -1], pa.int16()),
            "d": pa.array([True, None, False]),
            "e": pa.array([0, None, 1_767_225_600_123_456], pa.timestamp("us", tz="UTC")),
        }
    )
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute("CREATE TABLE x (a BIGINT, b TEXT, c SMALLINT, d BOOLEAN, e TIMESTAMPTZ)")
        with con.cursor() as cur, cur.copy("COPY x FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(PGCOPY_HEADER + encode_pgcopy(t, [20, 25, 21, 16, 1184]) + PGCOPY_TRAILER)
        rows = con.execute("SELECT a, b, c, d, extract(epoch from e)::numeric FROM x").fetchall()
    assert [r[:4] for r in rows] == [
        (1, "é-ü", None, True),
        (None, None, 7, None),
        (-(2**63), "", -1, False),
    ]
    assert rows[0][4] == 0 and rows[1][4] is None
    assert rows[2][4] == Decimal("1767225600.123456")


def test_cli_builds_training_sets_and_quality_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    build_scenario(tmp_path)
    assert main(["--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "training sets:" in out
    assert "quality report:" in out
    assert (tmp_path / "training" / "manifest.json").is_file()
    assert (tmp_path / "quality" / "report.json").is_file()


def test_declared_tables_generate_matching_ddl_and_arrow_layouts() -> None:
    """Each table is declared once (``schemas.tables.TABLES``): the DuckDB DDL made from it has
    the declared columns, in order, in the types DuckDB gives the declared Arrow types; and an
    empty Arrow table of the declared layout inserts into it (what the loader's COPY does)."""
    import duckdb

    from schemas import tables

    con = duckdb.connect()
    for stmt in tables.ddl("duckdb"):
        con.execute(stmt)
    for t in tables.TABLES:
        described = con.execute(f"DESCRIBE {t.name}").fetchall()
        assert [r[0] for r in described] == list(t.names), t.name
        probe = con.from_arrow(t.arrow.empty_table())
        arrow_types = [
            "JSON" if c.json else str(ty) for c, ty in zip(t.columns, probe.types, strict=True)
        ]
        assert [str(r[1]) for r in described] == arrow_types, t.name
        not_null = {r[0] for r in described if r[2] == "NO"}
        assert not_null == {c.name for c in t.columns if not c.nullable} | set(t.primary_key)
