"""The nightly job's DDL: on a complete schema PostgreSQL gets none, so it takes no table lock
(an ``ADD COLUMN IF NOT EXISTS`` would wait for every open analyst query, and queue every later
one behind it); on an older schema it gets exactly what is missing."""

from __future__ import annotations

import re

import psycopg
import pytest

from materialize.targets import PostgresTarget, missing_ddl
from schemas.tables import SESSIONS, ddl, partitioned_ddl


def _catalog(statements: list[str]) -> tuple[set[str], set[tuple[str, str]]]:
    """What a database holds once ``statements`` ran (read from the statements themselves)."""
    text = "\n".join(statements)
    relations = set(re.findall(r"(?:TABLE|INDEX) IF NOT EXISTS (\w+)", text))
    columns = set(re.findall(r"ALTER TABLE (\w+) ADD COLUMN IF NOT EXISTS (\w+)", text))
    return relations, columns


def test_a_complete_schema_needs_no_ddl_and_an_empty_one_needs_all_but_the_drops() -> None:
    for stmts in (ddl("postgres"), partitioned_ddl()):
        relations, columns = _catalog(stmts)
        assert missing_ddl(stmts, relations, columns) == []
        assert missing_ddl(stmts, set(), set()) == [
            s for s in stmts if not s.startswith("DROP INDEX")
        ]
        relations.discard(SESSIONS)
        columns.discard((SESSIONS, "last_record_at"))
        again = missing_ddl(stmts, relations, columns)
        assert len(again) == 2 and all(SESSIONS in s for s in again)


@pytest.mark.postgres
def test_a_second_run_takes_no_lock_that_waits_for_readers_or_writers(pg_dsn: str) -> None:
    first = PostgresTarget(pg_dsn)
    first.ensure_schema()
    first.close()
    with psycopg.connect(pg_dsn) as other:  # an analyst reading, a writer writing, both open
        other.execute(f"LOCK TABLE {SESSIONS} IN ACCESS SHARE MODE")
        other.execute("LOCK TABLE rl_orderbook_deltas IN ROW EXCLUSIVE MODE")
        target = PostgresTarget(pg_dsn)
        try:
            target.con.execute("SET lock_timeout = '5s'")  # a lock wait fails instead of hanging
            target.ensure_schema()
        finally:
            target.close()
        other.rollback()


@pytest.mark.postgres
def test_an_older_schema_gets_what_it_lacks(pg_dsn: str) -> None:
    t = PostgresTarget(pg_dsn)
    t.ensure_schema()
    t.con.execute(f"ALTER TABLE {SESSIONS} DROP COLUMN last_record_at")
    t.con.execute("DROP INDEX idx_lifecycle_event_type")
    t.ensure_schema()
    cols = {
        r[0]
        for r in t.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (SESSIONS,)
        )
    }
    index = t.con.execute("SELECT to_regclass('idx_lifecycle_event_type')").fetchone()
    t.close()
    assert "last_record_at" in cols and index is not None and index[0] is not None
