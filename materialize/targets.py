"""Where materialize writes: PostgreSQL (``--pg``) or the embedded DuckDB file (the default).

Both targets take the same Arrow tables and the same handful of parameterised statements, so the
loader has one code path and the two dialects differ only here:

* **PostgreSQL**: ``COPY ... FROM STDIN (FORMAT BINARY)``. Row-by-row INSERTs fall minutes behind
  in bursts (design, lessons), and even psycopg's ``write_row`` spends most of its time turning
  Arrow values into Python objects and back. So tables whose columns are all plain scalars
  (integers, booleans, text, timestamps — the order-book deltas, i.e. nearly all rows) are encoded
  straight from the Arrow buffers into the PGCOPY wire format with numpy (:func:`encode_pgcopy`);
  the rest (arrays, NUMERIC, JSONB — few rows) go through ``write_row`` with ``set_types``.
* **DuckDB**: the Arrow table is registered as a view and copied with ``INSERT ... SELECT``.

Transactions are explicit (``with target.transaction():``) because exactly-once rests on them: a
segment's rows and its manifest row commit together or not at all.

Identifiers in SQL come only from ``schemas.tables``; values are always parameters.
"""

from __future__ import annotations

import array
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import duckdb
import orjson
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter
from psycopg.types.json import Jsonb

from schemas.tables import (
    DAY_NS,
    LOADED_SEGMENTS,
    PARTITION_KEYS,
    Dialect,
    day_bounds_ns,
    day_of_ns,
    day_partition_name,
    ddl,
    parse_range_bound,
    partitioned_ddl,
)

CopyMode = Literal["arrow", "rows"]


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """A segment's row of ``rl_loaded_segments``: claimed in the transaction that loads it."""

    sha256: str
    relpath: str
    session_id: int | None
    rows: int
    schema_version: str
    size: int | None = None
    mtime_ns: int | None = None

    def params(self) -> tuple[Any, ...]:
        """The insert's values, ``loaded_at`` now."""
        return (
            self.sha256,
            self.relpath,
            self.session_id,
            self.rows,
            self.schema_version,
            datetime.now(UTC),
            self.size,
            self.mtime_ns,
        )


class TargetUnavailable(Exception):
    """The database cannot be reached or opened; the message is safe to print (no password)."""


class SegmentRejected(Exception):
    """The database refused a segment's rows (constraint, bad value): skip that segment only."""


class AlreadyLoaded(Exception):
    """Another loader committed this segment's manifest row first (concurrent run)."""


# ------------------------------------------------------------------------------------------------
# Secrets: a DSN's password never reaches a log line, an error message or the summary.
# ------------------------------------------------------------------------------------------------

_URI_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?=@)")
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|[^\s&]*)", re.I)


def _dsn_password(dsn: str) -> str | None:
    try:
        pw = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
        return str(pw) if pw else None
    except psycopg.ProgrammingError:
        return None


def redact(text: str, dsn: str | None = None) -> str:
    """``text`` with any DSN password replaced by ``***`` (URI, key=value and query forms).

    When the DSN is known its password is also removed verbatim wherever it appears, because a
    driver error may quote the connection string in a shape the patterns do not cover.
    """
    out = _URI_PASSWORD.sub(r"\g<head>***", text)
    out = _KV_PASSWORD.sub(r"\g<head>***", out)
    if dsn:
        pw = _dsn_password(dsn)
        if pw and len(pw) >= 3:
            out = out.replace(pw, "***")
    return out


# ------------------------------------------------------------------------------------------------
# Arrow -> PGCOPY binary, vectorised.
# ------------------------------------------------------------------------------------------------

PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
PGCOPY_TRAILER = (-1).to_bytes(2, "big", signed=True)

_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in Unix microseconds

# PostgreSQL type OIDs the vectorised encoder writes: (Arrow storage type, ``array`` typecode).
_OID_INT2, _OID_INT4, _OID_INT8, _OID_BOOL, _OID_TEXT, _OID_TSTZ = 21, 23, 20, 16, 25, 1184
_OID_VARCHAR, _OID_JSONB = 1043, 3802
_FIXED: dict[int, tuple[pa.DataType, str]] = {
    _OID_INT2: (pa.int16(), "h"),
    _OID_INT4: (pa.int32(), "i"),
    _OID_INT8: (pa.int64(), "q"),
    _OID_BOOL: (pa.uint8(), "B"),
    _OID_TSTZ: (pa.int64(), "q"),
}
_TEXTUAL = {_OID_TEXT, _OID_VARCHAR}
ENCODABLE_OIDS = frozenset(_FIXED) | _TEXTUAL
_NULL_LEN = pa.scalar((-1).to_bytes(4, "big", signed=True), pa.binary())


def _big_endian(values: pa.Array, typecode: str) -> pa.Array:
    """Fixed-width values as a ``binary`` array of their big-endian bytes (no Python per value).

    The stdlib ``array`` byte-swaps a whole buffer in C; Arrow then views the swapped buffer as
    ``fixed_size_binary`` and casts it to ``binary`` for the row-wise join below.
    """
    width = values.type.byte_width
    n = len(values)
    buf = values.buffers()[1]
    raw = buf.slice(values.offset * width, n * width).to_pybytes()
    if width > 1:
        swapped = array.array(typecode)
        if swapped.itemsize != width:  # pragma: no cover - exotic platforms
            raise TypeError(f"array typecode {typecode!r} is not {width} bytes here")
        swapped.frombytes(raw)
        if sys.byteorder == "little":
            swapped.byteswap()
        raw = swapped.tobytes()
    fixed = pa.Array.from_buffers(pa.binary(width), n, [None, pa.py_buffer(raw)])
    return fixed.cast(pa.binary())


def encode_pgcopy(table: pa.Table, oids: Sequence[int]) -> bytes:
    """PGCOPY tuples (no header/trailer) for ``table`` whose columns map to ``oids``.

    A tuple is ``int16 field count`` then per field ``int32 length`` (``-1`` = NULL) and the value
    bytes (big-endian scalars, raw UTF-8 text). Each column becomes two Arrow ``binary`` arrays
    (length prefixes and values), ``binary_join_element_wise`` concatenates them row by row in C++,
    and the joined array's data buffer *is* the COPY stream: no Python object per value.
    """
    n = table.num_rows
    if n == 0:
        return b""
    parts: list[pa.Array | pa.Scalar] = [
        pa.scalar(table.num_columns.to_bytes(2, "big"), pa.binary())
    ]
    for i, oid in enumerate(oids):
        col = table.column(i).combine_chunks()
        valid = col.is_valid()
        if oid in _FIXED:
            arrow_type, typecode = _FIXED[oid]
            if oid == _OID_TSTZ:
                if not pa.types.is_timestamp(col.type):
                    raise TypeError(f"column {table.column_names[i]}: timestamptz needs timestamp")
                micros = col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
                col = pc.subtract(micros, _PG_EPOCH_US)
            values = col.cast(arrow_type).fill_null(0)
            width = arrow_type.byte_width
            if isinstance(values, pa.ChunkedArray):
                values = values.combine_chunks()
            length = pa.scalar(width.to_bytes(4, "big", signed=True), pa.binary())
            data = _big_endian(values, typecode)
        elif oid in _TEXTUAL:
            data = col.cast(pa.binary())
            lengths = pc.binary_length(data).fill_null(0).cast(pa.int32())
            length = _big_endian(lengths, "i")
        else:
            raise TypeError(f"column {table.column_names[i]}: oid {oid} is not encodable")
        if col.null_count:
            parts.append(pc.if_else(valid, length, _NULL_LEN))
            parts.append(pc.if_else(valid, data, pa.scalar(b"", pa.binary())))
        else:
            parts.append(length)
            parts.append(data)
    joined = pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.binary()))
    offsets = joined.buffers()[1]  # int32: callers encode in batches far below 2 GiB
    first = int.from_bytes(offsets.slice(joined.offset * 4, 4).to_pybytes(), sys.byteorder)
    last = int.from_bytes(offsets.slice((joined.offset + n) * 4, 4).to_pybytes(), sys.byteorder)
    return joined.buffers()[2].slice(first, last - first).to_pybytes()


# ------------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------------


class Target(Protocol):
    """What the loader needs from a database."""

    dialect: Dialect
    description: str
    """Where the data goes, safe to print (no password)."""

    def ensure_schema(self) -> None: ...
    def loaded_hashes(self) -> set[str]: ...
    def transaction(self) -> Any: ...
    def insert_arrow(self, table_name: str, data: pa.Table) -> None: ...
    def execute(self, sql: str, params: Sequence[Any]) -> int: ...
    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...
    def claim_segment(self, seg: ManifestRow) -> None: ...
    def count(self, table_name: str) -> int: ...
    def close(self) -> None: ...


_CREATES = re.compile(r"\s*CREATE (?:UNIQUE )?(?:TABLE|INDEX) IF NOT EXISTS (\w+)")
_ADDS_COLUMN = re.compile(r"\s*ALTER TABLE (\w+) ADD COLUMN IF NOT EXISTS (\w+)")
_DROPS_INDEX = re.compile(r"\s*DROP INDEX IF EXISTS (\w+)")


def missing_ddl(
    statements: Sequence[str], relations: set[str], columns: set[tuple[str, str]]
) -> list[str]:
    """The DDL statements whose object the database lacks (or, for a drop, still has), given its
    ``relations`` (tables, partitions, indexes) and ``(table, column)`` pairs; anything else is
    kept.

    Why not run every ``IF NOT EXISTS`` statement each night: PostgreSQL takes a statement's lock
    before it finds the object there. ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` takes an
    ACCESS EXCLUSIVE lock, so it waits for every analyst's open query on that table, and every
    query after it waits behind it; ``CREATE INDEX IF NOT EXISTS`` waits for every writer. On a
    complete schema this returns nothing, and the nightly job takes no table lock for its DDL."""
    out = []
    for stmt in statements:
        if (m := _CREATES.match(stmt)) is not None:
            needed = m.group(1) not in relations
        elif (m := _ADDS_COLUMN.match(stmt)) is not None:
            needed = (m.group(1), m.group(2)) not in columns
        elif (m := _DROPS_INDEX.match(stmt)) is not None:
            needed = m.group(1) in relations
        else:
            needed = True
        if needed:
            out.append(stmt)
    return out


_MANIFEST_INSERT = (
    f"INSERT INTO {LOADED_SEGMENTS} "
    "(content_sha256, path, session_id, rows, schema_version, loaded_at, size, mtime_ns) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)


class _OverConnection:
    """What both targets do alike over their DB-API connection ``con``."""

    con: Any

    def count(self, table_name: str) -> int:
        row = self.con.execute(f"SELECT count(*) FROM {table_name}").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.con.close()


class PostgresTarget(_OverConnection):
    """PostgreSQL through psycopg; COPY BINARY for bulk rows, one transaction per segment."""

    dialect: Dialect = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        copy_mode: CopyMode = "arrow",
        batch_rows: int = 65_536,
        partition_by_day: bool = False,
    ):
        self.dsn = dsn
        self.copy_mode = copy_mode
        self.batch_rows = batch_rows
        self.partition_by_day = partition_by_day
        self._partitioned: dict[str, str] = {}  # table -> key, learnt from the catalog
        self._ranges: dict[str, list[tuple[int | None, int | None]]] = {}  # committed partitions
        self._new_ranges: list[tuple[str, int, int]] = []  # created in the open transaction
        self._in_transaction = False
        self.description = "PostgreSQL " + redact(dsn, dsn) if dsn else "PostgreSQL (libpq env)"
        self._oids: dict[str, tuple[list[str], list[int]]] = {}
        kwargs: dict[str, Any] = {}
        try:
            if "connect_timeout" not in psycopg.conninfo.conninfo_to_dict(dsn):
                kwargs["connect_timeout"] = 10
        except psycopg.ProgrammingError as exc:
            raise TargetUnavailable(f"invalid PostgreSQL DSN: {redact(str(exc), dsn)}") from None
        try:
            # autocommit: every transaction is an explicit ``con.transaction()`` block.
            self.con = psycopg.connect(dsn, autocommit=True, **kwargs)
        except psycopg.Error as exc:
            msg = " ".join(str(exc).split())
            raise TargetUnavailable(
                f"cannot connect to {self.description}: {redact(msg, dsn)}"
            ) from None

    def ensure_schema(self) -> None:
        """Create what the schema lacks, and only that (see :func:`missing_ddl`)."""
        with self.con.transaction():
            # Two nightly jobs starting together must not race on CREATE TABLE IF NOT EXISTS.
            self.con.execute("SELECT pg_advisory_xact_lock(%s)", (0x6B616C7368690001,))
            relations = {
                r[0]
                for r in self.con.execute(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = current_schema()"
                )
            }
            columns = {
                (r[0], r[1])
                for r in self.con.execute(
                    "SELECT table_name, column_name FROM information_schema.columns"
                    " WHERE table_schema = current_schema()"
                )
            }
            stmts = partitioned_ddl() if self.partition_by_day else ddl("postgres")
            for stmt in missing_ddl(stmts, relations, columns):
                self.con.execute(stmt)
            self._learn_partitions()

    def loaded_hashes(self) -> set[str]:
        with self.con.transaction():
            rows = self.con.execute(f"SELECT content_sha256 FROM {LOADED_SEGMENTS}").fetchall()
        return {r[0] for r in rows}

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._in_transaction = True
        try:
            with self.con.transaction():
                if self._partitioned:
                    # Loaders of a partitioned database take turns per segment: two creating
                    # the same day would race inside IF NOT EXISTS, and one creating a day
                    # (lock on the parent) while the other holds rows of that parent deadlock.
                    self.con.execute("SELECT pg_advisory_xact_lock(%s)", (0x6B616C7368690002,))
                yield
            self._commit_ranges()  # partitions created in it exist only if it committed
        except (psycopg.IntegrityError, psycopg.DataError) as exc:
            raise SegmentRejected(_pg_reason(exc)) from exc
        finally:
            self._in_transaction = False
            self._new_ranges.clear()

    def _columns(self, table_name: str) -> tuple[list[str], list[int]]:
        if table_name not in self._oids:
            rows = self.con.execute(
                "SELECT attname, atttypid::int FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
                "ORDER BY attnum",
                (table_name,),
            ).fetchall()
            self._oids[table_name] = ([r[0] for r in rows], [r[1] for r in rows])
        return self._oids[table_name]

    def insert_arrow(self, table_name: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        if table_name in self._partitioned:
            self._ensure_day_partitions(table_name, data)
        names, oids = self._columns(table_name)
        oid_of = dict(zip(names, oids, strict=True))
        cols = data.column_names
        col_oids = [oid_of[c] for c in cols]
        col_list = ", ".join(cols)  # names come from the loader's fixed table layouts
        stmt = f"COPY {table_name} ({col_list}) FROM STDIN (FORMAT BINARY)"
        vectorised = self.copy_mode == "arrow" and all(o in ENCODABLE_OIDS for o in col_oids)
        with self.con.cursor() as cur, cur.copy(stmt, writer=QueuedLibpqWriter(cur)) as copy:
            # The queued writer sends on its own thread, so encoding the next batch overlaps
            # with the network and the server.
            if vectorised:
                copy.write(PGCOPY_HEADER)
                for start in range(0, data.num_rows, self.batch_rows):
                    chunk = data.slice(start, self.batch_rows)
                    copy.write(encode_pgcopy(chunk, col_oids))
                copy.write(PGCOPY_TRAILER)
            else:
                copy.set_types(col_oids)
                jsonb = [i for i, o in enumerate(col_oids) if o == _OID_JSONB]
                for batch in data.to_batches(self.batch_rows):
                    columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
                    for i in jsonb:
                        columns[i] = [
                            None if v is None else Jsonb(orjson.loads(v)) for v in columns[i]
                        ]
                    for row in zip(*columns, strict=True):
                        copy.write_row(row)

    def execute(self, sql: str, params: Sequence[Any]) -> int:
        cur = self.con.execute(sql, params)  # SQL identifiers from schemas.tables
        return max(cur.rowcount, 0)

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.con.execute(sql, params).fetchall()]

    def claim_segment(self, seg: ManifestRow) -> None:
        # The manifest row goes in first: a concurrent loader of the same segment then waits on
        # the primary key and, once we commit, fails here instead of loading the rows twice.
        try:
            with self.con.transaction():
                self.con.execute(_MANIFEST_INSERT, seg.params())
        except psycopg.errors.UniqueViolation as exc:
            raise AlreadyLoaded(seg.sha256) from exc

    # --- partitioned by receive day (``--pg-partition-by-day``) ---------------------------------
    #
    # Whether the big tables are partitioned is decided once, when they are created; every later
    # run reads it from the catalog, so a run without the flag still loads a partitioned database.
    # Before rows are copied, the partitions of every day they fall on are created in the same
    # transaction as the rows: a rolled-back segment leaves no partition behind that this object
    # believes in, and a committed one never lacks its partition. COPY into the parent routes
    # each row; exactly-once is unchanged (the manifest row commits with the rows).

    def day_partitions(self, table_name: str) -> list[tuple[str, int | None, int | None]]:
        """``(partition, start, end)`` of ``table_name``'s RANGE partitions (``None`` = MIN/MAX
        VALUE); a DEFAULT partition or another shape is left out."""
        rows = self.con.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass "
            "ORDER BY c.relname",
            (table_name,),
        ).fetchall()
        out: list[tuple[str, int | None, int | None]] = []
        for name, expr in rows:
            bound = parse_range_bound(expr or "")
            if bound is not None:
                out.append((name, bound[0], bound[1]))
        return out

    def _learn_partitions(self) -> None:
        rows = self.con.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'p' AND relname = ANY(%s) "
            "AND pg_table_is_visible(oid)",
            (list(PARTITION_KEYS),),
        ).fetchall()
        found = {r[0] for r in rows}
        if self.partition_by_day and found != set(PARTITION_KEYS):
            plain = ", ".join(sorted(set(PARTITION_KEYS) - found))
            raise TargetUnavailable(
                f"{plain} already exist(s) unpartitioned in {self.description}: "
                "--pg-partition-by-day applies when the tables are created; convert them first "
                "(docs/scale-out.md) or run without the flag"
            )
        self._partitioned = {t: k for t, k in PARTITION_KEYS.items() if t in found}
        self._ranges = {
            t: [(lo, hi) for _, lo, hi in self.day_partitions(t)] for t in self._partitioned
        }

    def _covered(self, table_name: str, start: int, end: int) -> bool:
        ranges = self._ranges.get(table_name, []) + [
            (lo, hi) for t, lo, hi in self._new_ranges if t == table_name
        ]
        return any((lo is None or lo <= start) and (hi is None or end <= hi) for lo, hi in ranges)

    def _ensure_day_partitions(self, table_name: str, data: pa.Table) -> None:
        """Create the partitions of every UTC day ``data``'s rows fall on (idempotent)."""
        key = self._partitioned[table_name]
        if key not in data.column_names:
            return  # the COPY fails with PostgreSQL's own message
        col = data[key].drop_null()
        # floor division by a day, also for (never expected) times before 1970
        shifted = pc.if_else(pc.less(col, 0), pc.subtract(col, DAY_NS - 1), col)
        for day_index in sorted(pc.unique(pc.divide(shifted, DAY_NS)).to_pylist()):
            day = day_of_ns(int(day_index) * DAY_NS)
            start, end = day_bounds_ns(day)
            if self._covered(table_name, start, end):
                continue
            self.con.execute(create_day_partition_sql(table_name, day))
            self._new_ranges.append((table_name, start, end))
        if not self._in_transaction:
            self._commit_ranges()  # autocommit: the DDL is already committed

    def _commit_ranges(self) -> None:
        for table_name, start, end in self._new_ranges:
            self._ranges.setdefault(table_name, []).append((start, end))
        self._new_ranges.clear()

    def partitioned_tables(self) -> dict[str, str]:
        """``{table: partition key}`` of the tables partitioned by day (after ensure_schema)."""
        return dict(self._partitioned)


def create_day_partition_sql(table: str, day: date) -> sql.Composed:
    """Idempotent DDL creating ``table``'s partition for the UTC ``day`` (identifiers quoted)."""
    start, end = day_bounds_ns(day)
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
    ).format(
        sql.Identifier(day_partition_name(table, day)),
        sql.Identifier(table),
        sql.Literal(start),
        sql.Literal(end),
    )


def _pg_reason(exc: psycopg.Error) -> str:
    diag = exc.diag
    parts = [diag.message_primary or str(exc).splitlines()[0]]
    if diag.message_detail:
        parts.append(diag.message_detail)
    if diag.table_name:
        parts.append(f"table {diag.table_name}")
    return "; ".join(parts)


class DuckDBTarget(_OverConnection):
    """The embedded default: a DuckDB file with the same tables, for machines with no server."""

    dialect: Dialect = "duckdb"

    def __init__(self, path: Path):
        self.path = path
        self.description = f"DuckDB {path}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.con = duckdb.connect(str(path))
        except (duckdb.Error, OSError) as exc:
            raise TargetUnavailable(f"cannot open {self.description}: {exc}") from None
        self._n = 0
        self._stale_views: list[str] = []

    def ensure_schema(self) -> None:
        self.con.execute("BEGIN TRANSACTION")
        try:
            for stmt in ddl("duckdb"):
                self.con.execute(stmt)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def loaded_hashes(self) -> set[str]:
        rows = self.con.execute(f"SELECT content_sha256 FROM {LOADED_SEGMENTS}").fetchall()
        return {r[0] for r in rows}

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException as exc:
            self.con.execute("ROLLBACK")
            while self._stale_views:
                self.con.unregister(self._stale_views.pop())
            if isinstance(exc, duckdb.ConstraintException | duckdb.ConversionException):
                raise SegmentRejected(str(exc).splitlines()[0]) from exc
            raise
        else:
            try:
                self.con.execute("COMMIT")
            except duckdb.ConstraintException as exc:  # checked at commit in some cases
                raise SegmentRejected(str(exc).splitlines()[0]) from exc

    def insert_arrow(self, table_name: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        self._n += 1
        view = f"_materialize_src_{self._n}"
        cols = ", ".join(data.column_names)
        self.con.register(view, data)
        try:
            self.con.execute(f"INSERT INTO {table_name} ({cols}) SELECT {cols} FROM {view}")
        finally:
            try:
                self.con.unregister(view)
            except duckdb.Error:  # aborted transaction: unregister after the rollback
                self._stale_views.append(view)

    def execute(self, sql: str, params: Sequence[Any]) -> int:
        res = self.con.execute(sql.replace("%s", "?"), list(params))
        if sql.lstrip().upper().startswith(("UPDATE", "DELETE", "INSERT")):
            row = res.fetchone()
            return int(row[0]) if row else 0
        return 0

    def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.con.execute(sql.replace("%s", "?"), list(params)).fetchall()]

    def claim_segment(self, seg: ManifestRow) -> None:
        try:
            self.execute(_MANIFEST_INSERT, seg.params())
        except duckdb.ConstraintException as exc:
            raise AlreadyLoaded(seg.sha256) from exc


def open_target(
    pg_dsn: str | None,
    duckdb_path: Path,
    *,
    copy_mode: CopyMode = "arrow",
    partition_by_day: bool = False,
) -> PostgresTarget | DuckDBTarget:
    """PostgreSQL when a DSN is given (``""`` = libpq environment), else the DuckDB file.

    ``partition_by_day``: create the big tables partitioned by receive day (PostgreSQL only; an
    existing database keeps the layout it was created with)."""
    if pg_dsn is not None:
        return PostgresTarget(pg_dsn, copy_mode=copy_mode, partition_by_day=partition_by_day)
    if partition_by_day:
        raise TargetUnavailable(
            "--pg-partition-by-day needs PostgreSQL: give --pg DSN or set DATABASE_URL "
            "(the embedded DuckDB file is not partitioned)"
        )
    return DuckDBTarget(duckdb_path)
