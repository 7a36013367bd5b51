"""SQL tables that materialize fills, for PostgreSQL and for the embedded DuckDB default.

One definition, two dialects: ``ddl("postgres")`` and ``ddl("duckdb")`` return idempotent
statements (``CREATE ... IF NOT EXISTS``), so applying them twice is harmless.

Units: prices are micro-dollars and sizes centi-contracts as BIGINT (``schemas.units``); the spec's
``settlement_price`` is an exact NUMERIC in dollars. Times from the recorder are ``*_ns`` BIGINT
(ns since epoch, UTC) plus TIMESTAMPTZ where the spec names a timestamp.

``rl_market_lifecycle_events.event_type`` has **no CHECK constraint**: the exchange documents eight
types and adds new ones without notice, and a CHECK would make a load lose an event. Every type is
stored verbatim; ``event_type_documented`` says whether it is one of ``DOCUMENTED_EVENT_TYPES``.
"""

from __future__ import annotations

from typing import Literal

Dialect = Literal["postgres", "duckdb"]

DDL_VERSION = "1"

DOCUMENTED_EVENT_TYPES: tuple[str, ...] = (
    "created",
    "activated",
    "deactivated",
    "close_date_updated",
    "determined",
    "settled",
    "price_level_structure_updated",
    "metadata_updated",
)

# Table names, the only identifiers SQL elsewhere may interpolate.
SESSIONS = "rl_orderbook_sessions"
LIFECYCLE_EVENTS = "rl_market_lifecycle_events"
PARTICIPATION = "rl_market_participation"
SNAPSHOTS = "rl_orderbook_snapshots"
DELTAS = "rl_orderbook_deltas"
GAPS = "rl_sequence_gaps"
LOADED_SEGMENTS = "rl_loaded_segments"

ALL_TABLES: tuple[str, ...] = (
    SESSIONS,
    LIFECYCLE_EVENTS,
    PARTICIPATION,
    SNAPSHOTS,
    DELTAS,
    GAPS,
    LOADED_SEGMENTS,
)


def _tables(d: Dialect) -> list[str]:
    json = "JSONB" if d == "postgres" else "JSON"
    big_array = "BIGINT[]"
    text_array = "TEXT[]" if d == "postgres" else "VARCHAR[]"
    return [
        f"""CREATE TABLE IF NOT EXISTS {SESSIONS} (
    session_id      BIGINT PRIMARY KEY,
    started_at      TIMESTAMPTZ NOT NULL,
    ended_at        TIMESTAMPTZ,
    end_reason      TEXT,
    lifecycle_mode  BOOLEAN NOT NULL,
    environment     TEXT,
    host            TEXT,
    shard           TEXT,
    version         TEXT,
    config          {json},
    recovered_from  {text_array}
)""",
        f"""CREATE TABLE IF NOT EXISTS {LIFECYCLE_EVENTS} (
    session_id            BIGINT NOT NULL,
    record_seq            BIGINT NOT NULL,
    market_ticker         TEXT NOT NULL,
    event_type            TEXT NOT NULL,
    event_type_documented BOOLEAN NOT NULL,
    event_timestamp_ms    BIGINT,
    open_ts               BIGINT,
    close_ts              BIGINT,
    determination_ts      BIGINT,
    settled_ts            BIGINT,
    result                TEXT,
    settlement_price      NUMERIC(18, 6),
    raw                   TEXT NOT NULL,
    created_at            TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session_id, record_seq)
)""",
        f"""CREATE TABLE IF NOT EXISTS {PARTICIPATION} (
    session_id     BIGINT NOT NULL,
    market_ticker  TEXT NOT NULL,
    joined_at      TIMESTAMPTZ NOT NULL,
    left_at        TIMESTAMPTZ,
    join_reason    TEXT NOT NULL,
    leave_reason   TEXT,
    mid_lifecycle  BOOLEAN NOT NULL,
    late_by_ms     BIGINT,
    PRIMARY KEY (session_id, market_ticker, joined_at)
)""",
        f"""CREATE TABLE IF NOT EXISTS {SNAPSHOTS} (
    session_id     BIGINT NOT NULL,
    record_seq     BIGINT NOT NULL,
    recv_ns        BIGINT NOT NULL,
    conn           SMALLINT,
    epoch          INTEGER,
    sid            BIGINT,
    seq            BIGINT,
    market_ticker  TEXT NOT NULL,
    yes_prices     {big_array} NOT NULL,
    yes_sizes      {big_array} NOT NULL,
    no_prices      {big_array} NOT NULL,
    no_sizes       {big_array} NOT NULL,
    PRIMARY KEY (session_id, record_seq)
)""",
        f"""CREATE TABLE IF NOT EXISTS {DELTAS} (
    session_id     BIGINT NOT NULL,
    record_seq     BIGINT NOT NULL,
    recv_ns        BIGINT NOT NULL,
    conn           SMALLINT,
    epoch          INTEGER,
    sid            BIGINT,
    seq            BIGINT,
    market_ticker  TEXT NOT NULL,
    side           TEXT NOT NULL,
    price          BIGINT NOT NULL,
    delta          BIGINT NOT NULL,
    ts_ms          BIGINT,
    PRIMARY KEY (session_id, record_seq)
)""",
        f"""CREATE TABLE IF NOT EXISTS {GAPS} (
    session_id     BIGINT NOT NULL,
    record_seq     BIGINT NOT NULL,
    detected_ns    BIGINT NOT NULL,
    conn           SMALLINT,
    epoch          INTEGER,
    sid            BIGINT,
    expected_seq   BIGINT,
    got_seq        BIGINT,
    market_tickers {text_array},
    kind           TEXT NOT NULL,
    PRIMARY KEY (session_id, record_seq)
)""",
        f"""CREATE TABLE IF NOT EXISTS {LOADED_SEGMENTS} (
    content_sha256 TEXT PRIMARY KEY,
    path           TEXT NOT NULL,
    session_id     BIGINT,
    rows           BIGINT NOT NULL,
    schema_version TEXT NOT NULL,
    loaded_at      TIMESTAMPTZ NOT NULL
)""",
    ]


def _indexes(d: Dialect) -> list[str]:
    stmts = [
        f"CREATE INDEX IF NOT EXISTS {DELTAS}_market_idx ON {DELTAS} (market_ticker, session_id)",
        f"CREATE INDEX IF NOT EXISTS {SNAPSHOTS}_market_idx "
        f"ON {SNAPSHOTS} (market_ticker, session_id)",
        f"CREATE INDEX IF NOT EXISTS {LIFECYCLE_EVENTS}_market_idx "
        f"ON {LIFECYCLE_EVENTS} (market_ticker)",
    ]
    if d == "postgres":
        # The spec's partial index: "which markets are being recorded right now" stays cheap.
        stmts.append(
            f"CREATE INDEX IF NOT EXISTS {PARTICIPATION}_open_idx "
            f"ON {PARTICIPATION} (market_ticker) WHERE left_at IS NULL"
        )
    return stmts


def ddl(dialect: Dialect) -> list[str]:
    """Idempotent DDL statements for ``dialect``, in dependency order."""
    return _tables(dialect) + _indexes(dialect)
