"""A session log that spans several UTC days, loaded into PostgreSQL with or without day
partitions, and what the database then holds: shared by the partitioning tests and the
database retention tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from materialize.loader import NoProgress, load
from materialize.targets import PostgresTarget
from schemas.tables import DAY_NS, PARTITION_KEYS, day_of_ns, day_partition_name
from tests.support.segments import T0_NS, SessionLog

SESSION = 1_767_225_600_999_0007
STEP_NS = DAY_NS // 8  # records 3 h apart: a short log spans several UTC days


def multi_day_log(session_id: int = SESSION, start_ns: int = T0_NS) -> SessionLog:
    """One session over about four UTC days: deltas, snapshots and gaps on every day."""
    log = SessionLog(session_id, start_ns=start_ns, step_ns=STEP_NS)
    log.session_start()
    log.connected()
    log.lifecycle("KXP-M1", "created", open_ts=start_ns // 10**9, close_ts=start_ns // 10**9 + 1)
    log.join("KXP-M1")
    seq = 1
    for i in range(24):
        if i % 6 == 0:
            log.snapshot("KXP-M1", 2, seq, yes=[["0.0085", "2.50"]], no=[["0.9900", "1.00"]])
        elif i % 7 == 3:
            log.gap(2, seq, seq + 1, ["KXP-M1"])
            seq += 1
        else:
            log.delta("KXP-M1", 2, seq, "yes" if i % 2 else "no", "0.0085", "2.50")
        seq += 1
    log.lifecycle("KXP-M1", "determined", result="yes", determination_ts=1, settlement_value="1")
    log.leave("KXP-M1")
    log.session_end("signal")
    return log


def pg_rows(dsn: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as con:
        return con.execute(f"SELECT * FROM {table} ORDER BY session_id, record_seq").fetchall()


def partition_of_each_row(dsn: str, table: str) -> dict[tuple[int, int], str]:
    key = PARTITION_KEYS[table]
    with psycopg.connect(dsn) as con:
        rows = con.execute(
            f"SELECT session_id, record_seq, tableoid::regclass::text, {key} FROM {table}"
        ).fetchall()
    out = {}
    for session_id, seq, part, ns in rows:
        assert part == day_partition_name(table, day_of_ns(ns)), (table, seq, part)
        out[(session_id, seq)] = part
    return out


def load_into(data_dir: Path, dsn: str, *, partition_by_day: bool) -> Any:
    target = PostgresTarget(dsn, partition_by_day=partition_by_day)
    try:
        summary = load(data_dir, target, progress=NoProgress())
        return summary, target.partitioned_tables()
    finally:
        target.close()
