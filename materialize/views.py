"""DuckDB views over a data directory: ask questions without knowing the file layout.

:func:`connect` opens a DuckDB connection (in memory, no server, no load step) with views over the
**sealed** segments ``DATA/segments/date=*/session_id=*/*.parquet`` (hive partitions; ``live/`` is
never read) and the training sets ``DATA/training/build=*/part-0.parquet``:

==================================  ==============================================================
view                                what
==================================  ==============================================================
``session_log``                     the raw log (``LOG_SCHEMA``) plus the ``date`` partition
``rl_orderbook_sessions``           one row per recorder run
``rl_market_lifecycle_events``      every lifecycle frame (documented or not)
``rl_market_participation``         ``joined_at`` / ``left_at`` per market and session
``rl_orderbook_snapshots``          book snapshots, levels as ``BIGINT[]`` (sorted by price)
``rl_orderbook_deltas``             book deltas
``rl_sequence_gaps``                ``gap`` / ``stale_seq`` / ``loss`` decisions
``rl_session_completed_markets``    each session's markets created and determined in it, settled
``training_rows``                   the training sets (builds listed in ``training/manifest.json``)
``training_markets``                every market of the training manifest: included / excluded
                                    (with the reason) / pending
==================================  ==============================================================

Macros: ``usd(micros)`` and ``contracts(centi)`` convert to exact DECIMAL dollars / contracts.

The ``rl_*`` views have the **same names and columns** (and DuckDB types) as the tables that
``materialize`` loads: both come from the one declaration of each table (``schemas.tables``) and
the one log -> table mapping (``schemas.mapping``, SQL the loader runs over each segment), so a
query written against the views runs unchanged against ``DATA/warehouse.duckdb`` or PostgreSQL.
Units are exact: prices BIGINT micro-dollars, sizes BIGINT centi-contracts (``schemas.units``),
``settlement_price`` DECIMAL(18,6) dollars.

Data in progress: the segment views re-read the directory listing on every query, so segments a
running recorder seals after :func:`connect` show up in the next query (an empty data directory
gives empty views with the right columns). ``training_rows`` and ``training_markets`` follow the
training manifest as it was at :func:`connect` (a build is nightly; call :func:`connect` again).

The segment views are plain SQL (no Python functions), so :func:`view_sql` also works in the
DuckDB CLI. Snapshot levels and exact decimals are parsed in that SQL with ``schemas.wire`` /
``schemas.units``' rules (see ``schemas.mapping`` for the one known difference).

Usage::

    from materialize.views import connect

    con = connect("data")
    con.execute("SELECT count(*) FROM rl_orderbook_deltas").fetchone()

    # markets recorded from creation to determination, with their lifetimes
    con.execute('''
        SELECT market_ticker, joined_at, left_at, left_at - joined_at AS recorded_for
        FROM rl_market_participation
        WHERE join_reason = 'created' AND leave_reason = 'determined'
        ORDER BY joined_at
    ''').pl()

    # exact dollars and contracts (DECIMAL, never float): the usd() and contracts() macros
    con.execute('''
        SELECT market_ticker, side, usd(price) AS price_usd, contracts(delta) AS size
        FROM rl_orderbook_deltas LIMIT 5
    ''').fetchall()

    # the training set, middle-of-life rows only
    con.execute("SELECT * FROM training_rows WHERE phase = 'middle'").pl()

From the command line: ``python -m materialize.views DATA_DIR "SQL"`` prints the result.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from materialize.cli import EXIT_USAGE, refuse_data_dir
from schemas.catalog import TRAINING_DIR, training_files, training_manifest
from schemas.log import LOG_SCHEMA, SEGMENT_GLOB
from schemas.mapping import LOG_SQL, RECORD_SQL, SESSION_LOG

TRAINING_ROWS = "training_rows"
TRAINING_MARKETS = "training_markets"

_TABLE_SQL: dict[str, str] = {
    **LOG_SQL,
    **{table: sql for table, sql in RECORD_SQL.items() if table not in LOG_SQL},
}
"""Each mapped table's view (every table but the manifest), in creation order: the whole-log
statements first (participation reads the sessions view), then the per-record ones."""

VIEWS: tuple[str, ...] = (SESSION_LOG, *_TABLE_SQL, TRAINING_ROWS, TRAINING_MARKETS)
"""Every view :func:`connect` creates: the log, every table but the manifest, training sets."""

MACROS: tuple[str, ...] = (
    # BIGINT * DECIMAL is exact in DuckDB; "/" would give a DOUBLE.
    "CREATE OR REPLACE TEMP MACRO usd(micros) AS "
    "CAST(CAST(micros AS DECIMAL(38, 0)) * CAST(0.000001 AS DECIMAL(7, 6)) AS DECIMAL(38, 6))",
    "CREATE OR REPLACE TEMP MACRO contracts(centi) AS "
    "CAST(CAST(centi AS DECIMAL(38, 0)) * CAST(0.01 AS DECIMAL(3, 2)) AS DECIMAL(38, 2))",
)
"""Exact unit conversions for queries: ``usd(price)`` micro-dollars -> DECIMAL dollars,
``contracts(size)`` centi-contracts -> DECIMAL contracts (``schemas.units``)."""

TRAINING_MARKETS_SCHEMA = pa.schema(
    [
        ("session_id", pa.int64()),
        ("market_ticker", pa.string()),
        ("status", pa.string()),  # included | excluded | pending
        ("reason", pa.string()),  # exclusion reason (materialize.training.Exclusion), else null
        ("detail", pa.string()),
        ("final", pa.bool_()),
        ("build_id", pa.int64()),
        ("rows", pa.int64()),
        ("updates", pa.int64()),
        ("snapshots", pa.int64()),
        ("join_reason", pa.string()),
        ("mid_lifecycle", pa.bool_()),
        ("open_ns", pa.int64()),
        ("end_ns", pa.int64()),
    ]
)


# ------------------------------------------------------------------------------------------------
# SQL building blocks
# ------------------------------------------------------------------------------------------------


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _segments_glob(data_dir: Path) -> str:
    return (data_dir / SEGMENT_GLOB).as_posix()


DATE_FROM_PATH = r".*/date=([0-9]{4}-[0-9]{2}-[0-9]{2})/"
"""The ``date=`` directory of a segment path (the last one, whatever the data directory is
called). The README's Spark snippet uses the same pattern on ``_metadata.file_path``."""

_EMPTY_LOG: list[Path] = []


def _empty_log_file() -> Path:
    """A zero-row Parquet file with ``LOG_SCHEMA``, in a private directory of this process.

    Read together with the segments it gives the view its columns when no segment exists yet,
    without a ``UNION`` (a union hides the scan from DuckDB's file pruning on ``date``)."""
    if not _EMPTY_LOG:
        import atexit
        import shutil
        import tempfile

        import pyarrow.parquet as pq

        private = Path(tempfile.mkdtemp(prefix="kalshi-views-"))  # mode 0700
        atexit.register(shutil.rmtree, private, ignore_errors=True)
        path = private / "empty-log.parquet"
        pq.write_table(LOG_SCHEMA.empty_table(), path)
        _EMPTY_LOG.append(path)
    return _EMPTY_LOG[0]


def _session_log_sql(data_dir: Path) -> str:
    # session_id: the column inside the files wins over the session_id= directory, in every
    # engine (the loader, the segment index, bucket views and the README's Spark snippet read the
    # column too): it is written with every record and travels with the file wherever it is
    # copied. So hive partitioning is off and ``date`` comes from the path; DuckDB still prunes
    # files on it (a filter on ``filename`` alone is evaluated per file before opening it), and
    # on session_id by row-group statistics. The glob is expanded again on every query.
    names = ", ".join(f.name for f in LOG_SCHEMA)
    files = f"[{_lit(_segments_glob(data_dir))}, {_lit(_empty_log_file().as_posix())}]"
    date = f"CAST(nullif(regexp_extract(filename, {_lit(DATE_FROM_PATH)}, 1), '') AS DATE)"
    return f"""
SELECT {names}, {date} AS date
FROM read_parquet({files}, hive_partitioning = false, filename = true, union_by_name = true,
                  allow_empty = true)"""


# ------------------------------------------------------------------------------------------------
# Training sets
# ------------------------------------------------------------------------------------------------


def _training_files(data_dir: Path, manifest: dict[str, Any] | None) -> list[str]:
    return [p.as_posix() for p in training_files(data_dir / TRAINING_DIR, manifest)]


def _training_rows_sql(files: list[str]) -> str:
    paths = "[" + ", ".join(_lit(f) for f in files) + "]"
    return (
        f"SELECT * FROM read_parquet({paths}, hive_partitioning = true, "
        "hive_types = {'build': BIGINT}, union_by_name = true)"
    )


def _empty_training_rows() -> pa.Table:
    """No build yet: the training-row columns (``materialize.training.row_schema``, default
    top-N) and the ``build`` partition, no rows."""
    from materialize.training import row_schema

    schema = row_schema().append(pa.field("build", pa.int64()))
    return schema.empty_table()


_OF_TYPE: dict[pa.DataType, Callable[[Any], bool]] = {
    pa.int64(): lambda v: isinstance(v, int) and not isinstance(v, bool),
    pa.string(): lambda v: isinstance(v, str),
    pa.bool_(): lambda v: isinstance(v, bool),
}
"""Whether a manifest value has a ``TRAINING_MARKETS_SCHEMA`` column's type (``true`` is not an
int, though Python's ``bool`` is one)."""


def training_markets_table(manifest: dict[str, Any] | None) -> pa.Table:
    """One row per market of the manifest (``TRAINING_MARKETS_SCHEMA``): each column takes the
    entry's value of that name when it has the column's type, else null (a manifest edited by
    hand or written by an older build must not break the view)."""
    rows: list[dict[str, Any]] = []
    for status in ("included", "excluded", "pending"):
        entries = (manifest or {}).get(status) or {}
        if not isinstance(entries, dict):
            continue
        for key, e in entries.items():
            e = e if isinstance(e, dict) else {}
            row = {
                f.name: v if _OF_TYPE[f.type](v := e.get(f.name)) else None
                for f in TRAINING_MARKETS_SCHEMA
            }
            session, _, ticker = str(key).partition("/")  # the entry's key: "session/ticker"
            if row["session_id"] is None and session.lstrip("-").isdigit():
                row["session_id"] = int(session)
            row["market_ticker"] = row["market_ticker"] or ticker
            row["status"] = status
            rows.append(row)
    return pa.Table.from_pylist(rows, schema=TRAINING_MARKETS_SCHEMA)


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------


def view_sql(data_dir: Path | str) -> dict[str, str]:
    """The ``SELECT`` behind each segment view, in creation order (plain SQL: it also runs in a
    DuckDB CLI session; the rows follow ``schemas.mapping``, as the loader's do)."""
    return {SESSION_LOG: _session_log_sql(Path(data_dir).resolve()), **_TABLE_SQL}


def _temp_table(con: duckdb.DuckDBPyConnection, name: str, data: pa.Table) -> None:
    """``data`` copied into the temp table ``name`` (replaced if it exists)."""
    con.register("__kalshi_arrow", data)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM __kalshi_arrow")
    finally:
        con.unregister("__kalshi_arrow")


def connect(
    data_dir: Path | str, *, con: duckdb.DuckDBPyConnection | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the views of this module over ``data_dir`` (see the module doc).

    ``con``: add the views to this connection instead of a new in-memory one (existing views of
    the same names are replaced; call again to pick up a newer training build).
    """
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"data directory {data_dir} does not exist; pass the recorder's --data-dir "
            "(or make demo data: python -m materialize.demo --data-dir DIR)"
        )
    con = con if con is not None else duckdb.connect()
    for name, sql in view_sql(data_dir).items():
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")
    manifest = training_manifest(data_dir)
    files = _training_files(data_dir, manifest)
    if files:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {TRAINING_ROWS} AS {_training_rows_sql(files)}")
    else:
        _temp_table(con, "__kalshi_training_rows_empty", _empty_training_rows())
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {TRAINING_ROWS} AS "
            "SELECT * FROM __kalshi_training_rows_empty"
        )
    _temp_table(con, TRAINING_MARKETS, training_markets_table(manifest))
    for stmt in MACROS:
        con.execute(stmt)
    return con


def connect_url(
    url: str,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    filesystem: Any = None,
) -> duckdb.DuckDBPyConnection:
    """The same segment views over sealed segments in a bucket (``s3://bucket/prefix``, see
    ``materialize.objectstore``): Arrow does the I/O (DuckDB's httpfs is not needed), DuckDB scans
    the Arrow dataset lazily. Training views are local-only (``connect``). ``date`` is the UTC day
    of each record here (the hive partition is not read from object keys).
    """
    from materialize.objectstore import dataset

    con = con if con is not None else duckdb.connect()
    con.register("__kalshi_remote_log", dataset(url, filesystem=filesystem))
    names = ", ".join(f.name for f in LOG_SCHEMA)
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {SESSION_LOG} AS SELECT {names}, "
        "CAST(make_timestamp(recv_ns // 1000) AS DATE) AS date FROM __kalshi_remote_log"
    )
    for name, sql in view_sql(Path(".")).items():
        if name != SESSION_LOG:
            con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}")
    for stmt in MACROS:
        con.execute(stmt)
    return con


def main(argv: list[str] | None = None) -> int:
    """``python -m materialize.views DATA_DIR [SQL]``: run one query, or list the views."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print('usage: python -m materialize.views DATA_DIR ["SQL"]', file=sys.stderr)
        return EXIT_USAGE if not args else 0
    # a typo must not look like a directory with no data
    if (refused := refuse_data_dir("materialize.views", Path(args[0]))) is not None:
        return refused
    con = connect(args[0])
    if len(args) < 2:
        for name in VIEWS:
            n = con.execute(f"SELECT count(*) FROM {name}").fetchone()
            print(f"{name:32} {n[0] if n else 0:>12} rows")
        return 0
    con.sql(args[1]).show(max_width=200)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
