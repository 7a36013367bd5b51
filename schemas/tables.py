"""SQL tables that materialize fills, for PostgreSQL and for the embedded DuckDB default.

One definition, two dialects: ``ddl("postgres")`` and ``ddl("duckdb")`` return idempotent
statements (``CREATE ... IF NOT EXISTS``), so applying them twice is harmless.

Units: prices are micro-dollars and sizes centi-contracts as BIGINT (``schemas.units``); the spec's
``settlement_price`` is an exact NUMERIC in dollars. Times from the recorder are ``*_ns`` BIGINT
(ns since epoch, UTC) plus TIMESTAMPTZ where the spec names a timestamp.

``rl_market_lifecycle_events.event_type`` has **no CHECK constraint**: the exchange documents eight
types and adds new ones without notice, and a CHECK would make a load lose an event. Every type is
stored verbatim; ``event_type_documented`` says whether it is one of ``DOCUMENTED_EVENT_TYPES``.

Sessions speak the specification's vocabulary: ``environment`` is the discovery mode
(``lifecycle_discovery`` or ``rest_discovery``), ``exchange_env`` the exchange (prod/demo/custom).
Every session that follows another on the same data directory is flagged ``restarted`` with how the
previous one ended (``clean``/``crash``/``unknown``), for data-quality tracking.
``rl_session_completed_markets`` lists each session's completed markets (created and determined in
the session, settled then or later), kept current by materialize as settlements arrive.

Indexes: the specification's three by their exact names and columns (``idx_lifecycle_*``,
``idx_participation_active``; DuckDB has no partial indexes, so there it covers every row), plus
ours that serve documented queries (a market's book and lifecycle timeline).
Columns added after a warehouse was created are added by ``ALTER TABLE ... ADD COLUMN IF NOT
EXISTS`` (``MIGRATIONS``), so an existing warehouse upgrades in place.
"""

from __future__ import annotations

import datetime as dt
import re
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
COMPLETED_MARKETS = "rl_session_completed_markets"

ALL_TABLES: tuple[str, ...] = (
    SESSIONS,
    LIFECYCLE_EVENTS,
    PARTICIPATION,
    SNAPSHOTS,
    DELTAS,
    GAPS,
    LOADED_SEGMENTS,
    COMPLETED_MARKETS,
)

DISCOVERY_LIFECYCLE = "lifecycle_discovery"
DISCOVERY_REST = "rest_discovery"
"""The specification's ``environment`` values (the discovery mode)."""
PREVIOUS_ENDED = ("clean", "crash", "unknown")


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
    recovered_from  {text_array},
    exchange_env    TEXT,
    restarted       BOOLEAN,
    previous_session_id    BIGINT,
    previous_session_ended TEXT,
    previous_end_reason    TEXT,
    restart_source  TEXT,
    last_record_at  TIMESTAMPTZ
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
    loaded_at      TIMESTAMPTZ NOT NULL,
    size           BIGINT,
    mtime_ns       BIGINT
)""",
        f"""CREATE TABLE IF NOT EXISTS {COMPLETED_MARKETS} (
    session_id         BIGINT NOT NULL,
    market_ticker      TEXT NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    determined_at      TIMESTAMPTZ NOT NULL,
    settled_at         TIMESTAMPTZ NOT NULL,
    determination_ts   BIGINT,
    settled_ts         BIGINT,
    result             TEXT,
    settlement_price   NUMERIC(18, 6),
    settled_session_id BIGINT NOT NULL,
    PRIMARY KEY (session_id, market_ticker)
)""",
    ]


MIGRATIONS: tuple[tuple[str, str, str], ...] = (
    (SESSIONS, "exchange_env", "TEXT"),
    (SESSIONS, "restarted", "BOOLEAN"),
    (SESSIONS, "previous_session_id", "BIGINT"),
    (SESSIONS, "previous_session_ended", "TEXT"),
    (SESSIONS, "previous_end_reason", "TEXT"),
    (SESSIONS, "restart_source", "TEXT"),
    (SESSIONS, "last_record_at", "TIMESTAMPTZ"),
    (LOADED_SEGMENTS, "size", "BIGINT"),
    (LOADED_SEGMENTS, "mtime_ns", "BIGINT"),
)
"""``(table, column, type)`` added since the first DDL; applied to warehouses created before."""


def _migrations() -> list[str]:
    return [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {sql_type}"
        for table, column, sql_type in MIGRATIONS
    ]


def _indexes(d: Dialect) -> list[str]:
    stmts = [
        f"CREATE INDEX IF NOT EXISTS {DELTAS}_market_idx ON {DELTAS} (market_ticker, session_id)",
        f"CREATE INDEX IF NOT EXISTS {SNAPSHOTS}_market_idx "
        f"ON {SNAPSHOTS} (market_ticker, session_id)",
        # One market's lifecycle timeline (notebooks, the completed-markets refresh).
        f"CREATE INDEX IF NOT EXISTS {LIFECYCLE_EVENTS}_market_idx "
        f"ON {LIFECYCLE_EVENTS} (market_ticker)",
        # The specification's indexes, by its names and columns.
        f"CREATE INDEX IF NOT EXISTS idx_lifecycle_session_market "
        f"ON {LIFECYCLE_EVENTS} (session_id, market_ticker)",
        f"CREATE INDEX IF NOT EXISTS idx_lifecycle_event_type ON {LIFECYCLE_EVENTS} (event_type)",
        # Replaced by idx_participation_active (same question, the spec's columns).
        f"DROP INDEX IF EXISTS {PARTICIPATION}_open_idx",
    ]
    active = f"CREATE INDEX IF NOT EXISTS idx_participation_active ON {PARTICIPATION} "
    if d == "postgres":
        # "Which markets are active (being recorded) right now", per session, stays cheap.
        stmts.append(active + "(session_id, left_at) WHERE left_at IS NULL")
    else:
        stmts.append(active + "(session_id, left_at)")  # DuckDB has no partial indexes
    return stmts


def ddl(dialect: Dialect) -> list[str]:
    """Idempotent DDL statements for ``dialect``, in dependency order."""
    return _tables(dialect) + _migrations() + _indexes(dialect)


# ------------------------------------------------------------------------------------------------
# PostgreSQL partitioned by receive day (``kalshi-materialize --pg-partition-by-day``)
# ------------------------------------------------------------------------------------------------

DAY_NS = 86_400 * 10**9
_UNIX_EPOCH_DAY = dt.date(1970, 1, 1)

PARTITION_KEYS: dict[str, str] = {DELTAS: "recv_ns", SNAPSHOTS: "recv_ns", GAPS: "detected_ns"}
"""The big tables, partitioned by ``RANGE`` on the receive time in ns (UTC): one partition holds
one UTC day ``[midnight, next midnight)``. The key is the existing BIGINT column rather than a
``recv_day date`` column because PostgreSQL cannot partition on a generated column, and a plain
column would have to be filled by every writer; a range of ns *is* the receive day. The primary
keys gain the key (PostgreSQL requires it); ``(session_id, record_seq)`` stays unique because a
record's receive time is part of the record. Sessions, participation, lifecycle events and the
manifest stay unpartitioned: they are small and their rows are updated across days."""

_PK = "PRIMARY KEY (session_id, record_seq)"


def partitioned_ddl() -> list[str]:
    """``ddl("postgres")`` with the :data:`PARTITION_KEYS` tables declared ``PARTITION BY RANGE``.

    Derived from the one table definition (same columns, same indexes, which PostgreSQL creates
    on every partition), so the two layouts cannot drift apart."""
    out: list[str] = []
    for stmt in ddl("postgres"):
        for table, key in PARTITION_KEYS.items():
            if stmt.startswith(f"CREATE TABLE IF NOT EXISTS {table} ("):
                if _PK not in stmt:  # pragma: no cover - caught by the tests of this module
                    raise ValueError(f"{table}: expected {_PK} in its DDL")
                stmt = stmt.replace(_PK, f"PRIMARY KEY (session_id, record_seq, {key})")
                stmt += f" PARTITION BY RANGE ({key})"
        out.append(stmt)
    return out


def day_of_ns(ns: int) -> dt.date:
    """The UTC day holding ``ns`` (ns since the epoch), exact integer arithmetic."""
    return _UNIX_EPOCH_DAY + dt.timedelta(days=ns // DAY_NS)


def day_bounds_ns(day: dt.date) -> tuple[int, int]:
    """``[start, end)`` of a UTC day in ns since the epoch: one partition's range."""
    start = (day - _UNIX_EPOCH_DAY).days * DAY_NS
    return start, start + DAY_NS


def day_partition_name(table: str, day: dt.date) -> str:
    """``rl_orderbook_deltas_p20260101``: the partition of ``table`` for ``day``."""
    if table not in PARTITION_KEYS:
        raise ValueError(f"{table} is not partitioned by day")
    return f"{table}_p{day:%Y%m%d}"


_RANGE_BOUND = re.compile(r"FOR VALUES FROM \((?P<lo>[^)]*)\) TO \((?P<hi>[^)]*)\)")


def parse_range_bound(expr: str) -> tuple[int | None, int | None] | None:
    """``(start, end)`` of a one-column RANGE partition from ``pg_get_expr(relpartbound, oid)``
    (``None`` for ``MINVALUE`` / ``MAXVALUE``); ``None`` for ``DEFAULT`` or any other shape."""
    m = _RANGE_BOUND.fullmatch(expr.strip())
    if m is None:
        return None
    out: list[int | None] = []
    for text in (m["lo"], m["hi"]):
        value = text.strip().strip("'")
        if value in ("MINVALUE", "MAXVALUE"):
            out.append(None)
            continue
        try:
            out.append(int(value))
        except ValueError:
            return None
    return out[0], out[1]
