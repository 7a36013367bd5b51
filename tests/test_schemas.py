"""The shared contract: DDL applies twice on real servers, units are exact."""

from __future__ import annotations

import duckdb
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import LOG_SCHEMA, SCHEMA_VERSION, SCHEMA_VERSION_KEY, parse_price, parse_size
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
        idx = con.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname='rl_market_participation_open_idx'"
        ).fetchone()
        assert idx is not None and "WHERE (left_at IS NULL)" in idx[0]
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
