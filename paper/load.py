"""Load sealed paper logs into the warehouse: ``rl_paper_orders``, ``rl_paper_fills``,
``rl_paper_pnl``. A small module materialize can call (``load_paper_logs(con, data_dir,
dialect)``) without knowing the paper log's layout.

Idempotent: every row is keyed by ``(run_id, seq)`` (the paper log's own total order) and
inserted with ``ON CONFLICT DO NOTHING``, in one transaction per sealed file, so re-running loads
nothing twice and a crash mid-load leaves a file either loaded or not. Incremental: each file
loaded is noted in ``rl_paper_loaded_files`` (path and size) in that same transaction, and a
later run reads only files not noted, so a nightly load costs what is new, not all history
(sealed files never change). Only sealed files
(``DATA/paper/segments``) are read, never ``paper/live``. Units as everywhere: BIGINT micro-dollars
and centi-contracts; ``rounding_fee_fine`` in 1e-8 dollars; ``equity_usd`` exact NUMERIC dollars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq

from paper.log import PAPER_LOG_SCHEMA, sealed_files

Dialect = Literal["postgres", "duckdb"]

PAPER_ORDERS = "rl_paper_orders"
PAPER_FILLS = "rl_paper_fills"
PAPER_PNL = "rl_paper_pnl"
PAPER_LOADED = "rl_paper_loaded_files"
"""Which sealed paper logs are loaded: ``relpath`` under the data dir, and the file's size."""

_KEY_COLS = ("run_id", "seq", "session_id", "record_seq", "t_ns")
"""Every paper table's first columns: the paper log's total order and the session record."""
_ORDER_COLS = (
    *_KEY_COLS,
    "kind",
    "market_ticker",
    "order_id",
    "client_id",
    "action",
    "side",
    "order_price",
    "order_size",
    "tif",
    "size",
    "reason",
)
"""``kind``: order (accepted), reject, cancel (``size`` = the remainder cancelled)."""
_FILL_COLS = (
    *_KEY_COLS,
    "market_ticker",
    "order_id",
    "action",
    "side",
    "yes_buy",
    "yes_price",
    "size",
    "liquidity",
    "trade_fee",
    "rounding_fee_fine",
    "rebate",
    "cash_change",
    "cash_after",
    "position_after",
    "equity_usd",
)
_PNL_COLS = (
    *_KEY_COLS,
    "kind",
    "market_ticker",
    "yes_price",
    "size",
    "cash_after",
    "position_after",
    "equity_usd",
)
"""``kind``: settle (``size`` = the position settled, ``yes_price`` = the YES settlement value)
or mark (``yes_price`` = the mid)."""

_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    PAPER_ORDERS: (_ORDER_COLS, ("order", "reject", "cancel")),
    PAPER_FILLS: (_FILL_COLS, ("fill",)),
    PAPER_PNL: (_PNL_COLS, ("settle", "mark")),
}


def _sql_type(name: str) -> str:
    t = PAPER_LOG_SCHEMA.field(name).type
    if str(t).startswith("decimal"):
        return "NUMERIC(24, 9)"
    return {"int64": "BIGINT", "string": "TEXT", "bool": "BOOLEAN"}[str(t)]


def ddl(dialect: Dialect = "postgres") -> list[str]:
    """``CREATE TABLE IF NOT EXISTS`` for the three tables (same text in both dialects)."""
    out = []
    for table, (cols, _kinds) in _KINDS.items():
        body = ",\n    ".join(
            f"{c} {_sql_type(c)}{' NOT NULL' if c in ('run_id', 'seq', 't_ns') else ''}"
            for c in cols
        )
        out.append(
            f"CREATE TABLE IF NOT EXISTS {table} (\n    {body},\n    PRIMARY KEY (run_id, seq)\n)"
        )
    out.append(
        f"CREATE TABLE IF NOT EXISTS {PAPER_LOADED} "
        "(relpath TEXT PRIMARY KEY, size BIGINT NOT NULL, rows BIGINT NOT NULL)"
    )
    idx = "CREATE INDEX IF NOT EXISTS"
    out.append(f"{idx} idx_{PAPER_FILLS}_market ON {PAPER_FILLS} (market_ticker, t_ns)")
    out.append(f"{idx} idx_{PAPER_ORDERS}_order ON {PAPER_ORDERS} (run_id, order_id)")
    return out


def rows_by_table(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """One sealed paper log's rows, split into the three tables' column tuples (pure)."""
    records = pq.read_table(path, schema=PAPER_LOG_SCHEMA).to_pylist()
    out: dict[str, list[tuple[Any, ...]]] = {t: [] for t in _KINDS}
    for table, (cols, kinds) in _KINDS.items():
        out[table] = [tuple(r[c] for c in cols) for r in records if r["kind"] in kinds]
    return out


def load_paper_logs(con: Any, data_dir: Path, dialect: Dialect = "duckdb") -> dict[str, int]:
    """Apply the DDL and load every sealed paper log under ``data_dir`` through ``con`` (a
    duckdb connection, or a psycopg 3 connection, autocommit or not: each file is loaded in
    ``con.transaction()``). Returns the rows inserted per table."""
    inserted = dict.fromkeys(_KINDS, 0)
    if dialect == "postgres":
        with con.transaction(), con.cursor() as cur:
            for stmt in ddl(dialect):
                cur.execute(stmt)
            todo = _not_loaded(cur, data_dir)
        for rel, path, size in todo:
            with con.transaction(), con.cursor() as cur:
                _load_file(cur, rel, path, size, "%s", inserted)
        return inserted
    cur = con.cursor()
    for stmt in ddl(dialect):
        cur.execute(stmt)
    for rel, path, size in _not_loaded(cur, data_dir):
        cur.execute("BEGIN")
        try:
            _load_file(cur, rel, path, size, "?", inserted)
            cur.execute("COMMIT")
        except Exception:
            cur.execute("ROLLBACK")
            raise
    return inserted


def _not_loaded(cur: Any, data_dir: Path) -> list[tuple[str, Path, int]]:
    """``(relpath, path, size)`` of each sealed paper log not loaded yet (a size that differs
    from the one noted means the file is not the one loaded: it is read again)."""
    cur.execute(f"SELECT relpath, size FROM {PAPER_LOADED}")
    done = {(rel, size) for rel, size in cur.fetchall()}
    out = []
    for path in sealed_files(data_dir):
        rel, size = path.relative_to(Path(data_dir)).as_posix(), path.stat().st_size
        if (rel, size) not in done:
            out.append((rel, path, size))
    return out


def _load_file(
    cur: Any, rel: str, path: Path, size: int, mark: str, inserted: dict[str, int]
) -> None:
    parts = rows_by_table(path)
    _insert(cur, parts, mark, inserted)
    cur.execute(
        f"INSERT INTO {PAPER_LOADED} (relpath, size, rows) VALUES ({mark}, {mark}, {mark}) "
        "ON CONFLICT (relpath) DO UPDATE SET size = excluded.size, rows = excluded.rows",
        (rel, size, sum(len(rows) for rows in parts.values())),
    )


def _insert(
    cur: Any, parts: dict[str, list[tuple[Any, ...]]], mark: str, inserted: dict[str, int]
) -> None:
    for table, (cols, _kinds) in _KINDS.items():
        rows = parts[table]
        if not rows:
            continue
        before = _count(cur, table)
        cur.executemany(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
            f"({', '.join([mark] * len(cols))}) ON CONFLICT DO NOTHING",
            rows,
        )
        inserted[table] += _count(cur, table) - before


def _count(cur: Any, table: str) -> int:
    cur.execute(f"SELECT count(*) FROM {table}")
    return int(cur.fetchone()[0])
