"""SQL tables that materialize fills, for PostgreSQL and for the embedded DuckDB default.

Each table is declared once (:data:`TABLES`: columns with their Arrow types and nullability, the
primary key; the columns added after the first DDL are marked ``added``). From that one
declaration come the DDL of both dialects (``ddl("postgres")``, ``ddl("duckdb")``, idempotent
``CREATE ... IF NOT EXISTS`` + ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``), the day-partitioned
PostgreSQL layout (:func:`partitioned_ddl`), the Arrow layout of the rows the loader COPYs
(:func:`arrow_schema`) and the views' column list and types (``schemas.mapping``). Indexes are
listed in :func:`_indexes` (the dialects differ there: DuckDB has no partial indexes).

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
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

Dialect = Literal["postgres", "duckdb"]

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

TS = pa.timestamp("us", tz="UTC")
"""TIMESTAMPTZ (microseconds, UTC) in Arrow."""
JSON = pa.string()
"""A JSON document: Arrow text, ``JSONB`` in PostgreSQL, ``JSON`` in DuckDB (``Column.json``)."""


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its name, its Arrow type (which decides both SQL dialects' type) and nullability.

    ``json``: the text holds a JSON document, stored as JSONB / JSON rather than TEXT.
    ``added``: the column came after the first DDL, so existing warehouses get it by
    ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` (it must then be nullable)."""

    name: str
    type: pa.DataType
    nullable: bool = True
    json: bool = False
    added: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    """One table, declared once: the DDL of both dialects, the loader's Arrow layout and the
    views' column list are all derived from this."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def arrow(self) -> pa.Schema:
        """The Arrow layout of the rows materialize writes into this table."""
        return pa.schema([pa.field(c.name, c.type, c.nullable) for c in self.columns])


def _c(name: str, type_: pa.DataType, *, null: bool = True, json: bool = False) -> Column:
    return Column(name, type_, null, json)


def _new(name: str, type_: pa.DataType) -> Column:
    return Column(name, type_, True, False, True)


_I64, _I32, _I16, _STR, _BOOL = pa.int64(), pa.int32(), pa.int16(), pa.string(), pa.bool_()
_NUMERIC = pa.decimal128(18, 6)
_RECORD = (  # where a row of the big tables came from in the log
    _c("session_id", _I64, null=False),
    _c("record_seq", _I64, null=False),
    _c("recv_ns", _I64, null=False),
    _c("conn", _I16),
    _c("epoch", _I32),
    _c("sid", _I64),
    _c("seq", _I64),
    _c("market_ticker", _STR, null=False),
)
_BY_RECORD = ("session_id", "record_seq")

TABLES: tuple[Table, ...] = (
    Table(
        SESSIONS,
        (
            _c("session_id", _I64, null=False),
            _c("started_at", TS, null=False),
            _c("ended_at", TS),
            _c("end_reason", _STR),
            _c("lifecycle_mode", _BOOL, null=False),
            _c("environment", _STR),
            _c("host", _STR),
            _c("shard", _STR),
            _c("version", _STR),
            _c("config", JSON, json=True),
            _c("recovered_from", pa.list_(_STR)),
            _new("exchange_env", _STR),
            _new("restarted", _BOOL),
            _new("previous_session_id", _I64),
            _new("previous_session_ended", _STR),
            _new("previous_end_reason", _STR),
            _new("restart_source", _STR),
            _new("last_record_at", TS),
        ),
        ("session_id",),
    ),
    Table(
        LIFECYCLE_EVENTS,
        (
            _c("session_id", _I64, null=False),
            _c("record_seq", _I64, null=False),
            _c("market_ticker", _STR, null=False),
            _c("event_type", _STR, null=False),
            _c("event_type_documented", _BOOL, null=False),
            _c("event_timestamp_ms", _I64),
            _c("open_ts", _I64),
            _c("close_ts", _I64),
            _c("determination_ts", _I64),
            _c("settled_ts", _I64),
            _c("result", _STR),
            _c("settlement_price", _NUMERIC),
            _c("raw", _STR, null=False),
            _c("created_at", TS, null=False),
        ),
        _BY_RECORD,
    ),
    Table(
        PARTICIPATION,
        (
            _c("session_id", _I64, null=False),
            _c("market_ticker", _STR, null=False),
            _c("joined_at", TS, null=False),
            _c("left_at", TS),
            _c("join_reason", _STR, null=False),
            _c("leave_reason", _STR),
            _c("mid_lifecycle", _BOOL, null=False),
            _c("late_by_ms", _I64),
        ),
        ("session_id", "market_ticker", "joined_at"),
    ),
    Table(
        SNAPSHOTS,
        (
            *_RECORD,
            _c("yes_prices", pa.list_(_I64), null=False),
            _c("yes_sizes", pa.list_(_I64), null=False),
            _c("no_prices", pa.list_(_I64), null=False),
            _c("no_sizes", pa.list_(_I64), null=False),
        ),
        _BY_RECORD,
    ),
    Table(
        DELTAS,
        (
            *_RECORD,
            _c("side", _STR, null=False),
            _c("price", _I64, null=False),
            _c("delta", _I64, null=False),
            _c("ts_ms", _I64),
        ),
        _BY_RECORD,
    ),
    Table(
        GAPS,
        (
            _c("session_id", _I64, null=False),
            _c("record_seq", _I64, null=False),
            _c("detected_ns", _I64, null=False),
            _c("conn", _I16),
            _c("epoch", _I32),
            _c("sid", _I64),
            _c("expected_seq", _I64),
            _c("got_seq", _I64),
            _c("market_tickers", pa.list_(_STR)),
            _c("kind", _STR, null=False),
        ),
        _BY_RECORD,
    ),
    Table(
        LOADED_SEGMENTS,
        (
            _c("content_sha256", _STR, null=False),
            _c("path", _STR, null=False),
            _c("session_id", _I64),
            _c("rows", _I64, null=False),
            _c("schema_version", _STR, null=False),
            _c("loaded_at", TS, null=False),
            _new("size", _I64),
            _new("mtime_ns", _I64),
        ),
        ("content_sha256",),
    ),
    Table(
        COMPLETED_MARKETS,
        (
            _c("session_id", _I64, null=False),
            _c("market_ticker", _STR, null=False),
            _c("created_at", TS, null=False),
            _c("determined_at", TS, null=False),
            _c("settled_at", TS, null=False),
            _c("determination_ts", _I64),
            _c("settled_ts", _I64),
            _c("result", _STR),
            _c("settlement_price", _NUMERIC),
            _c("settled_session_id", _I64, null=False),
        ),
        ("session_id", "market_ticker"),
    ),
)
"""Every table materialize fills, in dependency order (``ALL_TABLES`` are their names)."""

TABLE: dict[str, Table] = {t.name: t for t in TABLES}
"""A table's declaration by its name."""
assert tuple(TABLE) == ALL_TABLES


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow layout of ``table``'s rows (what the loader builds and the targets COPY)."""
    return TABLE[table].arrow


def columns(table: str) -> tuple[str, ...]:
    """``table``'s column names in order (the views select exactly these)."""
    return TABLE[table].names


# SQL type of each Arrow type, per dialect; JSON columns and text arrays are the only differences.
SQL_TYPES: dict[str, dict[pa.DataType, str]] = {
    "postgres": {
        _I64: "BIGINT",
        _I32: "INTEGER",
        _I16: "SMALLINT",
        _STR: "TEXT",
        _BOOL: "BOOLEAN",
        TS: "TIMESTAMPTZ",
        _NUMERIC: "NUMERIC(18, 6)",
        pa.list_(_I64): "BIGINT[]",
        pa.list_(_STR): "TEXT[]",
    },
}
SQL_TYPES["duckdb"] = {**SQL_TYPES["postgres"], pa.list_(_STR): "VARCHAR[]"}
JSON_TYPES = {"postgres": "JSONB", "duckdb": "JSON"}


def sql_type(column: Column, dialect: Dialect) -> str:
    """The column's SQL type in ``dialect`` (from its Arrow type)."""
    if column.json:
        return JSON_TYPES[dialect]
    return SQL_TYPES[dialect][column.type]


def _create(t: Table, d: Dialect, partition_key: str | None) -> str:
    pk = (*t.primary_key, partition_key) if partition_key else t.primary_key
    inline = pk[0] if len(pk) == 1 else None  # a one-column key is declared on its column
    cols = [
        f"{c.name} {sql_type(c, d)}"
        + (" PRIMARY KEY" if c.name == inline else "" if c.nullable else " NOT NULL")
        for c in t.columns
    ]
    if inline is None:
        cols.append(f"PRIMARY KEY ({', '.join(pk)})")
    body = ",\n    ".join(cols)
    tail = f" PARTITION BY RANGE ({partition_key})" if partition_key else ""
    return f"CREATE TABLE IF NOT EXISTS {t.name} (\n    {body}\n){tail}"


def _tables(d: Dialect, partitioned: bool) -> list[str]:
    return [
        _create(t, d, PARTITION_KEYS[t.name] if partitioned and t.name in PARTITION_KEYS else None)
        for t in TABLES
    ]


MIGRATIONS: tuple[tuple[str, str, str], ...] = tuple(
    (t.name, c.name, SQL_TYPES["postgres"][c.type]) for t in TABLES for c in t.columns if c.added
)
"""``(table, column, type)`` added since the first DDL; applied to warehouses created before
(every ``Column(added=True)``; the types are the same words in both dialects)."""


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
    return _tables(dialect, False) + _migrations() + _indexes(dialect)


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


def partitioned_ddl() -> list[str]:
    """``ddl("postgres")`` with the :data:`PARTITION_KEYS` tables declared ``PARTITION BY RANGE``
    (their primary keys gain the key). Generated from the same declarations (same columns, same
    indexes, which PostgreSQL creates on every partition), so the two layouts cannot drift."""
    return _tables("postgres", True) + _migrations() + _indexes("postgres")


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
