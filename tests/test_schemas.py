"""The shared contract: DDL applies twice on real servers, units are exact."""

from __future__ import annotations

import duckdb
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import LOG_SCHEMA, SCHEMA_VERSION, SCHEMA_VERSION_KEY, parse_price, parse_size
from schemas.decisions import MarketJoined, decision_or_none, ticker_of
from schemas.tables import ALL_TABLES, ddl
from schemas.units import price_to_decimal, size_to_decimal


@pytest.mark.postgres
def test_postgres_ddl_is_idempotent(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as con:
        for _ in range(2):
            for stmt in ddl("postgres"):
                con.execute(stmt)
        rows = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='public'"
        ).fetchall()
        assert {r[0] for r in rows} == set(ALL_TABLES)
        # The specification's indexes: exact names, tables, columns (and the partial predicate).
        idx: dict[str, str] = dict(
            con.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
            ).fetchall()
        )
        assert idx["idx_lifecycle_session_market"].endswith(
            "ON public.rl_market_lifecycle_events USING btree (session_id, market_ticker)"
        )
        assert idx["idx_lifecycle_event_type"].endswith(
            "ON public.rl_market_lifecycle_events USING btree (event_type)"
        )
        assert idx["idx_participation_active"].endswith(
            "ON public.rl_market_participation USING btree (session_id, left_at) "
            "WHERE (left_at IS NULL)"
        )
        assert "rl_market_participation_open_idx" not in idx  # replaced by the spec's
        # The lifecycle table stays lossless: no CHECK constraint on it at all.
        checks = con.execute(
            "SELECT count(*) FROM pg_constraint "
            "WHERE conrelid='rl_market_lifecycle_events'::regclass AND contype='c'"
        ).fetchone()
        assert checks == (0,)
        pk = con.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid='rl_market_participation'::regclass AND contype='p'"
        ).fetchone()
        assert pk == ("PRIMARY KEY (session_id, market_ticker, joined_at)",)


def test_duckdb_ddl_is_idempotent() -> None:
    con = duckdb.connect()
    for _ in range(2):
        for stmt in ddl("duckdb"):
            con.execute(stmt)
    names = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    assert names == set(ALL_TABLES)
    idx = {
        r[0]: r[1] for r in con.execute("SELECT index_name, sql FROM duckdb_indexes()").fetchall()
    }
    for name, cols in (
        ("idx_lifecycle_session_market", "(session_id, market_ticker)"),
        ("idx_lifecycle_event_type", "(event_type)"),
        ("idx_participation_active", "(session_id, left_at)"),
    ):
        assert cols in idx[name]


@pytest.mark.postgres
def test_warehouse_made_before_upgrades_in_place(pg_dsn: str) -> None:
    """An existing warehouse (the first DDL) gains the new columns and indexes, rows kept."""
    old = [
        "CREATE TABLE rl_orderbook_sessions (session_id BIGINT PRIMARY KEY, "
        "started_at TIMESTAMPTZ NOT NULL, lifecycle_mode BOOLEAN NOT NULL, environment TEXT)",
        "CREATE TABLE rl_market_participation (session_id BIGINT NOT NULL, "
        "market_ticker TEXT NOT NULL, joined_at TIMESTAMPTZ NOT NULL, left_at TIMESTAMPTZ, "
        "PRIMARY KEY (session_id, market_ticker, joined_at))",
        "CREATE INDEX rl_market_participation_open_idx ON rl_market_participation "
        "(market_ticker) WHERE left_at IS NULL",
        "INSERT INTO rl_orderbook_sessions VALUES (1, now(), true, 'prod')",
    ]
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        for stmt in old:
            con.execute(stmt)
        for stmt in ddl("postgres"):
            con.execute(stmt)
        row = con.execute(
            "SELECT environment, exchange_env, restarted FROM rl_orderbook_sessions"
        ).fetchone()
        assert row == ("prod", None, None)  # values are materialize's to migrate, not the DDL's
        names = {r[0] for r in con.execute("SELECT indexname FROM pg_indexes").fetchall()}
        assert "idx_participation_active" in names
        assert "rl_market_participation_open_idx" not in names


def test_log_schema_carries_version() -> None:
    assert LOG_SCHEMA.metadata[SCHEMA_VERSION_KEY] == SCHEMA_VERSION.encode()
    assert LOG_SCHEMA.names[:2] == ["session_id", "record_seq"]


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("0.54", 540_000),
        ("0.540", 540_000),
        ("0.5400", 540_000),
        ("0.0085", 8_500),
        ("1.000001", 1_000_001),
    ],
)
def test_price_strings_map_to_one_level(text: str, micros: int) -> None:
    assert parse_price(text) == micros


def test_legacy_integers_are_cents_and_whole_contracts() -> None:
    assert parse_price(54) == 540_000
    assert parse_size(10) == 1_000
    assert parse_size("10.67") == 1_067


@pytest.mark.parametrize(
    "bad",
    [
        "0.0000001",
        "abc",
        "NaN",
        "1e400x",
        0.5,
        "1.00000000000000000000000000001",
        "1e999999",
        "9" * 30,
    ],
)
def test_inexact_or_bad_prices_raise(bad: str | float) -> None:
    with pytest.raises(ValueError):
        parse_price(bad)


@given(st.integers(min_value=0, max_value=10**12))
def test_price_round_trips_exactly(micros: int) -> None:
    assert parse_price(str(price_to_decimal(micros))) == micros


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_size_round_trips_exactly(centi: int) -> None:
    assert parse_size(str(size_to_decimal(centi))) == centi


def test_digit_separators_are_not_decimals() -> None:
    """Python's Decimal reads "1_000" as 1000; no exchange decimal has separators, and the
    recorder's fast parser refuses them: the one exact parser must agree."""
    for text in ("0_", "1_000", "0.5_4", "_1"):
        with pytest.raises(ValueError):
            parse_price(text)
        with pytest.raises(ValueError):
            parse_size(text)


def test_a_decision_that_does_not_read_is_none_and_its_column_still_names_the_market() -> None:
    """Training and quality read decisions as structs and never stop at one bad record."""
    good = decision_or_none(
        "market_joined", b'{"market_ticker":"KX-A","reason":"created","mid_lifecycle":false,"x":1}'
    )
    assert isinstance(good, MarketJoined) and good.extra == {"x": 1}
    assert ticker_of(good, "KX-COLUMN") == "KX-A"
    for raw in (b"[1]", b"not json", b'{"market_ticker":"KX-A"}'):  # not an object, missing fields
        bad = decision_or_none("market_joined", raw)
        assert bad is None and ticker_of(bad, "KX-COLUMN") == "KX-COLUMN"
    assert ticker_of(None, None) is None
