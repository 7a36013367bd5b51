"""Issue 12 on the materialize side: the tables say what the specification says.

Crash-closed participation (segments with and without the crash end marker, and the real
recorder killed with SIGKILL), restart flags (clean and crash, recorder-written and derived),
completed markets whose settlement arrives later, the cheap segment index, and a data directory
that does not exist. Every database test runs on DuckDB and on a real PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from materialize.__main__ import EXIT_SKIPPED, main
from materialize.cli import EXIT_NO_DATA
from materialize.loader import LifecycleFact, completed_markets, derive_restarts, load
from materialize.targets import DuckDBTarget, PostgresTarget
from schemas.tables import COMPLETED_MARKETS, LIFECYCLE_EVENTS, PARTICIPATION, SESSIONS
from tests.materialize.warehouse import DUCKDB, POSTGRES, MakeTarget, Target, targets
from tests.support.segments import T0_NS, SessionLog, write_segments, write_table

HOUR_NS = 3_600 * 1_000_000_000
S1 = 1_767_225_600_000 << 20
S2 = (1_767_225_600_000 + 7_200_000) << 20
S3 = (1_767_225_600_000 + 14_400_000) << 20

make_target = pytest.fixture(params=[DUCKDB, POSTGRES], name="make_target")(targets)


def rows(target: Target, sql: str) -> list[dict[str, Any]]:
    cur = target.con.execute(sql)
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def sessions_by_id(target: Target) -> dict[int, dict[str, Any]]:
    return {r["session_id"]: r for r in rows(target, f"SELECT * FROM {SESSIONS}")}


def ns_of(ts: Any) -> int:
    return int(ts.timestamp() * 1_000_000) * 1000


NEW_START: dict[str, Any] = {"environment": "lifecycle_discovery", "exchange_env": "demo"}


# ------------------------------------------------------------------------ crash participation
def crashed_session(*, marker: bool, new_style: bool) -> SessionLog:
    """A run killed with two markets joined and open, one left; ``marker``: the next start
    sealed a ``session_end {reason: crash}`` for it an hour later (recorders since 0bdd425)."""
    a = SessionLog(S1)
    if new_style:
        a.session_start(**NEW_START, previous_session=None)
    else:
        a.session_start()
    for t in ("KXC-1", "KXC-2", "KXC-3"):
        a.lifecycle(t, "created", open_ts=T0_NS // 10**9, close_ts=T0_NS // 10**9 + 600)
        a.join(t)
    a.lifecycle("KXC-1", "determined", result="yes", determination_ts=T0_NS // 10**9 + 60)
    a.leave("KXC-1")
    if marker:
        a.start_ns += HOUR_NS  # the marker's recv time is the recovery, not the crash
        a.session_end("crash")
    return a


def restarted_session(*, recovered: bool, new_style: bool, prev_end: str | None) -> SessionLog:
    b = SessionLog(S2, start_ns=T0_NS + 2 * HOUR_NS)
    if recovered:
        b.recovered([S1], [f"live/session_id={S1}/part-000001.arrows"])
    if new_style:
        ended = "crash" if prev_end == "crash" else "clean"
        prev = {"session_id": S1, "ended": ended, "end_reason": prev_end}
        b.session_start(**NEW_START, previous_session=prev)
    else:
        b.session_start()
    b.join("KXB-1")
    return b


@pytest.mark.parametrize("marker", [True, False], ids=["end-marker", "before-end-marker"])
def test_crash_closes_the_dead_sessions_participation(
    tmp_path: Path, make_target: MakeTarget, marker: bool
) -> None:
    a = crashed_session(marker=marker, new_style=marker)
    last_a_ns = a.records[-2 if marker else -1]["recv_ns"]
    write_segments(tmp_path, a)
    load(tmp_path, make_target(tmp_path))
    target = make_target(tmp_path)
    open_rows = rows(target, f"SELECT * FROM {PARTICIPATION} WHERE left_at IS NULL")
    # Without the marker nothing says yet that S1 died: it may still be running.
    assert len(open_rows) == (0 if marker else 2)

    b = restarted_session(recovered=True, new_style=marker, prev_end="crash")
    write_segments(tmp_path, b)
    summary = load(tmp_path, make_target(tmp_path))
    target = make_target(tmp_path)
    dead = rows(target, f"SELECT * FROM {PARTICIPATION} WHERE session_id = {S1}")
    assert {r["market_ticker"]: r["leave_reason"] for r in dead} == {
        "KXC-1": "determined",
        "KXC-2": "crash",
        "KXC-3": "crash",
    }
    for r in dead:
        if r["leave_reason"] == "crash":  # closed where the recording stopped, not at recovery
            assert ns_of(r["left_at"]) == last_a_ns // 1000 * 1000
    s = sessions_by_id(target)
    assert s[S1]["end_reason"] == "crash"
    b_start = b.started["recv_ns"] if b.started else 0
    assert ns_of(s[S1]["ended_at"]) == (a.ended[0] if a.ended else b_start) // 1000 * 1000
    assert (s[S2]["restarted"], s[S2]["previous_session_id"]) == (True, S1)
    assert s[S2]["previous_session_ended"] == "crash"
    assert s[S2]["restart_source"] == ("recorder" if marker else "derived")
    assert summary.derived["participation_closed_by_crash"] == (0 if marker else 2)
    # the live session's own open market is not touched
    assert rows(target, f"SELECT leave_reason FROM {PARTICIPATION} WHERE session_id = {S2}") == [
        {"leave_reason": None}
    ]
    again = load(tmp_path, make_target(tmp_path))  # idempotent: nothing left to derive
    assert not again.loaded and "participation_closed_by_crash" not in again.derived


@pytest.mark.parametrize("new_style", [True, False], ids=["recorder-written", "derived"])
def test_clean_and_crash_restarts_are_both_flagged(
    tmp_path: Path, make_target: MakeTarget, new_style: bool
) -> None:
    a = SessionLog(S1)
    first: dict[str, Any] = NEW_START | {"previous_session": None} if new_style else {}
    a.session_start(**first)
    a.session_end("signal")
    b = restarted_session(recovered=False, new_style=new_style, prev_end="signal")
    b.session_end("duration")
    c = SessionLog(S3, start_ns=T0_NS + 4 * HOUR_NS)
    c.session_start(host="vm-2")  # another machine (old style): not a restart of S2
    for log in (a, b, c):
        write_segments(tmp_path, log)
    load(tmp_path, make_target(tmp_path))
    s = sessions_by_id(make_target(tmp_path))
    assert s[S1]["restarted"] is False
    assert (s[S2]["restarted"], s[S2]["previous_session_id"]) == (True, S1)
    assert (s[S2]["previous_session_ended"], s[S2]["previous_end_reason"]) == ("clean", "signal")
    assert s[S3]["restarted"] is False and s[S3]["previous_session_id"] is None
    for sid in (S1, S2):
        assert (s[sid]["environment"], s[sid]["exchange_env"]) == ("lifecycle_discovery", "demo")


def test_rest_mode_session_gets_the_specification_vocabulary(
    tmp_path: Path, make_target: MakeTarget
) -> None:
    a = SessionLog(S1)
    a.session_start(lifecycle_mode=False, environment="prod")  # the old payload shape
    write_segments(tmp_path, a)
    load(tmp_path, make_target(tmp_path))
    s = sessions_by_id(make_target(tmp_path))[S1]
    assert (s["environment"], s["exchange_env"], s["lifecycle_mode"]) == (
        "rest_discovery",
        "prod",
        False,
    )


# ------------------------------------------------------------------------- completed markets
def test_settlement_arriving_later_completes_the_market(
    tmp_path: Path, make_target: MakeTarget
) -> None:
    a = SessionLog(S1)
    a.session_start()
    open_s = T0_NS // 10**9
    for t in ("KXS-LATER-SEG", "KXS-LATER-SESSION", "KXS-AMENDED", "KXS-NEVER-SETTLED"):
        a.lifecycle(t, "created", open_ts=open_s, close_ts=open_s + 600)
        a.join(t)
    a.lifecycle(
        "KXS-LATER-SEG", "determined", result="no", determination_ts=open_s + 60,
        settlement_value="0.0085",
    )  # fmt: skip
    a.leave("KXS-LATER-SEG")
    a.lifecycle(
        "KXS-AMENDED", "determined", result="no", determination_ts=open_s + 61,
        settlement_value="0.0000",
    )  # fmt: skip
    a.leave("KXS-AMENDED")
    a.lifecycle(
        "KXS-LATER-SESSION", "determined", result="yes", determination_ts=open_s + 62,
        settlement_value="1.0000",
    )  # fmt: skip
    a.leave("KXS-LATER-SESSION")
    a.lifecycle("KXS-NEVER-SETTLED", "determined", result="yes", determination_ts=open_s + 63)
    a.leave("KXS-NEVER-SETTLED")
    cut = len(a.records)
    a.lifecycle("KXS-LATER-SEG", "settled", settled_ts=open_s + 3600)
    # a dispute: determined again (amended), then settled
    a.lifecycle(
        "KXS-AMENDED", "determined", result="yes", determination_ts=open_s + 900,
        settlement_value="1.0000",
    )  # fmt: skip
    a.lifecycle("KXS-AMENDED", "settled", settled_ts=open_s + 4000)
    a.session_end("signal")
    b = SessionLog(S2, start_ns=T0_NS + 2 * HOUR_NS)
    b.session_start()
    b.lifecycle("KXS-LATER-SESSION", "settled", settled_ts=open_s + 7000)
    _first, second = write_segments(tmp_path, a, [cut])

    hidden = tmp_path / "later"
    hidden.mkdir()
    os.rename(second, hidden / "a2.parquet")
    load(tmp_path, make_target(tmp_path))
    assert not rows(make_target(tmp_path), f"SELECT * FROM {COMPLETED_MARKETS}")

    os.rename(hidden / "a2.parquet", second)  # the next segment of the session is sealed
    load(tmp_path, make_target(tmp_path))
    target = make_target(tmp_path)
    done = {r["market_ticker"]: r for r in rows(target, f"SELECT * FROM {COMPLETED_MARKETS}")}
    assert set(done) == {"KXS-LATER-SEG", "KXS-AMENDED"}

    write_segments(tmp_path, b)  # the last settlement arrives in a later session
    load(tmp_path, make_target(tmp_path))
    target = make_target(tmp_path)
    done = {r["market_ticker"]: r for r in rows(target, f"SELECT * FROM {COMPLETED_MARKETS}")}
    assert set(done) == {"KXS-LATER-SEG", "KXS-AMENDED", "KXS-LATER-SESSION"}
    assert all(r["session_id"] == S1 for r in done.values())
    assert (done["KXS-LATER-SEG"]["settlement_price"], done["KXS-LATER-SEG"]["result"]) == (
        Decimal("0.008500"),
        "no",
    )
    assert done["KXS-LATER-SEG"]["settled_ts"] == open_s + 3600
    # the label follows the last determination, not the first
    assert (done["KXS-AMENDED"]["result"], done["KXS-AMENDED"]["settlement_price"]) == (
        "yes",
        Decimal("1.000000"),
    )
    later = done["KXS-LATER-SESSION"]
    assert (later["settled_session_id"], later["settlement_price"]) == (S2, Decimal("1.000000"))
    # the settled lifecycle row carries the settlement value the determination brought
    settled = {
        r["market_ticker"]: r
        for r in rows(target, f"SELECT * FROM {LIFECYCLE_EVENTS} WHERE event_type = 'settled'")
    }
    assert settled["KXS-LATER-SESSION"]["settlement_price"] == Decimal("1.000000")
    assert settled["KXS-LATER-SESSION"]["settled_ts"] == open_s + 7000
    assert settled["KXS-AMENDED"]["settlement_price"] == Decimal("1.000000")


def _fact(sid: int, seq: int, event: str, **kw: Any) -> LifecycleFact:
    base: dict[str, Any] = {
        "determination_ts": None,
        "settled_ts": None,
        "result": None,
        "settlement_price": None,
    }
    base.update(kw)
    return LifecycleFact(sid, seq, event, created_at=time_of(sid, seq), **base)


def time_of(sid: int, seq: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(sid % 1000 + seq, tz=UTC)


def test_completion_needs_created_and_determined_in_the_same_session() -> None:
    settled = _fact(3, 1, "settled")
    det = _fact(2, 5, "determined", result="yes", settlement_price=Decimal(1))
    # created in session 1, determined in session 2: no session saw the whole life
    assert completed_markets("T", [_fact(1, 1, "created"), det, settled]) == []
    # created and determined in session 2 (after a restart): session 2 completed it
    out = completed_markets("T", [_fact(2, 1, "created"), det, settled])
    assert [(r["session_id"], r["settled_session_id"]) for r in out] == [(2, 3)]
    # a settled that came before the determination does not complete it
    assert completed_markets("T", [_fact(2, 1, "created"), _fact(2, 2, "settled"), det]) == []


def test_derived_restart_prefers_the_recovered_session() -> None:
    from datetime import UTC, datetime

    def row(sid: int, t: int, **kw: Any) -> dict[str, Any]:
        base = {
            "session_id": sid,
            "started_at": datetime.fromtimestamp(t, tz=UTC),
            "ended_at": None,
            "end_reason": None,
            "host": "h",
            "shard": "0/1",
            "recovered_from": None,
            "restart_source": "derived",
        }
        return base | kw

    got = derive_restarts(
        [row(1, 10), row(2, 20, end_reason="signal", ended_at=1), row(3, 30, recovered_from=["1"])]
    )
    assert (got[1]["ended_at"], got[1]["end_reason"]) == (
        datetime.fromtimestamp(30, tz=UTC),
        "crash",
    )
    assert got[1]["restarted"] is False
    assert got[3]["previous_session_id"] == 1 and got[3]["previous_session_ended"] == "crash"
    assert got[2]["previous_session_id"] == 1 and got[2]["previous_session_ended"] == "crash"


# --------------------------------------------------------------------- the cheap nightly index
def test_nightly_run_opens_only_new_files(tmp_path: Path, make_target: MakeTarget) -> None:
    a = crashed_session(marker=True, new_style=True)
    paths = write_segments(tmp_path, a, [3, 6])
    first = load(tmp_path, make_target(tmp_path))
    assert (len(first.loaded), first.hashed) == (3, 3)
    again = load(tmp_path, make_target(tmp_path))
    assert (again.hashed, again.already_loaded, again.loaded) == (0, 3, [])

    os.utime(paths[0], ns=(time.time_ns(), time.time_ns()))  # touched, same bytes
    touched = load(tmp_path, make_target(tmp_path))
    assert (touched.hashed, touched.loaded, touched.skipped) == (1, [], [])
    assert load(tmp_path, make_target(tmp_path)).hashed == 0  # its new mtime is remembered

    # A loaded file's bytes changed under its path: an error, never loaded a second time.
    table = pq.read_table(paths[1])
    write_table(paths[1], table.slice(0, 1))
    before = rows(make_target(tmp_path), f"SELECT count(*) AS n FROM {PARTICIPATION}")
    changed = load(tmp_path, make_target(tmp_path))
    assert [s.relpath for s in changed.skipped] == [paths[1].relative_to(tmp_path).as_posix()]
    assert "changed after it was loaded" in changed.skipped[0].reason
    assert not changed.loaded
    assert rows(make_target(tmp_path), f"SELECT count(*) AS n FROM {PARTICIPATION}") == before


def test_cli_reports_a_changed_file_with_exit_3(tmp_path: Path) -> None:
    a = crashed_session(marker=True, new_style=True)
    (path,) = write_segments(tmp_path, a)
    assert main(["--data-dir", str(tmp_path), "--no-training"]) == 0
    write_table(path, pq.read_table(path).slice(0, 2))
    assert main(["--data-dir", str(tmp_path), "--no-training"]) == EXIT_SKIPPED


# ----------------------------------------------------------------------- a wrong data directory
def test_missing_or_unrecorded_data_dir_is_refused_and_nothing_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo" / "data"
    assert main(["--data-dir", str(missing)]) == EXIT_NO_DATA
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and "does not exist" in err[0]
    assert not (tmp_path / "typo").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--data-dir", str(empty)]) == EXIT_NO_DATA
    assert "never been written by a recorder" in capsys.readouterr().err
    assert list(empty.iterdir()) == []


def test_other_commands_refuse_a_wrong_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from materialize import demo, objectstore, views

    missing = tmp_path / "nope"
    from materialize import retention

    assert views.main([str(missing), "SELECT 1"]) == EXIT_NO_DATA
    assert objectstore.main(["ship", str(missing), f"file://{tmp_path / 'bucket'}"]) == 66
    assert retention.run(["--data-dir", str(missing), "--delete-older-than", "3"]) == 66
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all("does not exist" in line for line in err)
    assert not missing.exists() and not (tmp_path / "bucket").exists()
    # demo data never goes into a directory that holds a recorder's data
    real = tmp_path / "real"
    (real / "segments").mkdir(parents=True)
    assert demo.main(["--data-dir", str(real), "--seconds", "1"]) == 66
    assert "already holds recorder data" in capsys.readouterr().err
    assert [p.name for p in real.iterdir()] == ["segments"]


@pytest.mark.postgres
def test_missing_data_dir_is_refused_before_the_database(tmp_path: Path, pg_dsn: str) -> None:
    assert main(["--data-dir", str(tmp_path / "nope"), "--pg", pg_dsn]) == EXIT_NO_DATA
    target = PostgresTarget(pg_dsn)
    try:
        tables = target.fetch("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", ())
    finally:
        target.close()
    assert tables == [(0,)]  # not even the schema was created


# ------------------------------------------------------------------ the real recorder, kill -9
def test_real_recorder_killed_then_restarted_leaves_no_open_participation(
    tmp_path: Path, make_target: MakeTarget
) -> None:
    from schemas.catalog import iter_live_batches
    from simulator.server import SimConfig, start_in_thread
    from tests.recorder.harness import run_recorder, start_recorder
    from tests.support.sim import lively
    from tests.support.wait import wait_for

    sim = start_in_thread(SimConfig(keys_dir=tmp_path / "keys", generator=lively(lifetime="60:90")))
    data = tmp_path / "data"
    try:

        def joined_in_live() -> int:
            n = 0
            for part in (data / "live").rglob("*.arrows"):
                for batch, _ in iter_live_batches(part):
                    n += batch.column("msg_type").to_pylist().count("market_joined")
            return n

        proc = start_recorder(sim, data, "--duration", "120")
        try:  # (a recorder that dies on its own ends the wait at once, with its stderr below)
            wait_for(
                lambda: proc.poll() is not None or joined_in_live() >= 2,
                "two markets joined and flushed",
                60,
            )
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            _out, err = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL, err
        done = run_recorder(sim, data, "--duration", "2")
        assert done.returncode == 0, done.stderr
    finally:
        sim.stop()
    load(data, make_target(data))
    target = make_target(data)
    s = sessions_by_id(target)
    assert len(s) == 2
    dead, alive = sorted(s)
    assert s[dead]["end_reason"] == "crash"
    assert (s[alive]["restarted"], s[alive]["previous_session_id"]) == (True, dead)
    assert s[alive]["previous_session_ended"] == "crash"
    parts = rows(target, f"SELECT * FROM {PARTICIPATION} WHERE session_id = {dead}")
    assert len(parts) >= 2
    assert all(p["left_at"] is not None for p in parts)
    assert "crash" in {p["leave_reason"] for p in parts}
    assert all(p["left_at"] >= p["joined_at"] for p in parts)


# ------------------------------------------------------------ analyst views agree with the tables
def _scenario_crash(data: Path, marker: bool) -> None:
    write_segments(data, crashed_session(marker=marker, new_style=marker))
    write_segments(data, restarted_session(recovered=True, new_style=marker, prev_end="crash"))


def _scenario_restarts(data: Path, new_style: bool) -> None:
    a = SessionLog(S1)
    first: dict[str, Any] = NEW_START | {"previous_session": None} if new_style else {}
    a.session_start(**first)
    a.lifecycle("KXV-1", "created", open_ts=T0_NS // 10**9, close_ts=T0_NS // 10**9 + 60)
    a.join("KXV-1")
    a.lifecycle("KXV-1", "determined", result="no", settlement_value="0.0000")
    a.leave("KXV-1")
    a.lifecycle("KXV-1", "settled", settled_ts=T0_NS // 10**9 + 90)
    a.session_end("signal")
    b = restarted_session(recovered=False, new_style=new_style, prev_end="signal")
    b.lifecycle("KXV-1", "determined", result="yes", settlement_value="1.0000")  # amended
    c = SessionLog(S3, start_ns=T0_NS + 4 * HOUR_NS)
    c.session_start(host="vm-2")
    for log in (a, b, c):
        write_segments(data, log)


@pytest.mark.parametrize(
    "scenario",
    ["crash-marker", "crash-before-marker", "restarts-recorder", "restarts-derived"],
)
def test_analyst_views_equal_the_loaded_tables(tmp_path: Path, scenario: str) -> None:
    """``materialize.views`` rebuilds the same rows from the segments alone (no database)."""
    from materialize.views import connect

    data = tmp_path / "data"
    if scenario.startswith("crash"):
        _scenario_crash(data, scenario == "crash-marker")
    else:
        _scenario_restarts(data, scenario == "restarts-recorder")
    target = DuckDBTarget(data / "warehouse.duckdb")
    load(data, target)
    target.close()
    con = connect(data)
    con.execute(f"ATTACH '{data / 'warehouse.duckdb'}' AS wh (READ_ONLY)")
    for name in (SESSIONS, PARTICIPATION, LIFECYCLE_EVENTS, COMPLETED_MARKETS):
        for a, b in ((f"temp.main.{name}", f"wh.{name}"), (f"wh.{name}", f"temp.main.{name}")):
            diff = con.execute(f"FROM {a} EXCEPT ALL FROM {b}").fetchall()
            assert diff == [], f"{name}: rows of {a} not in {b}: {diff}"
    n = con.execute(f"SELECT count(*) FROM wh.{SESSIONS} WHERE restarted").fetchone()
    assert n == (1,)
